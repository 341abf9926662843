"""Find, follow and crop the face.

Detection is MediaPipe's BlazeFace (bundled with mediapipe 0.10.14, so nothing is downloaded): the
short-range model for close faces, the full-range one for frames where it finds nothing. The main face
is the largest and most central one over the clip; it is followed by overlap so that the crop never
jumps to another person, and frames where it was missed take a box interpolated from their neighbours.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class FaceConfig:
    min_confidence: float = 0.5
    # A clip whose face is seen in fewer of its frames than this is treated as faceless: a detection in
    # one or two frames out of sixteen is far more often a false positive than a face.
    min_presence: float = 0.25
    # Growth of the square on every side, as a fraction of its side. BlazeFace's box runs from the
    # mid-forehead to just under the chin and stops at the cheeks; DFEW's aligned faces (what most
    # released checkpoints saw) show the whole face outline with some hair and background, which 0.1
    # (a square 1.2 times the box) resembles. 0 is the spec's rule for MAFW (square, nothing more).
    margin: float = 0.1
    # Overlap with a face's previous box needed to count as the same face.
    min_iou: float = 0.2
    # "main": the main face, followed through the clip. "union": MAFW's rule (the box around all faces
    # of each frame, no margin).
    policy: Literal["main", "union"] = "main"


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

    def iou(self, other: Box) -> float:
        inter = Box(max(self.x0, other.x0), max(self.y0, other.y0), min(self.x1, other.x1),
                    min(self.y1, other.y1)).area
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


# mediapipe 0.10.14 calls a protobuf API that protobuf 4 deprecates, on every detection; harmless, and
# not the user's business.
warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """MediaPipe's TFLite and absl start-up chatter goes straight to file descriptor 2, where it would
    bury dfer's own one-line messages."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceDetector:
    """BlazeFace short- and full-range, for one thread.

    The MediaPipe graphs are built on first use and never pickled: a copy sent to a worker process
    builds its own there. Building costs about a second (mostly importing mediapipe), so keep one
    detector per process and reuse it.
    """

    def __init__(self, config: FaceConfig | None = None) -> None:
        self.config = config or FaceConfig()
        self._models: tuple = ()

    def __reduce__(self) -> tuple:
        return FaceDetector, (self.config,)

    def _build(self) -> tuple:
        with _quiet_native_stderr():
            from mediapipe.python.solutions import face_detection

            # Short range first: 3x faster than full range, which runs only on the frames it misses.
            models = tuple(face_detection.FaceDetection(model_selection=m,
                                                        min_detection_confidence=self.config.min_confidence)
                           for m in (0, 1))
            # The graphs log as they start, on their first frame: let that happen here, silenced.
            for model in models:
                model.process(np.zeros((64, 64, 3), np.uint8))
        return models

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Faces in one RGB frame (H, W, 3) uint8, in pixels; [] when there is none."""
        if not self._models:
            self._models = self._build()
        frame = np.ascontiguousarray(frame)
        h, w = frame.shape[:2]
        for model in self._models:
            found = model.process(frame).detections
            if found:
                return [_to_box(d, w, h) for d in found]
        return []

    def close(self) -> None:
        for model in self._models:
            model.close()
        self._models = ()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_box(detection, w: int, h: int) -> Box:
    rel = detection.location_data.relative_bounding_box
    return Box(rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h,
               float(detection.score[0]))


_process_detectors: dict[FaceConfig, FaceDetector] = {}


def process_detector(config: FaceConfig) -> FaceDetector:
    """One detector per configuration for this process, kept for its lifetime: worker pools call
    this per task instead of rebuilding the MediaPipe graphs."""
    if config not in _process_detectors:
        _process_detectors[config] = FaceDetector(config)
    return _process_detectors[config]


def _prominence(box: Box, frame_size: tuple[int, int]) -> float:
    """Side length (not area, so that being seen in more frames outweighs one huge box), discounted by
    up to half for the distance from the frame centre."""
    w, h = frame_size
    cx, cy = box.center
    off = np.hypot((cx - w / 2) / (w / 2), (cy - h / 2) / (h / 2)) / np.sqrt(2)
    return np.sqrt(box.area) * (1.0 - 0.5 * min(off, 1.0))


def track_main_face(detections: Sequence[Sequence[Box]], frame_size: tuple[int, int],
                    min_iou: float = 0.2) -> list[Box | None]:
    """The main face in each frame, or None where it was not seen. `frame_size` is (width, height).

    Every face is followed through the clip, linked frame to frame by overlap with its latest box (best
    overlaps first); the main face is the one with the most prominence summed over the clip (seen
    often, large, central). So someone passing close to the camera for a frame does not take the crop
    over, and a frame where only that someone is seen gets None rather than their box.
    """
    tracks: list[dict[int, Box]] = []
    for i, boxes in enumerate(detections):
        latest = [t[max(t)] for t in tracks]
        pairs = sorted(((b.iou(last), bi, ti) for bi, b in enumerate(boxes) for ti, last in enumerate(latest)),
                       reverse=True)
        linked_boxes: set[int] = set()
        linked_tracks: set[int] = set()
        for overlap, bi, ti in pairs:
            if overlap < min_iou:
                break
            if bi not in linked_boxes and ti not in linked_tracks:
                tracks[ti][i] = boxes[bi]
                linked_boxes.add(bi)
                linked_tracks.add(ti)
        tracks.extend({i: b} for bi, b in enumerate(boxes) if bi not in linked_boxes)
    if not tracks:
        return [None] * len(detections)
    main = max(tracks, key=lambda t: sum(_prominence(b, frame_size) for b in t.values()))
    return [main.get(i) for i in range(len(detections))]


def fill_missing(boxes: Sequence[Box | None]) -> list[Box] | None:
    """Frames without a box get one interpolated linearly between their neighbours' (copied from the
    nearest at the ends), with score 0. None when no frame has a box."""
    seen = [i for i, b in enumerate(boxes) if b is not None]
    if not seen:
        return None
    coords = np.array([[boxes[i].x0, boxes[i].y0, boxes[i].x1, boxes[i].y1] for i in seen])
    filled = np.stack([np.interp(np.arange(len(boxes)), seen, coords[:, k]) for k in range(4)], axis=1)
    return [b if b is not None else Box(*map(float, filled[i]), score=0.0) for i, b in enumerate(boxes)]


def _fit(start: float, side: float, limit: int) -> float:
    """Shift a span into [0, limit]; one longer than that is placed to cover it, as near as it can stay."""
    return float(np.clip(start, min(0.0, limit - side), max(0.0, limit - side)))


def square_box(box: Box, frame_size: tuple[int, int], margin: float = 0.0) -> Box:
    """The square crop for a face box (spec section 5): centred on it, the shorter side grown to the
    longer, then `margin` of the side added on every side; shifted to lie inside the frame (width,
    height) where it fits, since an off-centre face is closer to the training crops than black borders.
    Where it is larger than the frame, the crop will be padded with black."""
    w, h = frame_size
    side = max(box.x1 - box.x0, box.y1 - box.y0) * (1 + 2 * margin)
    cx, cy = box.center
    x0, y0 = _fit(cx - side / 2, side, w), _fit(cy - side / 2, side, h)
    return Box(x0, y0, x0 + side, y0 + side, box.score)


def union_box(boxes: Sequence[Box], frame_size: tuple[int, int]) -> Box:
    """MAFW's rule (spec section 5): the square around all faces of the frame, no margin; with no face,
    a central square whose side is half the frame's shorter side (score 0)."""
    w, h = frame_size
    if not boxes:
        half = min(w, h) / 4
        return Box(w / 2 - half, h / 2 - half, w / 2 + half, h / 2 + half, 0.0)
    union = Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes),
                max(b.y1 for b in boxes), max(b.score for b in boxes))
    return square_box(union, frame_size)


def crop_faces(frames: np.ndarray, boxes: Sequence[Box], size: int) -> np.ndarray:
    """Each frame's box (square, in pixels) cut out, black where it reaches past the frame, resized to
    size x size: (N, size, size, 3) uint8. The resize is PIL's bilinear, the reference's test transform
    (it averages when shrinking, where cv2's INTER_LINEAR would alias)."""
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for k, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        h, w = frame.shape[:2]
        x0, y0 = round(box.x0), round(box.y0)
        side = max(1, round(box.x1 - box.x0))
        patch = np.zeros((side, side, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
        out[k] = np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))
    return out


@dataclass(frozen=True)
class FaceTrack:
    crops: np.ndarray | None  # (N, S, S, 3) uint8; None when the clip has no face
    boxes: list[Box] | None  # the square region cropped from each frame, in pixels
    found: int  # frames where the face was detected (the rest were filled in)
    total: int


def faces_for_clip(frames: np.ndarray, detector: FaceDetector, config: FaceConfig, size: int) -> FaceTrack:
    """The face of a clip's RGB frames (N, H, W, 3) uint8, cropped square to size x size.

    crops is None when the face was seen in fewer than `config.min_presence` of the frames: the caller
    reports "no face" rather than classify whatever else the frames hold.
    """
    h, w = frames.shape[1:3]
    detections = [detector.detect(f) for f in frames]
    if config.policy == "union":
        found = sum(bool(d) for d in detections)
        squares = [union_box(d, (w, h)) for d in detections]
    else:
        tracked = track_main_face(detections, (w, h), config.min_iou)
        found = sum(b is not None for b in tracked)
        filled = fill_missing(tracked) or []
        squares = [square_box(b, (w, h), config.margin) for b in filled]
    if found == 0 or found < config.min_presence * len(frames):
        return FaceTrack(None, None, found, len(frames))
    return FaceTrack(crop_faces(frames, squares, size), squares, found, len(frames))
