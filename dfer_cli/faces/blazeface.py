"""BlazeFace, MediaPipe's face detector, as torch modules: short range (128 px) and full range (192 px).
Its input is made in faces/letterbox.py, its output decoded in faces/anchors.py."""

# Both are rebuilt layer for layer from the TFLite graphs of mediapipe 0.10.14; their weights are
# converted by tools/convert_blazeface.py into the safetensors files in dfer_cli/assets/. Each module
# registers its convolutions in the order the TFLite graph runs them, which is the order the converter
# fills them in.
#
# Input: (N, 3, S, S) float in [-1, 1]. Output: box regressions (N, anchors, 16) and score logits
# (N, anchors), with anchors in the order of anchors.AnchorGrid.centres.

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dfer_cli.faces.mediapipe_ops import ASSETS, load_converted, max_pool_2x2


def _depthwise(channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels)


class _Pointwise(nn.Conv2d):
    """A 1x1 convolution run as one matrix product over the pixels of a channels-last tensor, the bias
    added after it: on a CPU in one thread, F.conv2d loops over 1x1 kernels, and F.linear's bias path
    (copy the bias in, then accumulate) costs about as much as the product itself."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.permute(0, 2, 3, 1) @ self.weight.flatten(1).t()
        out += self.bias
        return out.permute(0, 3, 1, 2)


def _turned(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv` applied to an image turned by 180 degrees: its kernel turned the same way."""
    return F.conv2d(x, conv.weight.flip(2, 3), conv.bias, conv.stride, conv.padding, 1, conv.groups)


class _ShortBlock(nn.Module):
    """Depthwise 3x3 then 1x1 conv, added to the input (max-pooled when the block strides, zero-padded
    in channels when it widens), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.dw = _depthwise(cin, stride)
        self.pw = _Pointwise(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw(_turned(self.dw, x))
        if self.stride == 2:
            x = max_pool_2x2(x)
        out[:, :x.shape[1]] += x  # the skip, zero-padded in channels when the block widens
        return out.relu_()


class ShortRange(nn.Module):
    """BlazeFace short range: 896 anchors, 512 on a 16x16 grid (2 each) and 384 on 8x8 (6 each).

    It runs on the input turned by 180 degrees. TFLite pads its stride-2 convolutions ('SAME') on the
    bottom and right only; on the turned image that is the top and left, which torch's symmetric
    padding does without a padded copy (the row and column it adds at the end are never read)."""

    size = 128
    _widths = ((24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2), (48, 56, 1),
               (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1), (88, 96, 2), (96, 96, 1), (96, 96, 1), (96, 96, 1),
               (96, 96, 1))

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 5, 2, 2)
        self.blocks = nn.ModuleList(_ShortBlock(*w) for w in self._widths)
        self.score16, self.score8 = _Pointwise(88, 2), _Pointwise(96, 6)
        self.box16, self.box8 = _Pointwise(88, 32), _Pointwise(96, 96)

    def _large_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = _turned(self.stem, x.flip(2, 3)).relu_()
        for block in self.blocks[:3]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # On a CPU, the 64x64 maps (stem and first three blocks) go 8 frames at a time, to keep buffers
        # small; the smaller maps after them take the whole batch at once, which saves per-op overhead.
        parts = x.split(8) if x.device.type == "cpu" else [x]
        x = torch.cat([self._large_maps(part) for part in parts])
        for k, block in enumerate(self.blocks[3:], 3):
            x = block(x)
            if k == 10:
                grid16 = x
        grid16, x = grid16.flip(2, 3), x.flip(2, 3)  # turned back: the head convolutions are 1x1
        scores = torch.cat([_per_anchor(self.score16(grid16), 1), _per_anchor(self.score8(x), 1)], 1)
        boxes = torch.cat([_per_anchor(self.box16(grid16), 16), _per_anchor(self.box8(x), 16)], 1)
        return boxes, scores[..., 0]


def _per_anchor(x: torch.Tensor, values: int) -> torch.Tensor:
    """(N, A*values, H, W) -> (N, H*W*A, values): TFLite's NHWC reshape."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, values)


class _Residual(nn.Module):
    """Full range's residual unit: (depthwise 3x3, 1x1 conv) twice, narrow in the middle."""

    def __init__(self, channels: int, middle: int) -> None:
        super().__init__()
        self.dw1, self.pw1 = _depthwise(channels), _Pointwise(channels, middle)
        self.dw2, self.pw2 = _depthwise(middle), _Pointwise(middle, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.dw2(self.pw1(self.dw1(x)).relu_()))
        out += x
        return out.relu_()


class _Down(nn.Module):
    """Halves the grid: like _Residual with a strided first depthwise, no skip, ReLU after both."""

    def __init__(self, cin: int, middle: int, cout: int) -> None:
        super().__init__()
        self.dw1, self.pw1 = _depthwise(cin, 2), _Pointwise(cin, middle)
        self.dw2, self.pw2 = _depthwise(middle), _Pointwise(middle, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.dw2(self.pw1(self.dw1(x)).relu_())).relu_()


class _Stage(nn.Module):
    """Optional _Down, residual units, then an optional 1x1 conv + ReLU that feeds the next pyramid
    level (a lateral branch on the way down, the upsampled path on the way up)."""

    def __init__(self, channels: int, middle: int, repeats: int, down: tuple[int, int] | None = None,
                 out: int | None = None) -> None:
        super().__init__()
        self.down = _Down(*down, channels) if down else None
        self.units = nn.Sequential(*(_Residual(channels, middle) for _ in range(repeats)))
        self.out = _Pointwise(channels, out) if out else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.units(self.down(x) if self.down else x)
        return x, self.out(x).relu_() if self.out else None


class _Head(nn.Module):
    """1x1 conv, strided depthwise 3x3, then depth-to-space back to the 48x48 grid (TFLite's DCR order)."""

    def __init__(self, cin: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.pw, self.dw = _Pointwise(cin, 4 * values), _depthwise(4 * values, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.pw(x))
        n, _, h, w = x.shape
        x = x.view(n, 2, 2, self.values, h, w).permute(0, 4, 1, 5, 2, 3)  # (N, H, 2, W, 2, C)
        return x.reshape(n, 4 * h * w, self.values)


class FullRange(nn.Module):
    """BlazeFace full range: a feature pyramid from 96x96 down to 6x6 and back up to 48x48, one anchor
    per cell of the 48x48 grid (2304)."""

    size = 192

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, 2, 1)
        self.encoder = nn.ModuleList([
            _Stage(32, 8, 2), _Stage(64, 16, 2, (32, 16), 48), _Stage(128, 32, 2, (64, 32), 64),
            _Stage(192, 48, 2, (128, 48), 96), _Stage(384, 96, 3, (192, 96), 96)])
        self.decoder = nn.ModuleList([_Stage(96, 48, 2, out=64), _Stage(64, 32, 2, out=48), _Stage(48, 24, 1)])
        self.scores, self.boxes = _Head(48, 1), _Head(48, 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x).relu_()
        laterals = []
        for stage in self.encoder:
            x, lateral = stage(x)
            laterals.append(lateral)
        up = laterals.pop()
        for stage in self.decoder:
            up = laterals.pop() + F.interpolate(up, scale_factor=2, mode="bilinear", align_corners=False)
            x, up = stage(up)
        return self.boxes(x), self.scores(x)[..., 0]


def load(model: type[ShortRange] | type[FullRange], path: Path | None = None) -> nn.Module:
    """The network with its converted weights (stored fp16, as in the .tflite; computed in fp32)."""
    name = "blazeface_short.safetensors" if model is ShortRange else "blazeface_full.safetensors"
    return load_converted(model(), path or ASSETS / name, "BlazeFace", "tools/convert_blazeface.py")
