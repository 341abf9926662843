"""FaceConfig: how faces are found, followed and cropped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
