"""Who a face is, over a stretch of frames: a few frames spread over it, their face-mesh points, the
frontal ones' dlib chips (faces/align.py), and the mean of their embeddings (faces/embedding.py), which
people/identity.py links across shots."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dfer_cli.faces.align import SIZE, face_chip, is_frontal
from dfer_cli.faces.embedding import FaceEmbedder
from dfer_cli.faces.landmarks import PRESENCE_THRESHOLD, FaceLandmarker

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
