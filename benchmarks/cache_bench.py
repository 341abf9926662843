"""Throughput of the `dfer prepare` clip cache: writing it, and reading it the way training does.

    python benchmarks/cache_bench.py [--clips 500] [--size 160] [--workers 0 1 2 4] [--dir DIR]

1. prepare: a fake DFEW split (224 px JPEG face frames, 72 per clip, and a 3-s original clip with
   audio each) through `prepare`, by worker count: clips/s end to end (decode, resize, fbank, write).
2. write: `--clips` synthetic entries (48 frames at S) written as `prepare` writes them.
3. read: the same entries read back, per process and through a torch DataLoader by worker count:
   - raw: open the clip, copy 16 of its frames and the audio input (the cache's own cost);
   - test / train: CacheDataset's two views (train adds the random crop, brightness and flip);
   - jpeg: the reference's loader for comparison: 16 JPEG files opened, decoded at 224 px, resized.
The page cache is warm (files just written): that is the steady state when the cache fits in memory
(all of DFEW at 160 px, every fold's clips, is about 43 GB); from a cold disk, a clip reads 16 x S x S x 3 bytes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from synth_media import write_clip

from dfer_cli.clips.plan import segment_indices
from dfer_cli.train.cache import CacheSpec, CacheWriter, ClipSet, ClipStore, write_clip_files
from dfer_cli.train.datasets import DfewDataset
from dfer_cli.train.loader import CacheDataset
from dfer_cli.train.prepare import PrepareConfig, prepare


def face_like(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """A smooth random picture: JPEG-compresses like a face crop (tens of KB), unlike pure noise."""
    coarse = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(coarse, np.int16) + rng.integers(-6, 7, (size, size, 3)), 0, 255).astype(np.uint8)


def fake_dfew(root: Path, clips: int, frames: int, rng: np.random.Generator) -> None:
    """A DFEW-shaped folder: `clips` clips of `frames` JPEG face frames each (the same pictures, hard
    links after the first clip) and a 3-s original video with sound each (hard links of one)."""
    folder = root / "EmoLabel_DataSplit" / "train(single-labeled)"
    folder.mkdir(parents=True)
    (folder / "set_1.csv").write_text("video_name,label\n" + "".join(f"{i},{i % 7 + 1}\n" for i in range(1, clips + 1)))
    (root / "Clip" / "original").mkdir(parents=True)
    original = write_clip(root / "Clip" / "original" / "00001.mp4", 3.0)
    first = root / "Clip" / "clip_224x224" / "00001"
    first.mkdir(parents=True)
    for k in range(frames):
        Image.fromarray(face_like(rng)).save(first / f"{k + 1:05d}.jpg", quality=90)
    for i in range(2, clips + 1):
        folder = root / "Clip" / "clip_224x224" / f"{i:05d}"
        folder.mkdir()
        for picture in first.iterdir():
            (folder / picture.name).hardlink_to(picture)
        (root / "Clip" / "original" / f"{i:05d}.mp4").hardlink_to(original)


def bench_prepare(tmp: Path, args: argparse.Namespace) -> None:
    root = tmp / "DFEW"
    fake_dfew(root, args.prepare_clips, 72, np.random.default_rng(1))
    dataset = DfewDataset(root, 1)
    print(f"## prepare: fake DFEW, {args.prepare_clips} clips x 72 JPEG frames (224 px) + 3-s audio, "
          f"to {args.size} px\n\n| workers | clips/s |\n|---|---|")
    for workers in args.workers:
        out = tmp / f"prepared-{workers}"
        start = time.perf_counter()
        prepare(dataset, "train", out, PrepareConfig(size=args.size, workers=workers), progress=False)
        print(f"| {workers} | {args.prepare_clips / (time.perf_counter() - start):.1f} |", flush=True)


def bench_write(root: Path, args: argparse.Namespace) -> ClipSet:
    """Write synthetic clips as `prepare` does; returns them as one split."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (args.frames, args.size, args.size, 3), dtype=np.uint8)
    audio = rng.standard_normal((512, 128)).astype(np.float32)
    start = time.perf_counter()
    labels = {f"{i:05d}": i % 7 for i in range(args.clips)}
    with CacheWriter(root, CacheSpec("bench", args.size, args.frames)) as writer:
        for key in labels:
            writer.commit(key, write_clip_files(root, key, frames, audio), {})
    seconds = time.perf_counter() - start
    mib = (frames.nbytes + audio.nbytes) / 2**20
    print(f"\n## cache: {args.clips} clips x {args.frames} frames at {args.size} px, {mib:.2f} MiB per clip\n")
    print(f"write: {args.clips / seconds:.0f} clips/s ({args.clips * mib / seconds:.0f} MiB/s), one process")
    return ClipStore(root).split(labels)


class RawView(torch.utils.data.Dataset):
    """What the cache itself costs: 16 frames and the audio input, as numpy arrays."""

    def __init__(self, cache: ClipSet) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        clip = self.cache.read(i)
        frames = np.ascontiguousarray(clip.frames[segment_indices(len(clip.frames))])
        return torch.from_numpy(frames), torch.from_numpy(clip.audio), clip.label


class JpegView(torch.utils.data.Dataset):
    """The reference's loader on a JPEG folder per clip: 16 files opened, decoded, resized to S."""

    def __init__(self, folders: list[Path], size: int) -> None:
        self.folders, self.size = folders, size

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        files = sorted(self.folders[i].glob("*.jpg"))
        pictures = [np.asarray(Image.open(files[k]).convert("RGB").resize((self.size, self.size), Image.BILINEAR))
                    for k in segment_indices(len(files))]
        return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float().div_(255), 0


def rate(data: torch.utils.data.Dataset, workers: int, passes: int = 1) -> float:
    """Clips per second through a DataLoader; every view returns (..., label)."""
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, num_workers=workers)
    start, n = time.perf_counter(), 0
    for _ in range(passes):
        n += sum(len(batch[-1]) for batch in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--prepare-clips", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        bench_prepare(Path(tmp), args)
        cache = bench_write(Path(tmp) / "cache", args)
        jpeg = JpegView(sorted((Path(tmp) / "DFEW" / "Clip" / "clip_224x224").iterdir()), args.size)
        views = {"raw (16 frames + audio)": RawView(cache),
                 "test view (CacheDataset)": CacheDataset(cache, train=False, size=args.size),
                 "train view (CacheDataset, augmented)": CacheDataset(cache, train=True, size=args.size),
                 f"jpeg folder, 224 px -> {args.size} (reference loader)": jpeg}
        print("\n## read, clips/s (DataLoader, batch 8, shuffled)\n\n| view | "
              + " | ".join(f"{w} workers" for w in args.workers) + " |\n|---|" + "---|" * len(args.workers))
        for name, data in views.items():
            passes = max(1, args.clips // len(data))
            print(f"| {name} | " + " | ".join(f"{rate(data, w, passes):.0f}" for w in args.workers) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
