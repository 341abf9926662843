"""BlazeFace, MediaPipe's face detector, as torch modules (short range, 128 px; full range, 192 px), with
mediapipe 0.10.14's letterbox, anchors, box decoding and weighted non-maximum suppression."""

# Both are rebuilt layer for layer from the TFLite graphs of mediapipe 0.10.14; their weights are
# converted by tools/convert_blazeface.py into the safetensors files in dfer_cli/assets/. Each module
# registers its convolutions in the order the TFLite graph runs them, which is the order the converter
# fills them in.
#
# Input: (N, 3, S, S) float in [-1, 1]. Output: box regressions (N, anchors, 16) and score logits
# (N, anchors), with anchors in the order of AnchorGrid.centres.
#
# Around the networks, their input and output as mediapipe 0.10.14 makes them: the letterboxed input
# tensor, the anchors, the box decoding and the weighted non-maximum suppression.
#
# The options are those of mediapipe's FaceDetection subgraph and its short/full-range wrappers (read from
# the graphs compiled into the 0.10.14 wheel): ImageToTensor with keep_aspect_ratio and BORDER_ZERO into
# [-1, 1]; SsdAnchors with fixed-size anchors offset by half a cell; TensorsToDetections with 16 values
# per anchor (box centre x, y, width, height, then 6 keypoints), x/y/w/h scaled by the input size, scores
# through a sigmoid clipped at +-100; NonMaxSuppression WEIGHTED at IoU 0.3.

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfer_cli.runtime import registry

ASSETS = Path(__file__).parents[1] / "assets"


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


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling, stride 2, of an even-sized map: F.max_pool2d also computes the argmax on a CPU."""
    return torch.maximum(torch.maximum(x[:, :, ::2, ::2], x[:, :, ::2, 1::2]),
                         torch.maximum(x[:, :, 1::2, ::2], x[:, :, 1::2, 1::2]))


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
            x = _max_pool(x)
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
    from safetensors.torch import load_file

    net = model()
    name = "blazeface_short.safetensors" if model is ShortRange else "blazeface_full.safetensors"
    state = load_file(str(path or ASSETS / name))
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval().requires_grad_(False)


SUPPRESSION_IOU = 0.3
_SUBPIXEL = 32  # OpenCV's warp quantizes sample positions to 1/32 pixel (INTER_BITS = 5)


@dataclass(frozen=True)
class AnchorGrid:
    """The SSD anchor layout of one model: (grid side, anchors per cell) per feature map."""

    size: int
    grids: tuple[tuple[int, int], ...]

    def centres(self) -> torch.Tensor:
        """(A, 2) anchor centres (x, y) in [0, 1], in the model's output order (row, column, anchor)."""
        parts = []
        for side, per_cell in self.grids:
            ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
            cells = torch.stack([xs, ys], -1).reshape(-1, 1, 2).expand(-1, per_cell, 2)
            parts.append((cells.reshape(-1, 2).double() + 0.5) / side)
        return torch.cat(parts).float()


# Short range: strides 8, 16, 16, 16 with an interpolated-scale anchor each (layers of equal stride are
# merged): 16x16 cells x 2 and 8x8 cells x 6. Full range: stride 4, one anchor per cell.
SHORT_RANGE = AnchorGrid(128, ((16, 2), (8, 6)))
FULL_RANGE = AnchorGrid(192, ((48, 1),))


@dataclass(frozen=True)
class Letterbox:
    """A (width, height) region of a frame, at (left, top), letterboxed into a size x size tensor: the
    square around it, centred, side = its longer side. Tensor pixel d samples the frame at
    d * scale + offset (OpenCV's warpPerspective maps pixel indices, not pixel centres)."""

    width: int
    height: int
    size: int
    left: int = 0
    top: int = 0

    @property
    def side(self) -> int:
        return max(self.width, self.height)

    def offsets(self) -> tuple[float, float]:
        return self.left + (self.width - self.side) / 2, self.top + (self.height - self.side) / 2

    def to_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4) x0, y0, x1, y1 in [0, 1] of the tensor -> pixels of the frame."""
        ox, oy = self.offsets()
        return boxes * self.side + np.array([ox, oy, ox, oy])


def _taps(start: float, step: float, count: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: the two source indices (clamped) and their integer weights out of 32, zero for
    a source outside the frame (BORDER_ZERO)."""
    pos = np.rint((start + step * np.arange(count, dtype=np.float64)) * _SUBPIXEL).astype(np.int64)
    low, frac = pos // _SUBPIXEL, pos % _SUBPIXEL
    index = np.stack([low, low + 1])
    weight = np.stack([_SUBPIXEL - frac, frac]) * ((index >= 0) & (index < limit))
    return np.clip(index, 0, limit - 1), weight


@registry.cached("letterbox sampling", keep=64)
def _sampling(box: Letterbox, height: int, width: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor, tuple[slice, slice]]:
    """The rows and columns of the tensor that see the frame (the rest is black: -1), and for each of
    their pixels the 4 source pixels, (4 R C,) flat indices into the frame, with their weights per
    value, (4, 3 R C), out of 32^2."""
    ox, oy = box.offsets()
    step = box.side / box.size
    ys, wy = _taps(oy, step, box.size, height)
    xs, wx = _taps(ox, step, box.size, width)
    (rows,), (cols,) = np.nonzero(wy.any(0)), np.nonzero(wx.any(0))
    window = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    ys, wy, xs, wx = ys[:, window[0]], wy[:, window[0]], xs[:, window[1]], wx[:, window[1]]
    index = (ys[:, None, :, None] * width + xs[None, :, None, :]).reshape(-1)  # (y tap, x tap, row, column)
    weight = np.repeat((wy[:, None, :, None] * wx[None, :, None, :]).reshape(4, -1), 3, axis=1)
    return torch.from_numpy(index).to(device), torch.from_numpy(weight.astype(np.float32)).to(device), window


def letterbox(frames: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames -> (N, 3, S, S) float in [-1, 1] (channels-last in memory), the tensor
    mediapipe feeds the model: bilinear without antialiasing, in OpenCV's fixed point (weights in 32nds
    per axis), rounded back to uint8 before scaling. The sums are integers below 2^24, exact in float32."""
    n, height, width = frames.shape[:3]
    index, weight, (rows, cols) = _sampling(box, height, width, frames.device)
    taps = frames.reshape(n, -1, 3).index_select(1, index).view(n, 4, -1)
    pixels = taps[:, 0] * weight[0]
    for k in (1, 2, 3):
        pixels.addcmul_(taps[:, k], weight[k])
    pixels.add_(_SUBPIXEL ** 2 // 2).mul_(1 / _SUBPIXEL ** 2).floor_()
    out = torch.full((n, box.size, box.size, 3), -1.0, device=frames.device)
    window = out[:, rows, cols]
    torch.mul(pixels.view(window.shape), 2.0 / 255.0, out=window).sub_(1.0)
    return out.permute(0, 3, 1, 2)


def decode(raw: torch.Tensor, logits: torch.Tensor, grid: AnchorGrid, centres: torch.Tensor,
           min_score: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame, the boxes (K, 4: x0, y0, x1, y1 in [0, 1] of the tensor) and scores (K,) of the
    anchors that pass `min_score`, before suppression. Only those cross to the CPU."""
    scores = torch.sigmoid(logits.float().clamp(-100, 100))
    keep = scores >= min_score
    frame, anchor = keep.nonzero(as_tuple=True)
    values = raw[frame, anchor, :4].float() / grid.size
    centre = values[:, :2] + centres.to(values.device)[anchor]
    half = values[:, 2:] / 2
    boxes = torch.cat([centre - half, centre + half], 1)
    frame, boxes, kept = frame.cpu().numpy(), boxes.cpu().numpy(), scores[keep].cpu().numpy()
    valid = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])  # mediapipe drops negative sizes
    return [(boxes[(frame == n) & valid], kept[(frame == n) & valid]) for n in range(raw.shape[0])]


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    union = _area(box) + _area(others) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray,
                 threshold: float = SUPPRESSION_IOU) -> list[tuple[np.ndarray, float]]:
    """mediapipe's WEIGHTED suppression: the best remaining box takes every box overlapping it by more
    than `threshold` (itself included) and becomes their score-weighted mean; it keeps its own score."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    out = []
    while len(boxes):
        taken = _iou(boxes[0], boxes) > threshold
        taken[0] = True
        weights = scores[taken][:, None]
        out.append(((boxes[taken] * weights).sum(0) / weights.sum(), float(scores[0])))
        boxes, scores = boxes[~taken], scores[~taken]
    return out
