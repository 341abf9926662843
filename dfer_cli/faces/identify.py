"""Who a face is, over a stretch of frames: a few frames spread over it, their face-mesh points, the
frontal ones' dlib chips (faces/align.py), and the mean of their embeddings (faces/embedding.py), which
people/identity.py links across shots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dfer_cli.faces.align import SIZE, face_chip, is_frontal
from dfer_cli.faces.box import Box, pair_by_overlap
from dfer_cli.faces.embedding import FaceEmbedder
from dfer_cli.faces.follow import PersonTrack
from dfer_cli.faces.landmarks import PRESENCE_THRESHOLD, FaceLandmarker, process_landmarker
from dfer_cli.runtime import registry
from dfer_cli.runtime.pool import single_thread

# Frames embedded per stretch. The embedding costs 17 ms a face on one CPU thread (the mesh 2-5 ms more),
# and five frames' mean already separates the GRID speakers with room to spare (one person 0.17-0.18 across
# clips, two people at least 0.59, tests/test_face_embedding.py): more would cost without deciding more.
CHIPS = 5


def spread(count: int, wanted: int = CHIPS) -> np.ndarray:
    """Indices of `wanted` of `count` items, spread evenly: the middles of `wanted` equal parts (all of
    them when there are no more than `wanted`)."""
    if count <= wanted:
        return np.arange(count)
    return np.floor((np.arange(wanted) + 0.5) * count / wanted).astype(np.int64)


def frontal_chips(frames: np.ndarray, points: np.ndarray, sources: Sequence[int] | None = None,
                  presence: np.ndarray | None = None) -> np.ndarray:
    """(K, 150, 150, 3) uint8 dlib chips of the faces whose mesh `points` (N, 468, 2+) are frontal
    enough (align.is_frontal) and, with `presence`, scored as a face; face k lies in frames[sources[k]]."""
    sources = np.arange(len(points)) if sources is None else np.asarray(sources, np.int64)
    keep = [k for k, p in enumerate(points)
            if is_frontal(p) and (presence is None or presence[k] >= PRESENCE_THRESHOLD)]
    if not keep:
        return np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return np.stack([face_chip(frames[sources[k]], points[k]) for k in keep])


def face_chips(frames: np.ndarray, boxes: Sequence[tuple[float, float, float, float]], landmarker: FaceLandmarker,
               sources: Sequence[int] | None = None) -> np.ndarray:
    """The frontal chips of faces given by their detection boxes (x0, y0, x1, y1, pixels), box k in
    frames[sources[k]] (by default frame k): the face mesh first, then frontal_chips."""
    if not len(boxes):
        return np.zeros((0, SIZE, SIZE, 3), np.uint8)
    points, presence = landmarker.landmarks_and_presence(frames, boxes, sources=sources)
    return frontal_chips(frames, points, sources, presence)


def mean_embedding(chips: np.ndarray, embedder: FaceEmbedder) -> np.ndarray | None:
    """The mean of the chips' embeddings (128,), or None without a chip. Not normalised: the distances
    people/identity.py's threshold was measured on are between such means (dlib's embeddings have norms
    of about 1.4-1.5)."""
    if not len(chips):
        return None
    return embedder.embed(chips).mean(0)


# Frames tried per track where its stretch begins: the mesh says which are frontal, those are embedded.
TRIED = 3
# ... and in each later clip of the stretch, a check: a cut the detector missed (two people in front of one
# backdrop, alike in colour) puts another face in the same place, which one frame's embedding tells apart.
CHECKED = 1
_SAME_FACE_IOU = 0.3  # as people/persons.py links a shot's tracks from clip to clip


@registry.cached("face embedder")
def process_embedder(device: str) -> FaceEmbedder:
    """One embedding network per process and device, kept for its lifetime (as the landmark model is)."""
    return FaceEmbedder(device)


@dataclass(frozen=True)
class Identity:
    """A face track's identity in one clip: the mean embedding of its frontal chips (None: none was frontal)
    and how many chips that mean is of."""

    embedding: np.ndarray | None
    chips: int


def track_identity(frames: np.ndarray, detected: dict[int, Box], device: str, tried: int = TRIED) -> Identity:
    """The identity of a track from `tried` of the frames it was detected in (spread over them)."""
    order = sorted(detected)
    picks = [order[i] for i in spread(len(order), tried)]
    boxes = [(b.x0, b.y0, b.x1, b.y1) for b in (detected[i] for i in picks)]
    landmarker = process_landmarker(device)
    with single_thread(landmarker.device):  # as the lips are read: 2 threads on 2 busy cores ran far slower
        chips = face_chips(frames, boxes, landmarker, sources=picks)
        return Identity(mean_embedding(chips, process_embedder(device)), len(chips))


class StretchIdentities:
    """A file's clips' face tracks identified: from `TRIED` frames where a track's stretch begins (after a
    new shot, or where no face of the clip before stood) or where the face it continues had no frontal
    frame yet; from `CHECKED` where it continues an embedded face (people/persons.py parts the stretch
    where that check shows another person)."""

    def __init__(self, device: str) -> None:
        self._device = device
        self._last: list[tuple[Box, bool]] = []  # the clip before's faces: median box, embedded in its stretch

    def identify(self, frames: np.ndarray, tracks: Sequence[PersonTrack],
                 new_shot: bool) -> tuple[Identity | None, ...]:
        before = [] if new_shot else self._last
        linked = pair_by_overlap([t.median for t in tracks], [box for box, _ in before], _SAME_FACE_IOU)
        out, last = [], []
        for k, track in enumerate(tracks):
            known = k in linked and before[linked[k]][1]
            identity = track_identity(frames, track.detected, self._device, CHECKED if known else TRIED)
            out.append(identity)
            last.append((track.median, known or (identity is not None and identity.embedding is not None)))
        self._last = last
        return tuple(out)
