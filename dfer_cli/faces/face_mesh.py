"""MediaPipe's face mesh (468 face landmarks) as a torch module: the network of mediapipe 0.10.14's
face_landmark.tflite, its weights converted by tools/convert_face_landmark.py into
dfer_cli/assets/face_landmark.safetensors. Its input crop and output decoding are in faces/landmarks.py."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dfer_cli.faces.mediapipe_ops import ASSETS, load_converted, max_pool_2x2

ASSET = ASSETS / "face_landmark.safetensors"
SIZE = 192  # the model's input side
POINTS = 468


def _same_stride2(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv` (3x3, stride 2) with TFLite's 'SAME' padding on an even-sized map: windows start on even
    pixels, with a zero row and column after the bottom and right edges. Torch's symmetric padding
    would start them one pixel early; a 4x4 kernel whose first row and column are zero, padded by 1,
    gives TFLite's windows, without the padded copy of the input that F.pad makes (which costs about
    ten times the depthwise convolution itself on a CPU)."""
    return F.conv2d(x, F.pad(conv.weight, (1, 0, 1, 0)), conv.bias, 2, 1, 1, conv.groups)


class _Block(nn.Module):
    """Depthwise 3x3 then 1x1 conv, added to the input (max-pooled when the block strides, zero-padded
    in channels when it widens), then PReLU: the graph's repeating unit."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = self.pw(_same_stride2(self.dw, x))
            x = max_pool_2x2(x)
        else:
            out = self.pw(self.dw(x))
        out[:, :x.shape[1]] += x  # the skip, zero-padded in channels when the block widens
        return self.act(out)


class _Head(nn.Module):
    """One of the two outputs' branches off the 6x6 map: a strided block, `repeats` blocks, a 1x1 conv
    narrowing to 32 channels with PReLU, one more block, and a 3x3 conv over the whole 3x3 map."""

    def __init__(self, repeats: int, values: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(_Block(128, 128, 2), *(_Block(128, 128) for _ in range(repeats)))
        self.narrow, self.narrow_act = nn.Conv2d(128, 32, 1), nn.PReLU(32)
        self.last = _Block(32, 32)
        self.out = nn.Conv2d(32, values, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.narrow_act(self.narrow(self.blocks(x))))
        return self.out(x).flatten(1)


class FaceMesh(nn.Module):
    """The network of face_landmark.tflite ("facemesh-lite"), layer for layer. Modules register their
    parameters in the order the TFLite graph runs them, trunk first, then the landmark branch, then the
    face-presence branch; tools/convert_face_landmark.py fills them in that order.

    Input: (N, 3, 192, 192) RGB in [0, 1], best channels-last in memory. Output: (N, 468, 3) x, y, z
    in pixels of the input (z relative, in the same scale), and (N,) face-presence logits.
    """

    _trunk = ((16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1),
              (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2), (128, 128, 1),
              (128, 128, 1))

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_act = nn.Conv2d(3, 16, 3, 2, 1), nn.PReLU(16)
        self.blocks = nn.Sequential(*(_Block(*w) for w in self._trunk))
        self.mesh = _Head(2, POINTS * 3)
        self.presence = _Head(0, 1)

    def _large_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[:6](self.stem_act(_same_stride2(self.stem, x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # On a CPU, the 96x96 and 48x48 maps (stem and first six blocks) go 4 frames at a time: a batch's
        # maps outgrow the caches, and each op then waits on memory (2-3x slower at batch 64). The
        # smaller maps after them take the whole batch at once, which saves per-op overhead.
        parts = x.split(4) if x.device.type == "cpu" else [x]
        x = self.blocks[6:](torch.cat([self._large_maps(part) for part in parts]))
        return self.mesh(x).view(-1, POINTS, 3), self.presence(x)[:, 0]


def load(path: Path | None = None) -> FaceMesh:
    """The network with its converted weights (stored fp16, as in the .tflite; computed in fp32)."""
    net = load_converted(FaceMesh(), path or ASSET, "face-landmark", "tools/convert_face_landmark.py")
    # Channels-last: on a CPU, oneDNN's depthwise and 1x1 convolutions run about 3 times faster on it.
    return net.to(memory_format=torch.channels_last)
