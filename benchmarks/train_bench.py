"""Train-step throughput of the default MMA-DFER model (ViT-B/16 x 2) on synthetic tensors.

One step = forward, cross-entropy, backward, fused AdamW on the adapters: what `dfer train` runs per
batch, without data loading. Then the data side: clips/s that `dfer train`'s loader (the cache's
augmented train view, batch 8, shuffled) delivers from a `dfer prepare` cache of generated clips
(a fake DFEW split, as in cache_bench.py), by worker count; the step rate is what it must keep up with.
On CUDA it uses bf16 autocast (as `dfer train` does) and reports MFU
against --peak-tflops; on CPU it runs fp32 and the MFU column is left empty.

FLOPs per sample are counted from the architecture (matmuls of the 2 x 12 ViT blocks, attention, fusion
bottlenecks, patch embeddings): about 0.345 TFLOP forward at 160 px. A training step costs about twice
the forward: the backward pass needs the activation gradients through the frozen blocks (one more
forward's worth) but no weight gradients for them.

Examples:

  python benchmarks/train_bench.py                                  # 160 and 224 px, batch 8..64
  python benchmarks/train_bench.py --sizes 160 --batches 8 --steps 3 --warmup 1   # a CPU-sized case
  python benchmarks/train_bench.py --batches '' --loader-workers 0 4 8 16        # the loader only
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cache_bench import fake_dfew, rate

from dfer_cli.cache import read_split
from dfer_cli.clipdata import CacheDataset
from dfer_cli.datasets import DfewDataset
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.prepare import PrepareConfig, prepare
from dfer_cli.runtime import autocast, pick_device

DFEW_FOLD_CLIPS = 9_356  # fold-1 training clips (spec section 7)
EPOCHS = 25


def forward_flops(dims: ModelDims) -> float:
    """Forward FLOPs (2 per multiply-add) of one sample."""
    d, blocks, t = dims.width, dims.depth, dims.num_frames
    image_tokens = 1 + dims.image_patches + dims.prompts
    grid_t, grid_f = dims.audio_grid
    audio_tokens = 1 + grid_t * grid_f + dims.prompts

    def vit(tokens: int, sequences: int) -> float:
        linear = 2 * (4 * d * d + 2 * int(d * dims.mlp_ratio) * d) * tokens  # qkv + proj, MLP
        attention = 2 * 2 * tokens * tokens * d  # q k^T and attn v
        return blocks * sequences * (linear + attention)

    patch = 2 * d * dims.patch_size ** 2 * (3 * t * dims.image_patches + grid_t * grid_f)
    fusion = blocks * 2 * dims.bottleneck * d * (3 * t * image_tokens + 2 * audio_tokens)
    head = 2 * t * d * dims.temporal_dim + 2 * (t + 1) * dims.temporal_dim * (4 * dims.temporal_dim
                                                                             + 2 * dims.temporal_mlp)
    return vit(image_tokens, t) + vit(audio_tokens, 1) + patch + fusion + head


def bench(size: int, batch: int, steps: int, warmup: int, device: torch.device, compile_model: bool) -> float:
    """Training samples per second."""
    torch.manual_seed(0)
    dims = ModelDims(image_size=size)
    model = MMADFER(dims).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2, fused=device.type == "cuda")
    net = torch.compile(model) if compile_model else model
    video = torch.rand(batch, dims.num_frames, 3, size, size, device=device)
    audio = torch.randn(batch, 1, dims.audio_frames, dims.mel_bins, device=device)
    label = torch.randint(0, dims.num_classes, (batch,), device=device)

    def step() -> None:
        with autocast(device, "bf16" if device.type == "cuda" else "fp32"):
            loss = F.cross_entropy(net(video, audio).float(), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - start)


def bench_loader(clips: int, size: int, workers: list[int]) -> None:
    """Clips/s of the training view of a freshly prepared cache, through a DataLoader."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "DFEW"
        fake_dfew(root, clips, 72, np.random.default_rng(1))
        dataset = DfewDataset(root, 1)
        start = time.perf_counter()
        prepare(dataset, "train", Path(tmp) / "cache", PrepareConfig(size=size), progress=False)
        prepared = clips / (time.perf_counter() - start)
        data = CacheDataset(read_split(Path(tmp) / "cache", dataset, "train"), train=True, size=size)
        print(f"\n# data loader: {clips} generated clips prepared at {prepared:.1f} clips/s "
              f"({PrepareConfig().workers} processes); train view at {size} px, batch 8, shuffled, "
              f"{os.cpu_count()} cores\n{'workers':>7} {'clips/s':>8}")
        for w in workers:
            print(f"{w:>7} {rate(data, w, passes=max(1, 1000 // clips)):>8.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="160,224", help="face sizes in px, comma-separated")
    parser.add_argument("--batches", default="8,16,32,64", help="batch sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="accelerator bf16 peak, for MFU")
    parser.add_argument("--loader-clips", type=int, default=200, help="generated clips for the loader (0: skip)")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    args = parser.parse_args()

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    print(f"# MMA-DFER train step, {name}, {precision}, torch {torch.__version__}"
          f"{', compiled' if args.compile else ''}; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'px':>4} {'batch':>5} {'TFLOP/sample':>12} {'samples/s':>10} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'DFEW fold (h)':>13}")
    for size in (int(s) for s in args.sizes.split(",")):
        train_flops = 2 * forward_flops(ModelDims(image_size=size))
        for batch in (int(b) for b in args.batches.split(",") if b):
            try:
                rate = bench(size, batch, args.steps, args.warmup, device, args.compile)
            except torch.OutOfMemoryError:
                print(f"{size:>4} {batch:>5} {'out of memory':>12}")
                torch.cuda.empty_cache()
                continue
            achieved = rate * train_flops / 1e12
            mfu = f"{100 * achieved / args.peak_tflops:5.1f}%" if device.type == "cuda" else "-"
            hours = DFEW_FOLD_CLIPS * EPOCHS / rate / 3600
            print(f"{size:>4} {batch:>5} {train_flops / 1e12:>12.3f} {rate:>10.2f} {achieved:>8.2f} {mfu:>6} "
                  f"{hours:>13.1f}", flush=True)
    print(f"# DFEW fold = {DFEW_FOLD_CLIPS:,} clips x {EPOCHS} epochs of train steps (no data loading, "
          f"no validation); MFU against {args.peak_tflops:g} TFLOP/s")
    if args.loader_clips:
        bench_loader(args.loader_clips, int(args.sizes.split(",")[0]), args.loader_workers)


if __name__ == "__main__":
    main()
