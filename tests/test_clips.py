import numpy as np
import pytest

from dfer_cli.clips.plan import (
    DFEW_SPAN_S,
    ClipConfig,
    clip_positions,
    frame_picks,
    plan_clips,
    plan_windows,
    random_segment_indices,
    reference_order,
    segment_indices,
)
from dfer_cli.errors import UsageError
from dfer_cli.labels import REFERENCE_ORDER, TIME_ORDER, parse_frame_order
from dfer_cli.media.fbank import HEARD_S


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


def test_long_video_clips_span_a_dfew_clip_at_the_middle_of_each_half():
    plans = plan_clips(1.0, 20.0, ClipConfig(clips=2), frame_rate=25.0)
    assert [(p.start, p.end) for p in plans] == [(6.0 - 1.4, 6.0 + 1.4), (16.0 - 1.4, 16.0 + 1.4)]
    for p in plans:
        assert p.end - p.start == pytest.approx(DFEW_SPAN_S)
        assert p.audio_end - p.audio_start == pytest.approx(5.12)
        assert p.audio_start == pytest.approx((p.start + p.end) / 2 - 2.56)
        # Sampled as a clip of its 70 frames: the middle of frame floor(70 (i + 1/2) / 16) of each segment.
        frames = (p.frame_times - p.start) * 25 - 0.5
        np.testing.assert_allclose(frames, segment_indices(70), atol=1e-9)


def test_short_video_is_sampled_whole_as_a_data_set_clip():
    """Both clips cover all 75 frames of a 3-s video, at 1/4 and 3/4 of each segment (`dfer evaluate`'s
    2-clip picks), on the frames' own times; the audio is the track from the start, as in training."""
    times = np.arange(75) / 25 + 0.5  # a video whose first frame comes at 0.5 s
    plans = plan_clips(0.5, 3.0, ClipConfig(clips=2), 25.0, times)
    assert [(p.start, p.end) for p in plans] == [(0.5, 3.5), (0.5, 3.5)]
    assert all((p.audio_start, p.audio_end) == (0.0, HEARD_S) for p in plans)
    for p, position in zip(plans, (0.25, 0.75), strict=True):
        assert np.array_equal(p.frame_times, times[segment_indices(75, 16, position)])
    (one,) = plan_clips(0.5, 3.0, ClipConfig(clips=1), 25.0, times)
    assert np.array_equal(one.frame_times, times[segment_indices(75)])
    assert clip_positions(1) == (0.5,) and clip_positions(2) == (0.25, 0.75)


def test_short_video_without_frame_times_falls_back_to_its_frame_rate():
    (p,) = plan_clips(0.0, 2.0, ClipConfig(clips=1), frame_rate=10.0)
    np.testing.assert_allclose(p.frame_times * 10 - 0.5, segment_indices(20), atol=1e-9)


def test_reference_order_reaches_every_plan():
    times = np.arange(37) / 25
    cfg = ClipConfig(clips=1, frame_order=REFERENCE_ORDER)
    (short,) = plan_clips(0.0, 37 / 25, cfg, 25.0, times)
    assert np.array_equal(short.frame_times, times[frame_picks(37, 0.5, order=REFERENCE_ORDER)])
    assert not np.all(np.diff(short.frame_times) > 0)  # scrambled, not sorted
    (window,) = plan_windows(0.0, 2.0, 2.0, cfg, frame_rate=50.0)
    frames = window.frame_times * 50 - 0.5
    np.testing.assert_allclose(frames, reference_order(100)[segment_indices(100)], atol=1e-9)
    assert parse_frame_order("reference") == REFERENCE_ORDER and parse_frame_order("time") == TIME_ORDER
    with pytest.raises(UsageError):
        parse_frame_order("shuffled")


def test_audio_window_slides_inside_the_file():
    (first, *_, last) = plan_windows(0.0, 30.0, 2.0, ClipConfig())
    assert (first.audio_start, first.audio_end) == (0.0, 5.12)
    assert last.audio_end == pytest.approx(30.0) and last.audio_start == pytest.approx(30.0 - 5.12)


def test_windows_tile_the_video():
    plans = plan_windows(0.5, 11.0, 5.0, ClipConfig())
    assert [(p.start, p.end) for p in plans] == [(0.5, 5.5), (5.5, 11.5)]
    assert len(plan_windows(0.0, 2.0, 5.0, ClipConfig())) == 1
