"""Find, follow and crop the face.

Detection is BlazeFace, mediapipe's face detector, as dfer's own torch port (face_detect.py; weights
shipped in the package, so nothing is downloaded): the short-range model for close faces, the
full-range one for frames where it finds nothing, and for clips where both find too little, the
full-range model again over tiles of the frame, for faces too small to be seen whole-frame. The main
face is the largest and most central one over the clip; it is followed by overlap so that the crop
never jumps to another person, and frames where it was missed take a box interpolated from their
neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from .box import Box, square_box, union_box
from .tracking import fill_missing, main_track, track_faces, track_main_face

__all__ = ["Box", "FaceConfig", "FaceDetector", "FaceTrack", "crop_faces", "faces_for_clip", "fill_missing",
           "process_detector", "square_box", "track_main_face", "union_box"]


@dataclass(frozen=True)
class FaceConfig:
    # Score thresholds of the short- and full-range models: mediapipe 0.10.14's own (its Python API
    # never passed min_detection_confidence on, so these are what dfer has always used).
    min_confidence: float = 0.5
    min_confidence_full: float = 0.6
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
    # Look again, over tiles of the frame, in clips where the whole-frame passes find a face in too few
    # frames (fewer than min_presence, or none): faces about 40 px wide in a 1280x720 frame.
    small_faces: bool = True


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
            from .face_detect import BlazeFace

            self._model = BlazeFace(self.config.min_confidence, self.config.min_confidence_full, self.device)
        return self._model

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Faces in one RGB frame (H, W, 3) uint8, in pixels, best first; [] when there is none."""
        return self.detect_batch(frame[None])[0]

    def detect_batch(self, frames: np.ndarray) -> list[list[Box]]:
        """Faces in each of N RGB frames of one size (N, H, W, 3) uint8: the whole-frame passes."""
        return [_boxes(f) for f in self._blazeface().detect(frames)]

    def detect_small(self, frames: np.ndarray) -> list[list[Box]]:
        """Faces in each frame found over tiles of it: slower, for faces too small for detect_batch."""
        return [_boxes(f) for f in self._blazeface().detect_tiles(frames)]

    def close(self) -> None:
        self._model = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _boxes(found) -> list[Box]:
    return [Box(*map(float, b), score=s) for b, s in found]


_process_detectors: dict[FaceConfig, FaceDetector] = {}


def process_detector(config: FaceConfig) -> FaceDetector:
    """One detector per configuration for this process, kept for its lifetime: worker pools call
    this per task instead of reloading the networks."""
    if config not in _process_detectors:
        _process_detectors[config] = FaceDetector(config)
    return _process_detectors[config]


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
    faces_seen: int = 0  # distinct faces (tracks) seen in the clip


def _detect_clip(frames: np.ndarray, detector: FaceDetector, config: FaceConfig) -> list[list[Box]]:
    """Whole-frame detection, then the small-face pass on the frames without a face where too few
    frames have one (so a clip with a visible face never pays for it). That pass first probes every
    4th such frame and goes on only if it finds something there: a faceless clip pays a quarter."""
    detections = detector.detect_batch(frames)
    found = sum(bool(d) for d in detections)
    if config.small_faces and (found == 0 or found < config.min_presence * len(frames)):
        missed = [i for i, d in enumerate(detections) if not d]
        for part in (missed[::4], [i for k, i in enumerate(missed) if k % 4]):
            for i, boxes in zip(part, detector.detect_small(frames[part]), strict=True):
                detections[i] = boxes
            if not any(detections[i] for i in part):
                break
    return detections


def faces_for_clip(frames: np.ndarray, detector: FaceDetector, config: FaceConfig, size: int) -> FaceTrack:
    """The face of a clip's RGB frames (N, H, W, 3) uint8, cropped square to size x size.

    crops is None when the face was seen in fewer than `config.min_presence` of the frames: the caller
    reports "no face" rather than classify whatever else the frames hold.
    """
    h, w = frames.shape[1:3]
    detections = _detect_clip(frames, detector, config)
    tracks = track_faces(detections, config.min_iou)
    if config.policy == "union":
        found = sum(bool(d) for d in detections)
        squares = [union_box(d, (w, h)) for d in detections]
    else:
        main = main_track(tracks, (w, h)) or {}
        found = len(main)
        filled = fill_missing([main.get(i) for i in range(len(frames))]) or []
        squares = [square_box(b, (w, h), config.margin) for b in filled]
    if found == 0 or found < config.min_presence * len(frames):
        return FaceTrack(None, None, found, len(frames), len(tracks))
    return FaceTrack(crop_faces(frames, squares, size), squares, found, len(frames), len(tracks))
