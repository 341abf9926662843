"""Who is who across a file: face-track stretches (a track's part within one shot) linked into persons by
their face embeddings (dfer_cli.faces.embedding), wherever and whenever they appear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dfer_cli.errors import DferError

# Stretches whose mean embeddings lie closer than this are one person. dlib's network, measured through
# dfer's own detection, mesh and alignment on the GRID clips: one frame against another of the same person
# at most 0.32 apart (within a clip and across two clips of one speaker), of different people at least 0.60
# (five-frame means: 0.17-0.18 and 0.59). 0.45 lies in the middle of that gap; dlib's own 0.6 (for single
# photos) would sit at the edge of the different-people figures.
SAME_PERSON = 0.45


@dataclass(frozen=True)
class Stretch:
    """One face track's stretch within a shot: when it is on screen (seconds, first and last frame), the mean
    embedding of its frontal frames (None when it has none), how many frames that mean is of, and its first
    box's left edge (pixels; ties in first appearance are numbered left to right)."""

    start: float
    end: float
    embedding: np.ndarray | None
    x: float
    frames: int = 1

    def overlaps(self, other: Stretch) -> bool:
        """Seen at the same time, for at least one frame."""
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class Persons:
    """Each stretch's person (in the order given), persons numbered from 0 by first appearance, ties left
    to right."""

    of_stretch: tuple[int, ...]

    @property
    def count(self) -> int:
        return max(self.of_stretch, default=-1) + 1


def link(stretches: Sequence[Stretch], threshold: float = SAME_PERSON) -> Persons:
    """Stretches linked into persons: the two closest groups (by their frame-weighted mean embeddings) are
    joined while they are closer than `threshold` and no stretch of one is on screen with a stretch of the
    other (one person is never seen twice at once: a split screen of one face stays two persons). A stretch
    without an embedding (no frontal frame) stays a person of its own: its place proves nothing across a
    cut, and within a shot its track already holds it together."""
    for k, s in enumerate(stretches):
        if s.end < s.start:
            raise DferError(f"stretch {k} ends ({s.end}) before it starts ({s.start})")
    embedded = [k for k, s in enumerate(stretches) if s.embedding is not None]
    members = [[k] for k in embedded]
    if embedded:
        weight = np.array([max(int(stretches[k].frames), 1) for k in embedded], np.float64)
        total = np.stack([np.asarray(stretches[k].embedding, np.float64) for k in embedded]) * weight[:, None]
        start = np.array([stretches[k].start for k in embedded])
        end = np.array([stretches[k].end for k in embedded])
        apart = ~((start[:, None] <= end[None]) & (start[None] <= end[:, None]))  # never on screen together
        means = total / weight[:, None]
        square = (means ** 2).sum(1)
        distance = np.sqrt(np.maximum(square[:, None] + square[None] - 2 * means @ means.T, 0))
        distance[~apart] = np.inf  # includes the diagonal
        while True:
            i, j = divmod(int(np.argmin(distance)), len(embedded))  # the first of equal distances: stable
            if not distance[i, j] < threshold:
                break
            i, j = min(i, j), max(i, j)
            members[i] += members[j]
            members[j] = []
            total[i] += total[j]
            weight[i] += weight[j]
            apart[i] &= apart[j]
            apart[:, i] = apart[i]
            row = np.linalg.norm(total / weight[:, None] - total[i] / weight[i], axis=-1)
            row[~apart[i]] = np.inf
            distance[i], distance[:, i] = row, row
            distance[j], distance[:, j] = np.inf, np.inf
    groups = [m for m in members if m] + [[k] for k, s in enumerate(stretches) if s.embedding is None]

    def first(group: list[int]) -> tuple[float, float, int]:
        k = min(group, key=lambda m: (stretches[m].start, stretches[m].x, m))
        return stretches[k].start, stretches[k].x, k

    person = [0] * len(stretches)
    for number, group in enumerate(sorted(groups, key=first)):
        for k in group:
            person[k] = number
    return Persons(tuple(person))
