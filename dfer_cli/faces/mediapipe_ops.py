"""The operations that the two MediaPipe ports (BlazeFace, the face mesh) share: TFLite's max pooling,
OpenCV's fixed-point bilinear arithmetic (the letterbox and the landmark crop), and loading the converted
weights."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from dfer_cli.errors import DferError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SUBPIXEL = 32  # OpenCV's warp quantizes sample positions to 1/32 pixel (INTER_BITS = 5)
_BITS = 5


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling, stride 2, of an even-sized map: F.max_pool2d also computes the argmax on a CPU."""
    return torch.maximum(torch.maximum(x[:, :, ::2, ::2], x[:, :, ::2, 1::2]),
                         torch.maximum(x[:, :, 1::2, ::2], x[:, :, 1::2, 1::2]))


def axis_taps(fixed: torch.Tensor, length: int, zero_border: bool = False) -> tuple[torch.Tensor, ...]:
    """Positions along one axis in 32nds of a pixel (integers, rounded as OpenCV rounds them) -> each
    one's two source pixels, clamped into [0, length), and their weights out of 32 (float). OpenCV's
    BORDER_REPLICATE keeps the weight of a source outside the frame (it reads the edge pixel);
    BORDER_ZERO (`zero_border`) drops it."""
    low, frac = fixed >> _BITS, fixed & (SUBPIXEL - 1)  # floor, negative positions included
    high = low + 1
    w_low, w_high = (SUBPIXEL - frac).float(), frac.float()
    if zero_border:
        w_low, w_high = w_low * ((low >= 0) & (low < length)), w_high * ((high >= 0) & (high < length))
    return low.clamp(0, length - 1), high.clamp_(0, length - 1), w_low, w_high


def blend(taps: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sum of tap x weight over `taps`, in float32: pixels and weights are integers, the sums stay below
    2^24, so every sum is exact whatever the order. A float tap is used as the sum's buffer."""
    total = None
    for tap, weight in taps:
        if total is None:
            total = tap.mul_(weight) if tap.is_floating_point() else tap * weight
        else:
            total.addcmul_(tap, weight)
    return total


def to_levels(total: torch.Tensor) -> torch.Tensor:
    """Sums of pixels weighted out of 32 per axis rounded back to pixel levels as OpenCV does (half up),
    in place."""
    return total.add_(SUBPIXEL ** 2 // 2).mul_(1 / SUBPIXEL ** 2).floor_()


def load_converted(net: nn.Module, path: Path, what: str, converter: str) -> nn.Module:
    """`net` with its converted weights from `path` (stored fp16, as in the .tflite; computed in fp32),
    in eval mode without gradients; `what` and `converter` name them when the file is missing."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise DferError(f"{path}: the {what} weights are missing ({converter} makes them)")
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return net.eval().requires_grad_(False)
