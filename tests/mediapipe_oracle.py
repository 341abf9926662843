"""mediapipe 0.10.14's face detection as dfer used it before its torch port: short range, then full range
on the frames where it found nothing. The parity tests' oracle and the benchmark's "before"; import it
only where mediapipe is installed (Python 3.12 or lower)."""

from __future__ import annotations

import warnings

import numpy as np
from mediapipe.python.solutions import face_detection

from dfer_cli.faces.box import Box


class MediapipeDetector:
    """Has FaceDetector's methods, so that faces_for_clip runs on it unchanged."""

    def __init__(self) -> None:
        self.models = [face_detection.FaceDetection(model_selection=m) for m in (0, 1)]

    def detect(self, frame: np.ndarray) -> list[Box]:
        h, w = frame.shape[:2]
        for model in self.models:
            with warnings.catch_warnings():  # mediapipe's protobuf deprecation notice, on every call
                warnings.simplefilter("ignore")
                found = model.process(np.ascontiguousarray(frame)).detections
            if found:
                return [_box(d, w, h) for d in found]
        return []

    def detect_batch(self, frames: np.ndarray) -> list[list[Box]]:
        return [self.detect(f) for f in frames]

    def detect_small(self, frames: np.ndarray, face: float | None = None) -> list[list[Box]]:
        return [[] for _ in frames]  # it had no such pass


def _box(detection, w: int, h: int) -> Box:
    rel = detection.location_data.relative_bounding_box
    return Box(rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h,
               detection.score[0])
