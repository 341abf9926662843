"""Faces followed across frames: tracks by overlap, the main track, gaps filled from neighbours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dfer_cli.faces.box import Box, pair_by_overlap

Track = dict[int, Box]  # frame index -> the face's box there


def _prominence(box: Box, frame_size: tuple[int, int]) -> float:
    """Side length (not area, so that being seen in more frames outweighs one huge box), discounted by
    up to half for the distance from the frame centre."""
    w, h = frame_size
    cx, cy = box.center
    off = np.hypot((cx - w / 2) / (w / 2), (cy - h / 2) / (h / 2)) / np.sqrt(2)
    return np.sqrt(box.area) * (1.0 - 0.5 * min(off, 1.0))


def track_faces(detections: Sequence[Sequence[Box]], min_iou: float = 0.2) -> list[Track]:
    """Every face of the clip as a track: each frame's boxes are linked to the tracks whose latest box
    they overlap by at least `min_iou` (best overlaps first, one box per track); the rest start tracks."""
    tracks: list[Track] = []
    for i, boxes in enumerate(detections):
        linked = pair_by_overlap(boxes, [t[max(t)] for t in tracks], min_iou)
        for bi, ti in linked.items():
            tracks[ti][i] = boxes[bi]
        tracks.extend({i: b} for bi, b in enumerate(boxes) if bi not in linked)
    return tracks


def main_track(tracks: Sequence[Track], frame_size: tuple[int, int]) -> Track | None:
    """The track with the most prominence summed over the clip (seen often, large, central)."""
    if not tracks:
        return None
    return max(tracks, key=lambda t: sum(_prominence(b, frame_size) for b in t.values()))


def track_main_face(detections: Sequence[Sequence[Box]], frame_size: tuple[int, int],
                    min_iou: float = 0.2) -> list[Box | None]:
    """The main face in each frame, or None where it was not seen. `frame_size` is (width, height).

    Someone passing close to the camera for a frame does not take the crop over, and a frame where
    only that someone is seen gets None rather than their box.
    """
    main = main_track(track_faces(detections, min_iou), frame_size) or {}
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
