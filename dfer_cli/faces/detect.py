"""Batched face detection: BlazeFace short range, full range where it finds nothing, and over tiles for
faces too small to be seen whole-frame; one detector per process."""

from __future__ import annotations

import math

import numpy as np
import torch

from dfer_cli.faces import blazeface
from dfer_cli.faces.anchors import FULL_RANGE, SHORT_RANGE, AnchorGrid, decode, weighted_nms
from dfer_cli.faces.box import Box
from dfer_cli.faces.config import FaceConfig
from dfer_cli.faces.letterbox import Letterbox, letterbox
from dfer_cli.runtime import registry
from dfer_cli.runtime.pool import single_thread

# A list of (x0, y0, x1, y1) pixel boxes with their scores, best first, per frame.
Found = list[tuple[np.ndarray, float]]

# Tiles: squares of 0.6 of the frame's shorter side (8 tiles on a 16:9 frame), overlapping by a quarter
# of their side so that a face narrower than the overlap lies whole in some tile. The full-range model
# then sees faces 3x larger than whole-frame: measured on GRID faces pasted into 1280x720 frames, it
# finds 44-px faces in 72/72 frames, 27-px ones in 72/72, 22-px ones in 66/72 (tiles of the whole
# shorter side: 72, 62 and 24 of 72). Below _MIN_TILE px, tiles see no more than the whole frame.
_TILE_FRACTION, _TILE_OVERLAP, _MIN_TILE = 0.6, 0.25, 96
# Tiles for faces of a known size (the faces beside those the whole frame showed) are this many times
# their side: the full-range model then sees them at about 40 px, and a row of faces as wide as the
# frame is high takes a few tiles instead of two rows of small ones (six GRID faces in a row, 2160x288:
# 10 tiles instead of 34).
_FACES_PER_TILE = 5


def tiles(width: int, height: int, face: float | None = None) -> list[tuple[int, int, int]]:
    """(x0, y0, side) of the tiles covering a frame; [] for a frame too small to gain from them. With
    `face` (px), tiles for faces about that wide: larger, up to the frame's shorter side."""
    side = int(min(width, height) * _TILE_FRACTION)
    if side < _MIN_TILE:
        return []
    if face is not None:
        side = int(np.clip(_FACES_PER_TILE * face, side, min(width, height)))
    step = side * (1 - _TILE_OVERLAP)

    def starts(length: int) -> np.ndarray:
        count = math.ceil((length - side) / step) + 1
        return np.linspace(0, length - side, count).round().astype(int)

    return [(int(x), int(y), side) for y in starts(height) for x in starts(width)]


class BlazeFace:
    """Faces in batches of RGB frames (N, H, W, 3) uint8 of one size, on `device`, with mediapipe's
    pre- and post-processing. Frames stay on the CPU; only the models' small input tensors cross to
    the device, and only the anchors that pass the score threshold come back."""

    def __init__(self, short_score: float = 0.5, full_score: float = 0.6, device: str | torch.device = "cpu",
                 batch_size: int | None = None) -> None:
        self.device = torch.device(device)
        # Frames per network call on a CPU, measured: 16 for short range (its large maps are split into
        # 8-frame chunks inside; larger calls save per-op overhead), 4 for full range (beats 1, 8 and 16).
        short, full = (16, 4) if self.device.type == "cpu" else (256, 256)
        self.batch_size = {SHORT_RANGE: batch_size or short, FULL_RANGE: batch_size or full}
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
        step = self.batch_size[grid]
        for i in range(0, len(frames), step):
            x = letterbox(frames[i:i + step], box).to(self.device)
            with torch.inference_mode():
                raw, logits = self.models[grid](x)
            for boxes, scores in decode(raw, logits, grid, self.centres[grid], self.min_score[grid]):
                out.append([(box.to_pixels(b[None])[0], s) for b, s in weighted_nms(boxes, scores)])
        return out

    def detect(self, frames: np.ndarray) -> list[Found]:
        """Short range on every frame, full range where it found nothing."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        with single_thread(self.device):
            found = self._run(SHORT_RANGE, pixels)
            missed = [i for i, f in enumerate(found) if not f]
            if missed:
                for i, f in zip(missed, self._run(FULL_RANGE, pixels[missed]), strict=True):
                    found[i] = f
        return found

    def detect_tiles(self, frames: np.ndarray, face: float | None = None) -> list[Found]:
        """The full-range model over each frame's tiles (`tiles`, with `face`); a face seen in overlapping
        tiles is merged (weighted, as mediapipe merges anchors). The tiles of a few frames go through the
        model together, cut out as frames of their own: one frame's tiles cost one call, not one each."""
        layout = tiles(frames.shape[2], frames.shape[1], face)
        if not layout:
            return [[] for _ in frames]
        per_call = max(1, 64 // len(layout))  # frames whose tiles are cut out at once
        out = []
        with single_thread(self.device):
            for first in range(0, len(frames), per_call):
                part = frames[first:first + per_call]
                cut = torch.from_numpy(np.stack([f[y:y + side, x:x + side] for f in part for x, y, side in layout]))
                found = self._run(FULL_RANGE, cut)
                for n in range(len(part)):
                    hits = [(b + np.array([x, y, x, y]), score) for (x, y, _), tile in
                            zip(layout, found[n * len(layout):(n + 1) * len(layout)], strict=True) for b, score in tile]
                    out.append(weighted_nms(np.array([b for b, _ in hits]), np.array([s for _, s in hits]))
                               if hits else [])
        return out


class FaceDetector:
    """BlazeFace short and full range, batched over frames, on `device`.

    The networks (about 0.6 M parameters) are loaded on first use and never pickled: a copy sent to a
    worker process loads its own there. Keep one detector per process and reuse it.
    """

    def __init__(self, config: FaceConfig | None = None, device: str = "cpu") -> None:
        self.config, self.device = config or FaceConfig(), device
        self._model = None

    def __reduce__(self) -> tuple:
        return FaceDetector, (self.config, self.device)

    def _blazeface(self):
        if self._model is None:
            self._model = BlazeFace(self.config.min_confidence, self.config.min_confidence_full, self.device)
        return self._model

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Faces in one RGB frame (H, W, 3) uint8, in pixels, best first; [] when there is none."""
        return self.detect_batch(frame[None])[0]

    def detect_batch(self, frames: np.ndarray) -> list[list[Box]]:
        """Faces in each of N RGB frames of one size (N, H, W, 3) uint8: the whole-frame passes."""
        return [_boxes(f) for f in self._blazeface().detect(frames)]

    def detect_small(self, frames: np.ndarray, face: float | None = None) -> list[list[Box]]:
        """Faces in each frame found over tiles of it: slower, for faces too small for detect_batch;
        with `face` (px), over tiles for faces about that wide (see `tiles`)."""
        return [_boxes(f) for f in self._blazeface().detect_tiles(frames, face)]

    def close(self) -> None:
        self._model = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _boxes(found) -> list[Box]:
    return [Box(*map(float, b), score=s) for b, s in found]


def process_detector(config: FaceConfig) -> FaceDetector:
    """One detector per configuration for this process, kept for its lifetime (runtime/registry.py):
    worker pools call this per task instead of reloading the networks."""
    return registry.get("face detector", config, lambda: FaceDetector(config))
