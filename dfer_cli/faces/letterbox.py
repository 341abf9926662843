"""BlazeFace's input as mediapipe 0.10.14 makes it: a region of a frame letterboxed into the network's
square tensor (ImageToTensor with keep_aspect_ratio and BORDER_ZERO, into [-1, 1])."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dfer_cli.faces.mediapipe_ops import SUBPIXEL, axis_taps, blend, to_levels
from dfer_cli.runtime import registry


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
    """Per output pixel: the two source indices (2, count), clamped, and their integer weights out of 32,
    zero for a source outside the frame (BORDER_ZERO)."""
    fixed = np.rint((start + step * np.arange(count, dtype=np.float64)) * SUBPIXEL).astype(np.int64)
    low, high, w_low, w_high = (t.numpy() for t in axis_taps(torch.from_numpy(fixed), limit, zero_border=True))
    return np.stack([low, high]), np.stack([w_low, w_high])


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
    per axis), rounded back to uint8 before scaling."""
    n, height, width = frames.shape[:3]
    index, weight, (rows, cols) = _sampling(box, height, width, frames.device)
    taps = frames.reshape(n, -1, 3).index_select(1, index).view(n, 4, -1)
    pixels = to_levels(blend((taps[:, k], weight[k]) for k in range(4)))
    out = torch.full((n, box.size, box.size, 3), -1.0, device=frames.device)
    window = out[:, rows, cols]
    torch.mul(pixels.view(window.shape), 2.0 / 255.0, out=window).sub_(1.0)
    return out.permute(0, 3, 1, 2)
