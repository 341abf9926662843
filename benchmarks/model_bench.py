"""Forward throughput of the MMA-DFER model: videos/s, peak memory and model FLOPs utilisation.

    python benchmarks/model_bench.py                      # CUDA: 160/224 px, batch 1-64, fp32/bf16, eager/compile
    python benchmarks/model_bench.py --sizes 160 --batches 1 2 --precisions fp32 --modes eager   # a CPU smoke run

FLOPs are counted from the shapes (2 per multiply-add, attention included); MFU is against --peak
TFLOP/s (790: H100/H200 dense bf16). Random weights: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import time

import torch

from dfer_cli.model import MMADFER, ModelDims


def vit_flops(tokens: int, width: int, depth: int, mlp_ratio: float) -> float:
    per_block = 2 * tokens * (4 * width * width + 2 * mlp_ratio * width * width) + 4 * tokens * tokens * width
    return depth * per_block


def forward_flops(dims: ModelDims) -> float:
    """Per video: 16 frames through the image ViT, one spectrogram through the audio ViT, the fusion
    bottlenecks and the temporal transformer (patch embeddings included)."""
    image_tokens = 1 + dims.image_patches + dims.prompts
    grid_t, grid_f = dims.audio_grid
    audio_tokens = 1 + grid_t * grid_f + dims.prompts
    w, d = dims.width, dims.bottleneck
    image = dims.num_frames * (vit_flops(image_tokens, w, dims.depth, dims.mlp_ratio)
                               + 2 * dims.image_patches * 3 * dims.patch_size ** 2 * w)
    audio = vit_flops(audio_tokens, w, dims.depth, dims.mlp_ratio) + 2 * grid_t * grid_f * dims.patch_size ** 2 * w
    fusion = dims.depth * 2 * (dims.num_frames * image_tokens * 2 * w * d + audio_tokens * 3 * w * d)
    t = dims.num_frames + 1
    temporal = 2 * t * (4 * dims.temporal_dim ** 2 + 2 * dims.temporal_dim * dims.temporal_mlp) \
        + 2 * dims.num_frames * w * dims.temporal_dim
    return image + audio + fusion + temporal


def measure(model: torch.nn.Module, dims: ModelDims, batch: int, device: torch.device, bf16: bool,
            steps: int) -> tuple[float, float]:
    video = torch.rand(batch, dims.num_frames, 3, dims.image_size, dims.image_size, device=device)
    audio = torch.randn(batch, 1, dims.audio_frames, dims.mel_bins, device=device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), ctx:
        for _ in range(2):
            model(video, audio)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            model(video, audio)
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return batch / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--modes", nargs="+", choices=["eager", "compile"], default=["eager", "compile"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak", type=float, default=790.0, help="peak TFLOP/s for MFU")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"# MMA-DFER forward, {name}, torch {torch.__version__}, SDPA attention")
    print("| px | precision | mode | batch | videos/s | peak GiB | TFLOP/s | MFU |\n|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        dims = ModelDims(image_size=size)
        flops = forward_flops(dims)
        eager = MMADFER(dims).to(device).eval()
        for mode in args.modes:
            model = torch.compile(eager) if mode == "compile" else eager
            for precision in args.precisions:
                for batch in args.batches:
                    try:
                        rate, peak = measure(model, dims, batch, device, precision == "bf16", args.steps)
                    except torch.OutOfMemoryError:
                        print(f"| {size} | {precision} | {mode} | {batch} | out of memory | | | |")
                        torch.cuda.empty_cache()
                        continue
                    tflops = rate * flops / 1e12
                    print(f"| {size} | {precision} | {mode} | {batch} | {rate:.1f} | {peak:.1f} | {tflops:.1f} | "
                          f"{100 * tflops / args.peak:.1f}% |", flush=True)
    print("\nforward FLOPs per video: " + ", ".join(
        f"{s} px {forward_flops(ModelDims(image_size=s)) / 1e12:.3f} TFLOP" for s in args.sizes))


if __name__ == "__main__":
    main()
