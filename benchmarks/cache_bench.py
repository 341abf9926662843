"""Read throughput of a `dfer prepare` cache: clips/s for the training view (16 random frames per
clip, augmentation, fbank) through a torch DataLoader, by worker count; and the write rate.

    python benchmarks/cache_bench.py [--clips 300] [--size 160] [--workers 0 1 2]

The entries are synthetic (random frames), written with the same code `dfer prepare` uses.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dfer_cli.cache import CacheDataset, ClipCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ClipCache(Path(tmp))
        frames = rng.integers(0, 255, (args.frames, args.size, args.size, 3), dtype=np.uint8)
        audio = rng.standard_normal((512, 128)).astype(np.float32)
        start = time.perf_counter()
        for i in range(args.clips):
            cache.add(f"{i:05d}", i % 7, frames, audio, {})
        write = args.clips / (time.perf_counter() - start)
        per_clip = (frames.nbytes + audio.nbytes // 2) / 2**20
        print(f"# cache of {args.clips} clips x {args.frames} frames at {args.size} px ({per_clip:.1f} MiB/clip)")
        print(f"write: {write:.0f} clips/s\n")
        print("| view | workers | clips/s |\n|---|---|---|")
        for train in (True, False):
            for workers in args.workers:
                data = CacheDataset(ClipCache(Path(tmp)), train=train, size=args.size)
                loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, num_workers=workers)
                start = time.perf_counter()
                n = sum(len(batch[2]) for batch in loader)
                print(f"| {'train (augmented)' if train else 'test'} | {workers} | "
                      f"{n / (time.perf_counter() - start):.0f} |", flush=True)


if __name__ == "__main__":
    main()
