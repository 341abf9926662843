"""Find, follow and crop the face.

Detection is MediaPipe's BlazeFace (bundled with mediapipe 0.10.14, so nothing is downloaded): the
short-range model for close faces, the full-range one for frames where it finds nothing. The main face
is the largest and most central one; it is followed through the clip by overlap so that the crop never
jumps to another person, and frames where it was missed take a box interpolated from their neighbours.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FaceConfig:
    min_confidence: float = 0.6
    # A clip whose main face is seen in fewer of its frames than this is treated as faceless: a
    # detection in one or two frames out of sixteen is far more often a false positive than a face.
    min_presence: float = 0.25
    # Extra growth of the square box on every side, as a fraction of its side. 0 is the spec's
    # rule (square by growing the shorter side, nothing more), which MAFW's training crops followed.
    margin: float = 0.0
    # Overlap with the previous box needed to count as the same face.
    min_iou: float = 0.2


@dataclass(frozen=True)
class Box:
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

    def iou(self, other: Box) -> float:
        inter = Box(max(self.x0, other.x0), max(self.y0, other.y0), min(self.x1, other.x1),
                    min(self.y1, other.y1)).area
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

# mediapipe 0.10.14 calls a protobuf API that protobuf 4 deprecates, once per process, on its first
# detection; harmless, and not the user's business.
warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """MediaPipe's TFLite, absl and protobuf start-up chatter goes straight to file descriptor 2,
    where it would bury dfer's own one-line messages."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceDetector:
    """MediaPipe detectors, built once per process (they are not picklable) and reused."""

    def __init__(self, config: FaceConfig | None = None) -> None:
        self.config = config or FaceConfig()
        with _quiet_native_stderr():
            from mediapipe.python.solutions import face_detection

            self._short = face_detection.FaceDetection(model_selection=0,
                                                       min_detection_confidence=self.config.min_confidence)
            self._full = face_detection.FaceDetection(model_selection=1,
                                                      min_detection_confidence=self.config.min_confidence)
            # The graphs log their start-up on first use: start them here, silenced.
            blank = np.zeros((64, 64, 3), np.uint8)
            self._short.process(blank)
            self._full.process(blank)

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Faces in one RGB frame (H, W, 3) uint8, in pixels."""
        frame = np.ascontiguousarray(frame)
        for detector in (self._short, self._full):
            found = detector.process(frame).detections
            if found:
                return [self._box(d, frame.shape) for d in found]
        return []

    @staticmethod
    def _box(detection, shape: tuple[int, ...]) -> Box:
        h, w = shape[:2]
        rel = detection.location_data.relative_bounding_box
        return Box(rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h,
                   float(detection.score[0]))

    def close(self) -> None:
        self._short.close()
        self._full.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prominence(box: Box, frame_size: tuple[int, int]) -> float:
    """Side length (so that presence over frames outweighs one huge box), discounted by the distance
    from the frame centre (in half-diagonals)."""
    w, h = frame_size
    cx, cy = box.center
    off = np.hypot((cx - w / 2) / (w / 2), (cy - h / 2) / (h / 2)) / np.sqrt(2)
    return np.sqrt(box.area) * (1.0 - 0.5 * off)


def track_main_face(detections: list[list[Box]], frame_size: tuple[int, int],
                    min_iou: float = 0.2) -> list[Box | None]:
    """The main face in each frame, or None where it was not seen.

    Detections are linked into tracks by overlap with each track's latest box; the main face is the
    track with the most prominence summed over the clip (seen often, large, central), so someone
    passing close to the camera for a frame does not take the crop over.
    """
    tracks: list[dict[int, Box]] = []
    for i, boxes in enumerate(detections):
        free = list(tracks)
        for box in sorted(boxes, key=lambda b: -b.area):
            best = max(free, key=lambda t: box.iou(t[max(t)]), default=None)
            if best is not None and box.iou(best[max(best)]) >= min_iou:
                best[i] = box
                free.remove(best)
            else:
                tracks.append({i: box})
    if not tracks:
        return [None] * len(detections)
    main = max(tracks, key=lambda t: sum(_prominence(b, frame_size) for b in t.values()))
    return [main.get(i) for i in range(len(detections))]


def fill_missing(boxes: list[Box | None]) -> list[Box] | None:
    """Frames without a box get one interpolated between their neighbours (copied at the ends)."""
    seen = [i for i, b in enumerate(boxes) if b is not None]
    if not seen:
        return None
    coords = np.array([[boxes[i].x0, boxes[i].y0, boxes[i].x1, boxes[i].y1] for i in seen])
    filled = np.stack([np.interp(np.arange(len(boxes)), seen, coords[:, k]) for k in range(4)], axis=1)
    return [b if b is not None else Box(*filled[i], score=0.0) for i, b in enumerate(boxes)]


def square_box(box: Box, margin: float = 0.0) -> Box:
    """Square around the box's centre (the shorter side grown, spec section 5), enlarged by `margin`
    on every side."""
    cx, cy = box.center
    half = max(box.x1 - box.x0, box.y1 - box.y0) * (0.5 + margin)
    return Box(cx - half, cy - half, cx + half, cy + half, box.score)


def union_box(boxes: list[Box], frame_size: tuple[int, int]) -> Box:
    """MAFW's rule: the union of all faces in the frame, made square; with no face, a central square
    whose side is half the frame's shorter side."""
    w, h = frame_size
    if not boxes:
        half = min(w, h) / 4
        return Box(w / 2 - half, h / 2 - half, w / 2 + half, h / 2 + half, 0.0)
    return square_box(Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes),
                          max(b.x1 for b in boxes), max(b.y1 for b in boxes)))


def crop(frame: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The box cut out of the frame (black where it reaches past the edges), resized to size x size."""
    h, w = frame.shape[:2]
    x0, y0 = int(round(box.x0)), int(round(box.y0))
    side = max(1, int(round(box.x1 - box.x0)))
    out = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)


@dataclass
class FaceTrack:
    crops: np.ndarray | None  # (N, S, S, 3) uint8; None when no frame had a face
    boxes: list[Box] | None
    found: int  # frames where the main face was detected (the rest were filled)
    total: int


def faces_for_clip(frames: np.ndarray, detector: FaceDetector, config: FaceConfig, size: int) -> FaceTrack:
    """The main face of a clip's frames (N, H, W, 3), cropped square to size x size."""
    h, w = frames.shape[1:3]
    tracked = track_main_face([detector.detect(f) for f in frames], (w, h), config.min_iou)
    found = sum(b is not None for b in tracked)
    boxes = fill_missing(tracked)
    if boxes is None or found < config.min_presence * len(frames):
        return FaceTrack(None, None, found, len(frames))
    crops = np.stack([crop(f, square_box(b, config.margin), size) for f, b in zip(frames, boxes, strict=True)])
    return FaceTrack(crops, boxes, found, len(frames))
