"""The face of a clip: detect, follow the main face (largest, most central) by overlap, fill the frames
where it was missed, crop it."""

# Detection is BlazeFace, mediapipe's face detector, as dfer's own torch port (blazeface.py; weights
# shipped in the package, so nothing is downloaded): the short-range model for close faces, the
# full-range one for frames where it finds nothing, and for clips where both find too little, the
# full-range model again over tiles of the frame, for faces too small to be seen whole-frame. The main
# face is the largest and most central one over the clip; it is followed by overlap so that the crop
# never jumps to another person, and frames where it was missed take a box interpolated from their
# neighbours.

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfer_cli.faces.box import Box, square_box, union_box
from dfer_cli.faces.config import FaceConfig
from dfer_cli.faces.crop import crop_faces
from dfer_cli.faces.detect import FaceDetector
from dfer_cli.faces.track import fill_missing, main_track, track_faces


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
