"""The cut detectors (TransNet V2 with its cuts confirmed by a lasting colour change, the same without that
check: transnet-raw, and the colour histogram) on composites of the shared clips: precision, recall
and F1 per kind (hard cuts, dissolves, slideshows of stills) and false cuts where there is none (fast motion,
flashes and strobe), frames/s on CPU, and what `small_frame` costs per frame at 360p and 1080p.

    python benchmarks/cut_bench.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import cutmedia  # noqa: E402

from dfer_cli.shots.detect import CutConfig, detect_cuts, small_frame  # noqa: E402

MEDIA = Path(os.environ.get("DFER_SHARED", ROOT.parent / "shared")) / "media"


def small_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        pairs = [(small_frame(f), f.time) for f in container.decode(video=0)]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def matched(found: list[int], truth: tuple[int, ...], tolerance: int) -> int:
    """True cuts matched one-to-one by found ones within `tolerance` frames (greedy, in time order)."""
    left, hits = sorted(found), 0
    for t in truth:
        near = [f for f in left if abs(f - t) <= tolerance]
        if near:
            left.remove(min(near, key=lambda f: abs(f - t)))
            hits += 1
    return hits


def composites(folder: Path, seeds: int) -> list[cutmedia.Composite]:
    paths = cutmedia.sources(MEDIA)
    clips = [cutmedia.decode(p) for p in paths]
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        out.append(cutmedia.hard_cuts(clips, folder / f"hard{seed}.mp4", rng))
        out.append(cutmedia.dissolves(clips, folder / f"dissolve{seed}.mp4", rng))
        one = clips[int(rng.integers(len(clips)))]
        out.append(cutmedia.fast_motion(one, folder / f"motion{seed}.mp4", rng))
        out.append(cutmedia.strobe(one, folder / f"strobe{seed}.mp4", rng))
        out.append(cutmedia.slideshow(clips, folder / f"slides5_{seed}.mp4", rng, hold=5))
        out.append(cutmedia.slideshow(clips, folder / f"slides1_{seed}.mp4", rng, hold=1))
    return out


def reformat_cost(size: tuple[int, int], frames: int = 100) -> tuple[float, float]:
    """ms per frame of `small_frame` on frames of `size`: wall and CPU time."""
    picture = av.VideoFrame.from_ndarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3),
                                                                           dtype=np.uint8), format="rgb24")
    picture = picture.reformat(format="yuv420p")  # what a decoder hands over
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(frames):
        small_frame(picture)
    return (time.perf_counter() - start) / frames * 1e3, (time.process_time() - cpu) / frames * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as folder:
        items = composites(Path(folder), args.seeds)
        inputs = [small_frames(c.path) for c in items]
    totals: dict[tuple[str, str], list[int]] = {}
    detectors = {"transnet": CutConfig(method="transnet"), "transnet-raw": CutConfig(method="transnet", confirm=0.0),
                 "histogram": CutConfig(method="histogram")}
    speed = {name: [0.0, 0.0, 0] for name in detectors}
    for c, (frames, times) in zip(items, inputs, strict=True):
        for method, cfg in detectors.items():
            start, cpu = time.perf_counter(), time.process_time()
            cuts = detect_cuts(frames, times, cfg)
            speed[method][0] += time.perf_counter() - start
            speed[method][1] += time.process_time() - cpu
            speed[method][2] += len(frames)
            found = [int(np.searchsorted(times, cut.time - 1e-6)) for cut in cuts]
            tp = matched(found, c.cuts, c.tolerance)
            row = totals.setdefault((c.kind, method), [0, 0, 0, 0])
            row[0] += tp
            row[1] += len(found) - tp
            row[2] += len(c.cuts) - tp
            row[3] += c.frames
    print(f"\n{'kind':<12} {'detector':<12} {'cuts':>5} {'TP':>4} {'FP':>4} {'FN':>4} {'P':>6} {'R':>6} {'F1':>6}"
          f" {'FP/min':>7}")
    for (kind, method), (tp, fp, fn, n) in sorted(totals.items()):
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * p * r / (p + r) if tp else (0.0 if tp + fn else float("nan"))
        print(f"{kind:<12} {method:<12} {tp + fn:>5} {tp:>4} {fp:>4} {fn:>4} {p:>6.3f} {r:>6.3f} {f1:>6.3f}"
              f" {fp / (n / cutmedia.FPS / 60):>7.1f}")
    for method, (seconds, cpu, n) in speed.items():
        # CPU time as well as wall time: on a shared machine the wall clock counts other people's work.
        print(f"{method}: {n / seconds:.0f} frames/s on CPU ({n} frames, {seconds:.1f} s wall, {cpu:.1f} s CPU"
              f" time: {n / cpu:.0f} frames per CPU-second)")
    for name, size in (("360p", (640, 360)), ("1080p", (1920, 1080))):
        wall, cpu = reformat_cost(size)
        print(f"small_frame at {name}: {wall:.3f} ms per frame ({cpu:.3f} ms CPU time)")


if __name__ == "__main__":
    main()
