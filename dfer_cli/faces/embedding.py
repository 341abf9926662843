"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1: a 128-d embedding of a 150x150
aligned face chip, 99.38% on LFW) as a torch module. Weights converted from @vladmandic/face-api 1.7.15's
tfjs copy by tools/convert_face_embedding.py into dfer_cli/assets/face_embedding.safetensors.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfer_cli.errors import DferError
from dfer_cli.runtime.pool import single_thread

ASSET = Path(__file__).resolve().parents[1] / "assets" / "face_embedding.safetensors"
SIZE = 150  # the chip's side
DIMS = 128
# dlib's input_rgb_image: (pixel - mean) / 256 per channel (face-api divides by 255; dlib is the original,
# and its scale gives the embeddings nearer dlib's own, see tests/test_face_embedding.py).
MEAN_RGB = (122.782, 117.001, 104.298)
SCALE = 1 / 256
# Two faces are one person below this Euclidean distance between their embeddings: dlib's own threshold.
SAME_PERSON = 0.6


class _Residual(nn.Module):
    """Two 3x3 convolutions (each with its affine folded in), ReLU between and after the sum with the input.
    A strided one (`down`) starts with a 3x3 stride-2 'valid' convolution; the input, 2x2 average-pooled
    and zero-padded in channels, is added where the two maps overlap, as dlib's add_prev does (the
    convolution's map, a pixel smaller on odd sides, counts as zero past its bottom and right edges)."""

    def __init__(self, cin: int, cout: int, down: bool = False) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(out + x)
        skip = F.avg_pool2d(x, 2)
        pad_h, pad_w = skip.shape[2] - out.shape[2], skip.shape[3] - out.shape[3]
        out = F.pad(out, (0, pad_w, 0, pad_h))
        if out.shape[1] > skip.shape[1]:
            skip = F.pad(skip, (0, 0, 0, 0, 0, out.shape[1] - skip.shape[1]))
        return F.relu(out + skip)


class FaceEmbedding(nn.Module):
    """dlib's ResNet-29 metric network: 7x7/2 convolution, 3x3/2 max pooling, residual blocks of 32, 64,
    128 and 256 channels (the first of each but 32's strided), global average pooling, a 128x256 linear
    layer without bias. Input: (N, 3, 150, 150) RGB in [0, 255] (float); output (N, 128), not normalised:
    distances between outputs are dlib's face distances."""

    _layout = (("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
               ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
               ("conv64_3", 64, 64, False), ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False),
               ("conv128_2", 128, 128, False), ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False),
               ("conv256_2", 256, 256, False), ("conv256_down_out", 256, 256, True))
    names = ("conv32_down",) + tuple(name for name, *_ in _layout)

    def __init__(self) -> None:
        super().__init__()
        self.conv32_down = nn.Conv2d(3, 32, 7, 2, 0)
        self.blocks = nn.ModuleDict({name: _Residual(cin, cout, down) for name, cin, cout, down in self._layout})
        self.fc = nn.Linear(256, DIMS, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * SCALE
        x = F.max_pool2d(F.relu(self.conv32_down(x)), 3, 2)
        for block in self.blocks.values():
            x = block(x)
        return self.fc(x.mean((2, 3)))


def load(path: Path | None = None) -> FaceEmbedding:
    """The network with its converted weights (stored fp16, computed in fp32)."""
    from safetensors.torch import load_file

    path = path or ASSET
    if not path.is_file():
        raise DferError(f"{path}: the face-embedding weights are missing (tools/convert_face_embedding.py makes them)")
    net = FaceEmbedding()
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    # Channels-last: on a CPU, torch then runs every convolution in oneDNN; in NCHW at batch 1 it takes its
    # slow fallback for most of them (measured: 6x slower a face at batch 1).
    return net.to(memory_format=torch.channels_last).eval().requires_grad_(False)


class FaceEmbedder:
    """128-d embeddings of aligned 150x150 face chips (dfer_cli.faces.align), `batch_size` at a time, on
    `device`. The weights load on first use."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64, path: Path | None = None) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.path = path
        self._net: FaceEmbedding | None = None
        self._lock = threading.Lock()

    @property
    def net(self) -> FaceEmbedding:
        with self._lock:
            if self._net is None:
                self._net = load(self.path).to(self.device)
            return self._net

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) float32 embeddings."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (SIZE, SIZE, 3) or chips.dtype != np.uint8:
            raise DferError(f"face chips must be (N, {SIZE}, {SIZE}, 3) uint8 RGB, not {chips.shape} {chips.dtype}")
        out = []
        # One thread on a CPU, as for the detector: measured on 2 busy cores, 17 ms a face on one thread at
        # batch 1 and 64, against 310 and 50 ms on two.
        with torch.inference_mode(), single_thread(self.device):
            for start in range(0, len(chips), self.batch_size):
                x = torch.from_numpy(chips[start:start + self.batch_size]).to(self.device)
                # NHWC uint8 permuted is already channels-last in memory.
                out.append(self.net(x.permute(0, 3, 1, 2).float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, DIMS), np.float32)
