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


@dataclass
class _Group:
    members: list[int]
    total: np.ndarray  # the members' embeddings, each weighted by its frames
    frames: int

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.frames


def link(stretches: Sequence[Stretch], threshold: float = SAME_PERSON) -> Persons:
    """Stretches linked into persons: the two closest groups (by their frame-weighted mean embeddings) are
    joined while they are closer than `threshold` and no stretch of one is on screen with a stretch of the
    other (one person is never seen twice at once: a split screen of one face stays two persons). A stretch
    without an embedding (no frontal frame) stays a person of its own: its place proves nothing across a
    cut, and within a shot its track already holds it together."""
    groups: list[_Group] = []
    alone: list[int] = []
    for k, s in enumerate(stretches):
        if s.end < s.start:
            raise DferError(f"stretch {k} ends ({s.end}) before it starts ({s.start})")
        if s.embedding is None:
            alone.append(k)
            continue
        weight = max(int(s.frames), 1)
        groups.append(_Group([k], np.asarray(s.embedding, np.float64) * weight, weight))
    while True:
        best: tuple[float, int, int] | None = None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                distance = float(np.linalg.norm(groups[i].mean - groups[j].mean))
                if distance < threshold and (best is None or distance < best[0]) and not any(
                        stretches[a].overlaps(stretches[b]) for a in groups[i].members for b in groups[j].members):
                    best = (distance, i, j)
        if best is None:
            break
        _, i, j = best
        joined = groups.pop(j)
        groups[i] = _Group(groups[i].members + joined.members, groups[i].total + joined.total,
                           groups[i].frames + joined.frames)
    members = [g.members for g in groups] + [[k] for k in alone]

    def first(group: list[int]) -> tuple[float, float, int]:
        k = min(group, key=lambda m: (stretches[m].start, stretches[m].x, m))
        return stretches[k].start, stretches[k].x, k

    person = [0] * len(stretches)
    for number, group in enumerate(sorted(members, key=first)):
        for k in group:
            person[k] = number
    return Persons(tuple(person))
