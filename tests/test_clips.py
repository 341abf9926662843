import numpy as np
import pytest

from dfer_cli.clips import ClipConfig, plan_clips, plan_windows, random_segment_indices, segment_indices


def test_segment_indices_follow_the_reference_rule():
    n = 50
    tick = n / 16
    assert segment_indices(n).tolist() == [int(tick / 2 + tick * i) for i in range(16)]
    assert segment_indices(5).tolist() == [0, 1, 2, 3, 4] + [4] * 11
    with pytest.raises(ValueError):
        segment_indices(0)


def test_random_indices_stay_inside_their_segments():
    rng = np.random.default_rng(0)
    for n in (16, 17, 48, 301):
        edges = np.floor(np.linspace(0, n, 17)).astype(int)
        for _ in range(20):
            idx = random_segment_indices(n, 16, rng)
            assert ((idx >= edges[:-1]) & (idx < np.maximum(edges[1:], edges[:-1] + 1))).all()


def test_time_rule_equals_index_rule_for_constant_frame_rate():
    """Frame k shows during [k/fps, (k+1)/fps): the frame on screen at each planned time is the
    reference's middle-of-segment index."""
    fps, n = 25.0, 75
    (plan,) = plan_clips(0.0, n / fps, ClipConfig(clips=1))
    assert np.floor(plan.frame_times * fps + 1e-9).astype(int).tolist() == segment_indices(n).tolist()


def test_two_clips_cover_the_halves_with_their_own_audio():
    plans = plan_clips(1.0, 20.0, ClipConfig(clips=2))
    assert [(p.start, p.end) for p in plans] == [(3.44, 8.56), (13.44, 18.56)]
    for p in plans:
        assert p.audio_end - p.audio_start == pytest.approx(5.12)
        assert p.audio_start == pytest.approx((p.start + p.end) / 2 - 2.56)
        assert p.start <= p.frame_times.min() and p.frame_times.max() <= p.end


def test_short_video_audio_is_the_whole_track():
    plans = plan_clips(0.0, 3.0, ClipConfig(clips=2))
    assert [(p.start, p.end) for p in plans] == [(0.0, 1.5), (1.5, 3.0)]
    assert all((p.audio_start, p.audio_end) == (0.0, 3.0) for p in plans)


def test_audio_window_slides_inside_the_file():
    (first, *_, last) = plan_windows(0.0, 30.0, 2.0, ClipConfig())
    assert (first.audio_start, first.audio_end) == (0.0, 5.12)
    assert last.audio_end == pytest.approx(30.0) and last.audio_start == pytest.approx(30.0 - 5.12)


def test_windows_tile_the_video():
    plans = plan_windows(0.5, 11.0, 5.0, ClipConfig())
    assert [(p.start, p.end) for p in plans] == [(0.5, 5.5), (5.5, 11.5)]
    assert len(plan_windows(0.0, 2.0, 5.0, ClipConfig())) == 1
