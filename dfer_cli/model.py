"""MMA-DFER: two frozen ViT encoders (face frames, audio fbank) adapted by progressive prompts, fusion
bottlenecks, a joint projection and a multimodal temporal transformer (official checkpoints map onto it
in weights/official.py)."""

# The ViT blocks keep timm's parameter names and numerics (pre-norm, qkv bias, LayerNorm eps 1e-6,
# exact GELU) so that MAE-Face / AudioMAE / MMA-DFER checkpoints map onto them name for name.
# timm itself is not imported: it hard-requires torchvision, whose PyPI wheels link CUDA-only
# libtorch and fail to import beside a CPU torch.

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelDims:
    image_size: int = 160
    num_classes: int = 7
    num_frames: int = 16
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    audio_frames: int = 512
    mel_bins: int = 128
    prompts: int = 6
    prompt_stages: int = 2
    bottleneck: int = 128
    temporal_dim: int = 512
    temporal_heads: int = 8
    temporal_mlp: int = 1024
    drop_path: float = 0.1

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.patch_size}")
        if self.prompts % self.prompt_stages or self.depth < self.prompt_stages:
            raise ValueError("prompts and depth must split evenly into prompt_stages")

    @classmethod
    def tiny(cls, **overrides: int) -> ModelDims:
        """A narrow, shallow configuration for tests and CPU demos (no pretrained encoders fit it)."""
        base = cls(image_size=32, width=64, depth=4, heads=2, bottleneck=16,
                   temporal_dim=32, temporal_heads=2, temporal_mlp=64)
        return replace(base, **overrides)

    @property
    def image_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def audio_grid(self) -> tuple[int, int]:
        return self.audio_frames // self.patch_size, self.mel_bins // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)


LayerNorm = partial(nn.LayerNorm, eps=1e-6)


class DropPath(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Encoder(nn.Module):
    """One ViT branch: frozen patch embedding, CLS token, blocks and final norm; trainable position
    embeddings (prompt slots included) and prompts."""

    def __init__(self, dims: ModelDims, in_chans: int, patches: int) -> None:
        super().__init__()
        d = dims.width
        self.patches = patches
        self.per_stage = dims.prompts // dims.prompt_stages
        self.stage_every = dims.depth // dims.prompt_stages
        self.patch_embed = PatchEmbed(in_chans, d, dims.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + patches + dims.prompts, d))
        self.prompts = nn.Parameter(torch.zeros(dims.prompts, d))
        self.progressive_prompts = nn.ParameterList(
            nn.Parameter(torch.zeros(self.per_stage, d)) for _ in range(dims.prompt_stages))
        # Stochastic depth grows linearly with depth, as in timm's VisionTransformer.
        rates = [dims.drop_path * i / max(dims.depth - 1, 1) for i in range(dims.depth)]
        self.blocks = nn.ModuleList(Block(d, dims.heads, dims.mlp_ratio, r) for r in rates)
        self.norm = LayerNorm(d)

    def frozen_parameters(self) -> list[nn.Parameter]:
        return [self.cls_token, *self.patch_embed.parameters(), *self.blocks.parameters(),
                *self.norm.parameters()]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), x, self.prompts.expand(b, -1, -1)], dim=1)
        return x + self.pos_embed

    def add_progressive_prompts(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        # Stage k adds (not substitutes) its prompts to slots [3k, 3k + 3) of the prompt tokens.
        stage, rem = divmod(layer, self.stage_every)
        if rem or stage >= len(self.progressive_prompts):
            return x
        start = 1 + self.patches + stage * self.per_stage
        delta = torch.zeros_like(x[0])
        delta[start:start + self.per_stage] = self.progressive_prompts[stage]
        return x + delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The branch alone, without fusion: what the fused model reduces to with zero gates."""
        x = self.tokens(x)
        for layer, block in enumerate(self.blocks):
            x = self.add_progressive_prompts(block(x), layer)
        return self.norm(x)[:, 0]


class FusionBottleneck(nn.Module):
    """Exchanges pooled low-rank summaries between the branches after one block pair, gated by
    tanh(gate) with gates initialised to 0 so an untrained model is the two plain encoders."""

    def __init__(self, width: int, bottleneck: int) -> None:
        super().__init__()
        self.image_down = nn.Linear(width, bottleneck)
        self.image_norm = nn.LayerNorm(bottleneck)
        self.audio_down = nn.Linear(width, bottleneck)
        self.audio_norm = nn.LayerNorm(bottleneck)
        self.image_up = nn.Linear(bottleneck, width)
        self.audio_up = nn.Linear(bottleneck, width)
        self.image_gate = nn.Parameter(torch.zeros(1))
        self.audio_gate = nn.Parameter(torch.zeros(1))

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = a.shape[0]
        v_hat = self.image_norm(self.image_down(v))
        a_hat = self.audio_norm(self.audio_down(a))
        # Means run over every token (CLS and prompts too) of all frames of one video.
        v_pool = v_hat.reshape(b, -1, v_hat.shape[-1]).mean(1)
        a_pool = a_hat.mean(1)
        v_in = v_hat + a_pool.repeat_interleave(v.shape[0] // b, dim=0)[:, None]
        a_in = a_hat + v_pool[:, None]
        v = v + torch.tanh(self.image_gate) * F.gelu(self.image_up(v_in))
        a = a + torch.tanh(self.audio_gate) * F.gelu(self.audio_up(a_in))
        return v, a


class TemporalTransformer(nn.Module):
    """Multimodal Temporal Transformer: CLS + positions, one pre-norm block (tanh-GELU MLP), no final norm."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        d = dims.temporal_dim
        self.heads = dims.temporal_heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, dims.num_frames + 1, d))
        self.attn_norm = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_kv = nn.Linear(d, 2 * d, bias=False)
        self.proj = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, dims.temporal_mlp)
        self.fc2 = nn.Linear(dims.temporal_mlp, d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed[:, : n + 1]
        h = self.attn_norm(x)
        k, v = self.to_kv(h).chunk(2, dim=-1)
        att = F.scaled_dot_product_attention(self._heads(self.to_q(h)), self._heads(k), self._heads(v))
        x = x + self.proj(att.transpose(1, 2).reshape(b, n + 1, c))
        x = x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x)), approximate="tanh"))
        return x[:, 0]


class MMADFER(nn.Module):
    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        self.image = Encoder(dims, 3, dims.image_patches)
        grid_t, grid_f = dims.audio_grid
        self.audio = Encoder(dims, 1, grid_t * grid_f)
        self.fusion = nn.ModuleList(FusionBottleneck(dims.width, dims.bottleneck) for _ in range(dims.depth))
        self.joint_proj = nn.Linear(dims.width, dims.temporal_dim)
        self.temporal = TemporalTransformer(dims)
        self.classifier = nn.Linear(dims.temporal_dim, dims.num_classes)
        self._init_adapters()
        self.freeze_encoders()

    def _init_adapters(self) -> None:
        # The reference leaves these to its modules' own defaults: randn for the temporal CLS and
        # positions (vit-pytorch style); prompts get a small normal, as in visual prompt tuning.
        if self.temporal.cls_token.is_meta:  # built to be loaded (weights/format.py): values come from the
            return  # checkpoint, and a random fill on meta costs 0.9 s of importing torch's reference ops
        for branch in (self.image, self.audio):
            nn.init.normal_(branch.prompts, std=0.02)
            for p in branch.progressive_prompts:
                nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.temporal.cls_token)
        nn.init.normal_(self.temporal.pos_embed)

    def freeze_encoders(self) -> None:
        for p in (*self.image.frozen_parameters(), *self.audio.frozen_parameters()):
            p.requires_grad_(False)

    def encode(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, T, 3, S, S) float in [0, 1] or uint8 pixels, audio (B, 1, frames, mels) -> CLS
        features (B, T, D), (B, D)."""
        if video.dtype == torch.uint8:  # data loaders ship pixels: 4x fewer bytes to copy and move
            video = video.float().div_(255)
        b, t = video.shape[:2]
        v = self.image.tokens(video.flatten(0, 1))
        a = self.audio.tokens(audio)
        pairs = zip(self.image.blocks, self.audio.blocks, self.fusion, strict=True)
        for layer, (vb, ab, fuse) in enumerate(pairs):
            v, a = fuse(vb(v), ab(a))
            v = self.image.add_progressive_prompts(v, layer)
            a = self.audio.add_progressive_prompts(a, layer)
        v_cls = self.image.norm(v)[:, 0].view(b, t, -1)
        return v_cls, self.audio.norm(a)[:, 0]

    def features(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The temporal transformer's CLS output: the classifier's input (B, temporal_dim)."""
        v_cls, a_cls = self.encode(video, audio)
        return self.temporal(self.joint_proj(v_cls + a_cls[:, None]))

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(video, audio))

    def gates(self) -> list[nn.Parameter]:
        return [g for f in self.fusion for g in (f.image_gate, f.audio_gate)]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
