"""What every person and whose voice it is cost, end to end through `Model.predict` (warm, in one process):

  short   a 3-s two-person file (two GRID clips side by side, the left one's voice) against the same clip
          with one face, and the one-face file with --people main (today's path) against --people all;
  long    a two-person video of --long-seconds (the pair looped, packets copied), by default and with
          --window 2, --people all against --people main.

    python benchmarks/people_bench.py                          # ViT-B at 160 px, both sections
    python benchmarks/people_bench.py --arch tiny --sections long --long-seconds 600 --threads 1

Each figure is the median of --repeats runs after one warm-up; the ratios come from the same run. The
landmark model's faces/s: benchmarks/landmark_bench.py; silero-vad per second of audio and the
attribution's accuracy: benchmarks/speaker_bench.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from synth_media import loop_video  # noqa: E402

GRID = Path(os.environ.get("DFER_SHARED", ROOT.parent / "shared")) / "media" / "grid"
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")


def pair(out: Path) -> Path:
    """Two GRID clips side by side, the left one's voice (made by benchmarks/gpu_wheels.sh where no ffmpeg is)."""
    made = GRID.parent / "people" / "pair.mp4"
    if made.exists():
        return made
    from mediagen import ffmpeg  # imageio-ffmpeg's binary: a test dependency

    ffmpeg("-i", GRID / "bbaf2n.mpg", "-i", GRID / "brbk7n.mpg", "-filter_complex", "[0:v][1:v]hstack[v]",
           "-map", "[v]", "-map", "0:a", *H264, "-shortest", out)
    return out


def timed(model, path: Path, repeats: int, **options) -> tuple[float, dict, float]:
    """Median seconds of `repeats` predicts (after a warm-up), the last record's stage timings, and the
    median CPU seconds of this process (every thread's): on a shared machine the steadier figure."""
    model.predict(path, workers=0, **options)
    runs, cpu = [], []
    for _ in range(repeats):
        start, used = time.perf_counter(), time.process_time()
        (record,) = model.predict(path, workers=0, **options)
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - used)
        assert record.status == "ok", record.error
    return statistics.median(runs), record.timings, statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("vit-b", "tiny"), default="vit-b")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--sections", nargs="+", choices=("short", "long"), default=["short", "long"])
    parser.add_argument("--long-seconds", type=float, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch's threads (0: its default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import dfer_cli as dfer
    from dfer_cli.labels import DFEW_CLASSES
    from dfer_cli.model import MMADFER, ModelDims
    from dfer_cli.weights.format import WeightsConfig, save_dfer

    work = Path(tempfile.mkdtemp(prefix="people-bench-"))
    dims = ModelDims(image_size=args.size) if args.arch == "vit-b" else ModelDims.tiny(image_size=args.size)
    torch.manual_seed(0)
    save_dfer(work / "w", MMADFER(dims).eval(), WeightsConfig(dims, list(DFEW_CLASSES)))
    model = dfer.load_model(work / "w", device=args.device)
    print(f"{args.arch} at {args.size} px, {model.precision} on {model.device}, torch {torch.__version__}, "
          f"{os.cpu_count()} cores; median of {args.repeats}")
    two, one = pair(work / "pair.mp4"), GRID / "bbaf2n.mpg"
    if "short" in args.sections:
        t2, stages2, _ = timed(model, two, args.repeats)
        t1, stages1, _ = timed(model, one, args.repeats)
        t0, _, _ = timed(model, one, args.repeats, people="main")
        print(f"3-s two-person file: {t2:.2f} s  ({', '.join(f'{k} {v:.2f}' for k, v in stages2.items())})")
        print(f"same clip, one face: {t1:.2f} s  ({', '.join(f'{k} {v:.2f}' for k, v in stages1.items())})")
        print(f"  two people / one face: {t2 / t1:.2f}x (goal: at most 2.3x)")
        print(f"one face, --people main (today's path): {t0:.2f} s; --people all / main: {t1 / t0:.2f}x (goal: 1x)")
    if "long" in args.sections:
        long = loop_video(two, work / "long.mkv", args.long_seconds)
        for window in (None, 2.0):
            everyone, stages, everyone_cpu = timed(model, long, 1, window=window)
            main_only, _, main_cpu = timed(model, long, 1, window=window, people="main")
            name = "default" if window is None else f"--window {window:g}"
            print(f"{args.long_seconds:.0f}-s two-person video, {name}: people all {everyone:.1f} s, main "
                  f"{main_only:.1f} s: people add {everyone / main_only - 1:+.0%} (goal: at most +50%); "
                  f"CPU {everyone_cpu:.1f} s against {main_cpu:.1f} s: {everyone_cpu / main_cpu - 1:+.0%}; "
                  f"stages {', '.join(f'{k} {v:.1f}' for k, v in stages.items())}")


if __name__ == "__main__":
    main()
