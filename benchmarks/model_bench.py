"""Forward throughput of the MMA-DFER model alone: videos/s, peak memory and model FLOPs utilisation.

    python benchmarks/model_bench.py                      # CUDA: 160/224 px, batch 1-64, fp32/bf16, eager/compile
    python benchmarks/model_bench.py --arch tiny --sizes 32 --batches 1 2 --precisions fp32 --modes eager

One video is one clip of 16 frames and its audio (`dfer predict` runs 2 per file by default). FLOPs
come from flops.py (2 per multiply-add, attention included); MFU is against --peak TFLOP/s (790:
H100/H200 dense bf16). "first call s" is the first forward's time: the compilation, in compile mode.
fp32 allows TF32 matmuls. Random weights: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import time

import torch
from flops import forward_flops, model_dims

from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.runtime.device import autocast, pick_device


def measure(model: torch.nn.Module, dims: ModelDims, batch: int, device: torch.device, precision: str,
            steps: int) -> tuple[float, float, float]:
    """(videos/s, peak GiB on the GPU, seconds of the first call)."""
    video = torch.rand(batch, dims.num_frames, 3, dims.image_size, dims.image_size, device=device)
    audio = torch.randn(batch, 1, dims.audio_frames, dims.mel_bins, device=device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode(), autocast(device, precision):
        start = time.perf_counter()
        model(video, audio)
        sync()
        first = time.perf_counter() - start
        model(video, audio)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            model(video, audio)
        sync()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return batch / seconds, peak, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--modes", nargs="+", choices=["eager", "compile"], default=["eager", "compile"])
    parser.add_argument("--arch", choices=["vit-b", "tiny"], default="vit-b", help="tiny: a quick CPU run")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak", type=float, default=790.0, help="peak TFLOP/s for MFU")
    args = parser.parse_args()

    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    torch.set_float32_matmul_precision("high")
    print(f"## MMA-DFER forward ({args.arch}), {name}, torch {torch.__version__}, SDPA attention\n")
    print("| px | precision | mode | batch | videos/s | first call s | peak GiB | TFLOP/s | MFU |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        dims = model_dims(args.arch, size)
        flops = forward_flops(dims)
        eager = MMADFER(dims).to(device).eval()
        for mode in args.modes:
            for precision in args.precisions:
                for batch in args.batches:
                    if mode == "compile":
                        torch._dynamo.reset()  # a clean compile per case, timed in "first call"
                    model = torch.compile(eager, dynamic=False) if mode == "compile" else eager
                    try:
                        speed, peak, first = measure(model, dims, batch, device, precision, args.steps)
                    except torch.OutOfMemoryError:
                        speed = None  # the exception's frames, holding the tensors, go at the end of this block
                    if speed is None:
                        print(f"| {size} | {precision} | {mode} | {batch} | out of memory | | | | |", flush=True)
                        torch.cuda.empty_cache()
                        continue
                    tflops = speed * flops / 1e12
                    mfu = f"{100 * tflops / args.peak:.1f}%" if device.type == "cuda" else "-"
                    print(f"| {size} | {precision} | {mode} | {batch} | {speed:.1f} | {first:.1f} | {peak:.1f} "
                          f"| {tflops:.1f} | {mfu} |", flush=True)
    print("\nforward TFLOP per video: " + ", ".join(f"{s} px {forward_flops(model_dims(args.arch, s)) / 1e12:.3f}"
                                                  for s in args.sizes))


if __name__ == "__main__":
    main()
