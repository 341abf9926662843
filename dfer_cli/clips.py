"""Which frames and which audio make up a clip.

A clip is 16 face frames plus the 5.12-s audio window around them. Over a video file, N clips split
the duration into N equal parts; each clip covers (at most `max_span` seconds of) its part, taking the
middle frame of 16 equal segments, the reference's test-time rule, now in time rather than frame
index so that variable-frame-rate video is sampled evenly. Over a list of frames (a dataset's frame
folder), the same rule works on indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class ClipConfig:
    frames: int = 16
    clips: int = 2
    # A clip spans at most this much video: about a DFEW clip, and the model's audio window.
    max_span: float = 5.12
    audio_window: float = 5.12


@dataclass(frozen=True)
class ClipPlan:
    index: int
    start: float
    end: float
    frame_times: np.ndarray
    audio_start: float
    audio_end: float


def segment_indices(n: int, count: int = 16, position: float = 0.5) -> np.ndarray:
    """The reference's test-time pick: the frame at `position` (0.5: the middle) of each of `count`
    equal segments, floor(n (i + position) / count); with fewer than `count` frames, all of them and
    then the last one repeated."""
    if n <= 0:
        raise ValueError("no frames to sample")
    if n < count:
        return np.concatenate([np.arange(n), np.full(count - n, n - 1)])
    # In exact integers: the reference's floats (n / 16 is exact in binary) give the same floor, and
    # for counts such as 48, where n / count is not exact, floats could land one frame early.
    p = Fraction(position)
    return (n * (p.denominator * np.arange(count) + p.numerator)) // (p.denominator * count)


def segment_times(start: float, end: float, count: int) -> np.ndarray:
    """The time-based twin of segment_indices: the middle of each of `count` equal spans."""
    return start + (end - start) / count * (np.arange(count) + 0.5)


def random_segment_indices(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """The reference's train-time pick: a random frame inside each of `count` equal segments."""
    if n < count:
        return segment_indices(n, count)
    edges = np.linspace(0, n, count + 1)
    starts, stops = np.floor(edges[:-1]).astype(int), np.floor(edges[1:]).astype(int)
    return starts + (rng.random(count) * np.maximum(stops - starts, 1)).astype(int)


def _plan(index: int, start: float, end: float, t0: float, t1: float, cfg: ClipConfig) -> ClipPlan:
    times = segment_times(start, end, cfg.frames)
    # The audio window is centred on the clip and slid (not cut) to stay inside the file.
    window = min(cfg.audio_window, t1 - t0)
    a0 = min(max((start + end) / 2 - window / 2, t0), t1 - window)
    return ClipPlan(index, start, end, times, a0, a0 + window)


def plan_clips(start_time: float, duration: float, cfg: ClipConfig) -> list[ClipPlan]:
    """`cfg.clips` clips spread uniformly over [start_time, start_time + duration]."""
    t1 = start_time + duration
    part = duration / cfg.clips
    span = min(part, cfg.max_span)
    plans = []
    for i in range(cfg.clips):
        center = start_time + part * (i + 0.5)
        plans.append(_plan(i, center - span / 2, center + span / 2, start_time, t1, cfg))
    return plans


def plan_windows(start_time: float, duration: float, window: float, cfg: ClipConfig) -> list[ClipPlan]:
    """One clip per `window` seconds for a timeline; a short last window is merged into the one before."""
    if window <= 0:
        raise ValueError("window must be positive")
    t1 = start_time + duration
    count = max(1, int(duration // window))
    edges = [start_time + window * i for i in range(count)] + [t1]
    spans = zip(edges[:-1], edges[1:], strict=True)
    return [_plan(i, a, b, start_time, t1, cfg) for i, (a, b) in enumerate(spans)]
