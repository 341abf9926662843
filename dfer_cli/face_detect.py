"""Both BlazeFace models on one device, batched over frames, with mediapipe's pre- and post-processing:
the short-range model on every frame, the full-range one on the frames where it finds nothing. A third,
optional pass looks for faces too small for either (a wide shot, a video-call gallery): it runs the
full-range model over overlapping square tiles of the frame.

Frames stay on the CPU; only the model's small input tensors cross to the device, and only the
anchors that pass the score threshold come back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from . import blazeface
from .blazeface_io import FULL_RANGE, SHORT_RANGE, AnchorGrid, Letterbox, decode, letterbox, weighted_nms

# A list of (x0, y0, x1, y1) pixel boxes with their scores, best first, per frame.
Found = list[tuple[np.ndarray, float]]

# Tiles: squares of 0.6 of the frame's shorter side (8 tiles on a 16:9 frame), overlapping by a quarter
# of their side so that a face narrower than the overlap lies whole in some tile. The full-range model
# then sees faces 3x larger than whole-frame: measured on GRID faces pasted into 1280x720 frames, it
# finds 44-px faces in 72/72 frames, 27-px ones in 72/72, 22-px ones in 66/72 (tiles of the whole
# shorter side: 72, 62 and 24 of 72). Below _MIN_TILE px, tiles see no more than the whole frame.
_TILE_FRACTION, _TILE_OVERLAP, _MIN_TILE = 0.6, 0.25, 96


def tiles(width: int, height: int) -> list[tuple[int, int, int]]:
    """(x0, y0, side) of the tiles covering a frame; [] for a frame too small to gain from them."""
    side = int(min(width, height) * _TILE_FRACTION)
    if side < _MIN_TILE:
        return []
    step = side * (1 - _TILE_OVERLAP)

    def starts(length: int) -> np.ndarray:
        count = math.ceil((length - side) / step) + 1
        return np.linspace(0, length - side, count).round().astype(int)

    return [(int(x), int(y), side) for y in starts(height) for x in starts(width)]


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """The networks' tensors are small: on a CPU, splitting each op over threads costs more in
    synchronisation than it saves (measured on 2 busy cores: 3-30x slower wall time with 2 threads)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class BlazeFace:
    """Faces in batches of RGB frames (N, H, W, 3) uint8 of one size, on `device`."""

    def __init__(self, short_score: float = 0.5, full_score: float = 0.6, device: str | torch.device = "cpu",
                 batch_size: int | None = None) -> None:
        self.device = torch.device(device)
        # On a CPU, small batches keep the activations in cache (measured: 4 beats 1, 8 and 32).
        self.batch_size = batch_size or (4 if self.device.type == "cpu" else 256)
        self.min_score = {SHORT_RANGE: short_score, FULL_RANGE: full_score}
        # Channels-last: oneDNN's depthwise convolutions run 2-3x faster in it on a CPU.
        self.models = {grid: blazeface.load(net).to(self.device, memory_format=torch.channels_last)
                       for grid, net in ((SHORT_RANGE, blazeface.ShortRange), (FULL_RANGE, blazeface.FullRange))}
        self.centres = {grid: grid.centres().to(self.device) for grid in self.models}

    def _run(self, grid: AnchorGrid, frames: torch.Tensor, region: tuple[int, int, int] | None = None) -> list[Found]:
        """One model over whole frames, or over one square (x0, y0, side) of each: boxes in pixels."""
        x0, y0, side = region or (0, 0, 0)
        box = Letterbox(side or frames.shape[2], side or frames.shape[1], grid.size, x0, y0)
        out: list[Found] = []
        for i in range(0, len(frames), self.batch_size):
            x = letterbox(frames[i:i + self.batch_size], box).to(self.device)
            with torch.inference_mode():
                raw, logits = self.models[grid](x)
            for boxes, scores in decode(raw, logits, grid, self.centres[grid], self.min_score[grid]):
                out.append([(box.to_pixels(b[None])[0], s) for b, s in weighted_nms(boxes, scores)])
        return out

    def detect(self, frames: np.ndarray) -> list[Found]:
        """Short range on every frame, full range where it found nothing."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        with _one_cpu_thread(self.device):
            found = self._run(SHORT_RANGE, pixels)
            missed = [i for i, f in enumerate(found) if not f]
            if missed:
                for i, f in zip(missed, self._run(FULL_RANGE, pixels[missed]), strict=True):
                    found[i] = f
        return found

    def detect_tiles(self, frames: np.ndarray) -> list[Found]:
        """The full-range model over each frame's tiles; a face seen in overlapping tiles is merged
        (weighted, as mediapipe merges anchors)."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        with _one_cpu_thread(self.device):
            per_tile = [self._run(FULL_RANGE, pixels, tile) for tile in tiles(pixels.shape[2], pixels.shape[1])]
        out = []
        for n in range(len(frames)):
            hits = [hit for found in per_tile for hit in found[n]]
            out.append(weighted_nms(np.array([b for b, _ in hits]), np.array([s for _, s in hits])) if hits else [])
        return out
