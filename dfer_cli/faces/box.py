"""Face boxes: the Box type, its overlap, and the square regions cropped from frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """A box in pixels; x1, y1 are exclusive. `score` is the detector's confidence, 0 for a box that
    was not detected but filled in."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def clipped(self, frame_size: tuple[int, int]) -> Box:
        """The part of the box inside a frame of (width, height): a face cut by the frame's edge, where
        the detector's box runs past it."""
        width, height = frame_size
        return Box(min(max(self.x0, 0.0), width), min(max(self.y0, 0.0), height), min(max(self.x1, 0.0), width),
                   min(max(self.y1, 0.0), height), self.score)

    def iou(self, other: Box) -> float:
        inter = Box(max(self.x0, other.x0), max(self.y0, other.y0), min(self.x1, other.x1),
                    min(self.y1, other.y1)).area
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def pair_by_overlap(boxes: Sequence[Box], others: Sequence[Box], min_iou: float) -> dict[int, int]:
    """Each of `boxes` paired with at most one of `others`, and the other way round, best overlaps first;
    a pair overlapping less than `min_iou` is left out. Box index -> its other's index."""
    pairs = sorted(((b.iou(o), bi, oi) for bi, b in enumerate(boxes) for oi, o in enumerate(others)), reverse=True)
    paired: dict[int, int] = {}
    taken: set[int] = set()
    for overlap, bi, oi in pairs:
        if overlap < min_iou:
            break
        if bi not in paired and oi not in taken:
            paired[bi] = oi
            taken.add(oi)
    return paired


def _fit(start: float, side: float, limit: int) -> float:
    """Shift a span into [0, limit]; one longer than that is placed to cover it, as near as it can stay."""
    return float(np.clip(start, min(0.0, limit - side), max(0.0, limit - side)))


def square_box(box: Box, frame_size: tuple[int, int], margin: float = 0.0) -> Box:
    """The square crop for a face box: centred on it, the shorter side grown to the
    longer, then `margin` of the side added on every side; shifted to lie inside the frame (width,
    height) where it fits, since an off-centre face is closer to the training crops than black borders.
    Where it is larger than the frame, the crop will be padded with black."""
    w, h = frame_size
    side = max(box.x1 - box.x0, box.y1 - box.y0) * (1 + 2 * margin)
    cx, cy = box.center
    x0, y0 = _fit(cx - side / 2, side, w), _fit(cy - side / 2, side, h)
    return Box(x0, y0, x0 + side, y0 + side, box.score)


def union_box(boxes: Sequence[Box], frame_size: tuple[int, int]) -> Box:
    """MAFW's rule, as its reference preprocessing applies it: the square around all faces of the
    frame, no margin; with no face, a central square whose side is half the frame's shorter side (score 0)."""
    w, h = frame_size
    if not boxes:
        half = min(w, h) / 4
        return Box(w / 2 - half, h / 2 - half, w / 2 + half, h / 2 + half, 0.0)
    union = Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes),
                max(b.y1 for b in boxes), max(b.score for b in boxes))
    return square_box(union, frame_size)
