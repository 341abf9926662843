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
from dfer_cli.faces.detect import FaceDetector, tiles
from dfer_cli.faces.track import fill_missing, main_track, track_faces


@dataclass(frozen=True)
class PersonTrack:
    """One face followed through a clip, present in enough of its frames to be a person."""

    crops: np.ndarray  # (N, S, S, 3) uint8
    boxes: list[Box]  # the square region cropped from each frame, in pixels
    found: int  # frames where the face was detected (the rest were filled in)
    median: Box  # the median of its detected boxes, inside the frame: where the person is
    detected: dict[int, Box]  # frame index -> the box detected there (the clip's frames, in their order)
    main: bool  # the clip's main face


@dataclass(frozen=True)
class FaceTrack:
    crops: np.ndarray | None  # (N, S, S, 3) uint8; None when the clip has no face
    boxes: list[Box] | None  # the square region cropped from each frame, in pixels
    found: int  # frames where the face was detected (the rest were filled in)
    total: int
    faces_seen: int = 0  # distinct faces (tracks) seen in the clip
    people: tuple[PersonTrack, ...] = ()  # with every_face: every person, the most present and largest first


def _detect_clip(frames: np.ndarray, detector: FaceDetector, config: FaceConfig,
                 every_face: bool = False) -> list[list[Box]]:
    """Whole-frame detection, then the small-face pass on the frames without a face where too few
    frames have one (so a clip with a visible face never pays for it). That pass first probes every
    4th such frame and goes on only if it finds something there: a faceless clip pays a quarter.
    With `every_face` (people), also the faces that the whole-frame pass missed beside those it found,
    smaller or as small as they are."""
    detections = detector.detect_batch(frames)
    found = sum(bool(d) for d in detections)
    if config.small_faces and (found == 0 or found < config.min_presence * len(frames)):
        missed = [i for i, d in enumerate(detections) if not d]
        for part in (missed[::4], [i for k, i in enumerate(missed) if k % 4]):
            for i, boxes in zip(part, detector.detect_small(frames[part]), strict=True):
                detections[i] = boxes
            if not any(detections[i] for i in part):
                break
    elif every_face and config.small_faces:
        _add_tiled_faces(frames, detections, detector)
    return detections


# Faces narrower than this share of the frame's longer side reach the whole-frame pass (128 px across)
# under 20 px wide, where it finds some and misses others: measured, a 3 x 3 gallery at 1920x1080 (faces
# 0.1 of the width) gave 2-4 of 9 faces a frame, 4 x 4 at 1280x720 9-12 of 16, six GRID faces in a row
# (2160x288) 5-6 of 6; two side by side (0.18 of the width) and one alone give all of them.
_SMALL_IN_FRAME = 0.15
_NEW_FACE_IOU = 0.3  # a tile's face overlapping a whole-frame one less than this is another face


def _face_side(detections: list[list[Box]]) -> float:
    """The median side of the faces found, in pixels (0 when there is none)."""
    sides = [max(b.x1 - b.x0, b.y1 - b.y0) for boxes in detections for b in boxes]
    return float(np.median(sides)) if sides else 0.0


def _tile_face(detections: list[list[Box]], width: int, height: int) -> float:
    """The face size to tile the frame for: that of the faces found where they are small enough in the
    frame that others like them may have been missed. Beside larger faces, the smaller ones the
    whole-frame pass cannot see (a face of 80 px beside one of 130 px in a 720x288 frame is 14 px of its
    128) are looked for over tiles as large as the frame's shorter side (the size given clips to it): there
    that face is 53 px to the full-range model, and a 720x288 frame takes 3 tiles, not the 12 of `tiles`'
    own size (measured: 0.26 s of one frame's 12 tiles, as much as the whole-frame passes of a clip)."""
    side = _face_side(detections)
    return side if 0 < side < _SMALL_IN_FRAME * max(width, height) else float(min(width, height))


def _add_tiled_faces(frames: np.ndarray, detections: list[list[Box]], detector: FaceDetector) -> None:
    """The faces that tiles show and no whole-frame box covers, added to `detections`: first on the
    clip's middle frame, then, if it shows a face the whole-frame pass missed, on every other frame."""
    if not tiles(frames.shape[2], frames.shape[1]):
        return
    middle, side = len(frames) // 2, _tile_face(detections, frames.shape[2], frames.shape[1])
    probe = detector.detect_small(frames[middle:middle + 1], side)[0]
    if not _missed(probe, detections[middle]):
        return
    rest = [i for i in range(len(frames)) if i != middle]
    for i, tiled in zip([middle, *rest], [probe, *detector.detect_small(frames[rest], side)], strict=True):
        detections[i] = detections[i] + _missed(tiled, detections[i])


def _missed(tiled: list[Box], found: list[Box]) -> list[Box]:
    return [b for b in tiled if all(b.iou(f) < _NEW_FACE_IOU for f in found)]


def faces_for_clip(frames: np.ndarray, detector: FaceDetector, config: FaceConfig, size: int,
                   every_face: bool = False) -> FaceTrack:
    """The face of a clip's RGB frames (N, H, W, 3) uint8, cropped square to size x size; with
    `every_face`, also every face followed through the clip in enough frames (who of them is analysed
    is the people stage's choice: it needs to know who speaks first).

    crops is None when the face was seen in fewer than `config.min_presence` of the frames: the caller
    reports "no face" rather than classify whatever else the frames hold.
    """
    h, w = frames.shape[1:3]
    detections = _detect_clip(frames, detector, config, every_face)
    tracks = track_faces(detections, config.min_iou)
    if config.policy == "union":
        found = sum(bool(d) for d in detections)
        squares = [union_box(d, (w, h)) for d in detections]
    else:
        main = main_track(tracks, (w, h)) or {}
        found = len(main)
        squares = _squares(main, len(frames), (w, h), config)
    enough = config.min_presence * len(frames)
    if found == 0 or found < enough:
        return FaceTrack(None, None, found, len(frames), len(tracks))
    crops = crop_faces(frames, squares, size)
    people: list[PersonTrack] = []
    present = [t for t in tracks if len(t) >= enough] if every_face and config.policy == "main" else []
    for track in sorted(present, key=_weight, reverse=True):
        is_main = track is main
        boxes = squares if is_main else _squares(track, len(frames), (w, h), config)
        people.append(PersonTrack(crops if is_main else crop_faces(frames, boxes, size), boxes, len(track),
                                  _median(track).clipped((w, h)), track, is_main))
    return FaceTrack(crops, squares, found, len(frames), len(tracks), tuple(people))


def _squares(track: dict[int, Box], frames: int, frame_size: tuple[int, int], config: FaceConfig) -> list[Box]:
    filled = fill_missing([track.get(i) for i in range(frames)]) or []
    return [square_box(b, frame_size, config.margin) for b in filled]


def _median(track: dict[int, Box]) -> Box:
    coords = np.median([[b.x0, b.y0, b.x1, b.y1] for b in track.values()], axis=0)
    return Box(*map(float, coords), score=1.0)


def _weight(track: dict[int, Box]) -> float:
    """Presence times size: frames seen times the median box's side."""
    return len(track) * float(np.sqrt(_median(track).area))
