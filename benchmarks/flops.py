"""Model FLOPs counted from the architecture, for MFU: 2 FLOPs per multiply-add, matmuls only
(attention's two products included; norms, softmax and GELU left out, as MFU conventions do)."""

from __future__ import annotations

from dfer_cli.model import ModelDims


def model_dims(arch: str, size: int) -> ModelDims:
    """The benchmarks' two models: the paper's ViT-B pair ("vit-b"), or the tiny one for CPU runs."""
    return ModelDims(image_size=size) if arch == "vit-b" else ModelDims.tiny(image_size=size)


def vit_flops(tokens: int, sequences: int, dims: ModelDims) -> float:
    """`sequences` sequences of `tokens` tokens through the ViT blocks (qkv, proj, MLP, attention)."""
    d = dims.width
    linear = 2 * tokens * (4 * d * d + 2 * int(d * dims.mlp_ratio) * d)
    attention = 2 * 2 * tokens * tokens * d
    return dims.depth * sequences * (linear + attention)


def forward_flops(dims: ModelDims) -> float:
    """One video's forward: 16 frames through the image ViT, one spectrogram through the audio ViT,
    patch embeddings, fusion bottlenecks (down and up projections on every token of both branches),
    the joint projection and the temporal transformer: about 0.345 TFLOP at 160 px."""
    d, t = dims.width, dims.num_frames
    image_tokens = 1 + dims.image_patches + dims.prompts
    grid_t, grid_f = dims.audio_grid
    audio_tokens = 1 + grid_t * grid_f + dims.prompts
    patch = 2 * d * dims.patch_size ** 2 * (3 * t * dims.image_patches + grid_t * grid_f)
    fusion = dims.depth * 2 * 2 * dims.bottleneck * d * (t * image_tokens + audio_tokens)
    k, m = dims.temporal_dim, dims.temporal_mlp
    temporal = 2 * t * d * k + 2 * (t + 1) * (4 * k * k + 2 * k * m) + 2 * 2 * (t + 1) ** 2 * k
    return vit_flops(image_tokens, t, dims) + vit_flops(audio_tokens, 1, dims) + patch + fusion + temporal


def train_flops(dims: ModelDims) -> float:
    """One training sample: the forward plus a backward of about one more forward. The frozen
    encoders need input gradients but no weight gradients, so their backward costs one forward's
    matmuls, not two (benchmarks/profile_bench.py measures the ratio)."""
    return 2 * forward_flops(dims)
