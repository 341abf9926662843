"""Train-step throughput of MMA-DFER (ViT-B/16 x 2) on synthetic batches, and the data loader feeding it.

One step is what `dfer train` runs per batch (dfer_cli/train.py): uint8 pixels in, forward under bf16
autocast (or fp32, with TF32 as train.py allows it on CUDA), cross-entropy, backward, fused AdamW on
the adapters; no data loading. Cases: face size x precision x eager/compiled x batch. MFU is against
--peak-tflops, counting two forwards per sample (flops.train_flops); "first step" is the first call's
time (compilation, for compiled cases); "DFEW fold" projects 9,356 clips x 25 epochs of steps.

Then the data side (--loader-clips N): clips/s that the augmented training view of a freshly
`dfer prepare`d cache (a fake DFEW split) delivers through a DataLoader (batch 8, shuffled), by
worker count; the step rate above is what it must keep up with.

  python benchmarks/train_bench.py                              # 160/224 px, batch 8-64, bf16/fp32, eager
  python benchmarks/train_bench.py --modes compile --sizes 160 --batches 32 --precisions bf16
  python benchmarks/train_bench.py --arch tiny --sizes 32 --batches 4 --steps 2 --warmup 1 --precisions fp32
  python benchmarks/train_bench.py --batches --loader-clips 200 --loader-workers 15   # the loader only
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cache_bench import fake_dfew, rate
from flops import model_dims, train_flops

from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.runtime.device import autocast, pick_device
from dfer_cli.train.cache import read_split
from dfer_cli.train.datasets import DfewDataset
from dfer_cli.train.loader import CacheDataset
from dfer_cli.train.prepare import PrepareConfig, prepare

DFEW_FOLD_CLIPS = 9_356  # fold-1 training clips (spec section 7)
EPOCHS = 25


def synthetic_batch(dims: ModelDims, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """What the training loader delivers: uint8 pixels, float audio features, int64 labels."""
    video = torch.randint(0, 256, (batch, dims.num_frames, 3, dims.image_size, dims.image_size),
                          dtype=torch.uint8, device=device)
    audio = torch.randn(batch, 1, dims.audio_frames, dims.mel_bins, device=device)
    return video, audio, torch.randint(0, dims.num_classes, (batch,), device=device)


def make_step(net: torch.nn.Module, model: MMADFER, batch: int, precision: str,
              device: torch.device) -> Callable[[], None]:
    """One `dfer train` step on a fixed synthetic batch, `net` being `model` or its compiled form."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2, fused=device.type == "cuda")
    video, audio, label = synthetic_batch(model.dims, batch, device)

    def step() -> None:
        with autocast(device, precision):
            logits = net(video, audio)
        loss = F.cross_entropy(logits.float(), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_steps(step: Callable[[], None], batch: int, device: torch.device, steps: int,
               warmup: int) -> tuple[float, float]:
    """(samples/s over `steps` timed steps, seconds of the first step)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - start), first


def run_case(net: torch.nn.Module, model: MMADFER, batch: int, precision: str, device: torch.device,
             args: argparse.Namespace) -> tuple[float, float] | None:
    """time_steps of one case, or None when it does not fit in memory (its tensors are freed on return)."""
    try:
        return time_steps(make_step(net, model, batch, precision, device), batch, device, args.steps, args.warmup)
    except torch.OutOfMemoryError:
        return None


def bench_steps(args: argparse.Namespace, device: torch.device) -> None:
    print("| px | precision | mode | batch | samples/s | first step s | TFLOP/s | MFU | DFEW fold (min) |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        torch.manual_seed(0)
        model = MMADFER(model_dims(args.arch, size)).to(device).train()
        per_sample = train_flops(model.dims)
        for mode in args.modes:
            for precision in args.precisions:
                for batch in args.batches:
                    if mode == "compile":
                        torch._dynamo.reset()  # a clean compile per case, timed in "first step"
                    net = torch.compile(model, dynamic=False) if mode == "compile" else model
                    measured = run_case(net, model, batch, precision, device, args)
                    if measured is None:
                        print(f"| {size} | {precision} | {mode} | {batch} | out of memory | | | | |", flush=True)
                        torch.cuda.empty_cache()
                        continue
                    speed, first = measured
                    achieved = speed * per_sample / 1e12
                    mfu = f"{100 * achieved / args.peak_tflops:.1f}%" if device.type == "cuda" else "-"
                    fold = DFEW_FOLD_CLIPS * EPOCHS / speed / 60
                    print(f"| {size} | {precision} | {mode} | {batch} | {speed:.1f} | {first:.1f} | {achieved:.1f} "
                          f"| {mfu} | {fold:.1f} |", flush=True)
        del model
    print("\nTFLOP per training sample: " + ", ".join(
        f"{s} px {train_flops(model_dims(args.arch, s)) / 1e12:.3f}" for s in args.sizes)
        + f". DFEW fold = {DFEW_FOLD_CLIPS:,} clips x {EPOCHS} epochs of steps (no data loading, no "
        f"validation); goal 10 min. MFU against {args.peak_tflops:g} TFLOP/s.")


def bench_loader(clips: int, size: int, workers: list[int]) -> None:
    """Clips/s of the training view of a freshly prepared cache, through a DataLoader."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "DFEW"
        fake_dfew(root, clips, 72, np.random.default_rng(1))
        dataset = DfewDataset(root, 1)
        config = PrepareConfig(size=size)
        start = time.perf_counter()
        prepare(dataset, "train", Path(tmp) / "cache", config, progress=False)
        prepared = clips / (time.perf_counter() - start)
        data = CacheDataset(read_split(Path(tmp) / "cache", dataset, "train"), train=True, size=size)
        print(f"\n## data loader: {clips} fake DFEW clips (72 JPEG frames each) prepared at {prepared:.1f} clips/s "
              f"({config.workers} processes); train view at {size} px, batch 8, shuffled, {os.cpu_count()} cores\n\n"
              "| workers | clips/s |\n|---|---|")
        for w in workers:
            print(f"| {w} | {rate(data, w, passes=max(1, 1000 // clips)):.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224], help="face sizes in px")
    parser.add_argument("--batches", type=int, nargs="*", default=[8, 16, 32, 64], help="none: loader only")
    parser.add_argument("--precisions", nargs="+", choices=["bf16", "fp32"], default=["bf16", "fp32"])
    parser.add_argument("--modes", nargs="+", choices=["eager", "compile"], default=["eager"])
    parser.add_argument("--arch", choices=["vit-b", "tiny"], default="vit-b", help="tiny: a quick CPU run")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first, the first one included")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="accelerator bf16 peak, for MFU")
    parser.add_argument("--loader-clips", type=int, default=0, help="fake DFEW clips for the loader (0: skip)")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    args = parser.parse_args()

    device = pick_device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as dfer train sets it
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    if args.batches:
        print(f"## MMA-DFER train step ({args.arch}), {name}, torch {torch.__version__}; "
              f"{args.steps} timed steps after {args.warmup} warm-up\n")
        bench_steps(args, device)
    if args.loader_clips:
        bench_loader(args.loader_clips, args.sizes[0], args.loader_workers)


if __name__ == "__main__":
    main()
