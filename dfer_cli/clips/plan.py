"""Which frames and which audio make up a clip: 16 face frames sampled like a DFEW clip (16 equal
segments, one frame each) plus the 5.12-s audio window that goes with them."""

# A clip is 16 face frames plus the 5.12-s audio window that goes with them. The model was trained on
# DFEW clips of a few seconds, each seen whole: 16 equal segments over all its frames, one frame per
# segment. Every clip dfer builds follows that rule (`frame_picks`):
# - a data set clip (`dfer evaluate`) and a video no longer than the model's span (`dfer predict`)
#   are sampled whole, exactly alike: one clip at the middle of each segment, or two at 1/4 and 3/4;
#   the audio is the track from the start;
# - a longer video gets clips of a DFEW-like span spread over it (or one per window of a timeline),
#   each sampled as if it were such a clip, with the audio window centred on it.
#
# Frame order: the reference's MAFW loader lists a clip's frames by file name sorted as strings
# (0.jpg, 1.jpg, 10.jpg, 11.jpg, ..., 19.jpg, 2.jpg, ...), so the official MAFW checkpoints were trained
# and tested on their 16 frames in that scrambled order (`reference_order`). dfer feeds those
# checkpoints the same order; its own training uses time order.

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from dfer_cli.errors import check_count
from dfer_cli.labels import REFERENCE_ORDER, TIME_ORDER
from dfer_cli.media import decode
from dfer_cli.media.fbank import HEARD_S

# Longer videos are cut into clips of about a DFEW clip's length. The DFEW paper, its site and its
# repository publish no clip-length distribution that we could find. The nearest published figure is
# the reference's own annotation lists (katerynaCh/MMA-DFER, annotation/DFEW_set_{1..5}_test.txt:
# the 11,697 single-labelled clips, each with its count of face frames): median 70 frames, mean 77,
# middle half 48-95, 90th percentile 124. At 25 fps, a film rate, the median is 2.8 s (2.3 s at
# 30 fps); faceless frames were dropped from those counts, so the clips themselves run a little longer.
DFEW_SPAN_S = 2.8


@dataclass(frozen=True)
class ClipConfig:
    frames: int = 16
    clips: int = 2
    # Videos up to this long are sampled whole, as a data set clip is: the model's audio window.
    whole_up_to: float = 5.12
    # Longer ones: each clip spans at most this much video.
    max_span: float = DFEW_SPAN_S
    audio_window: float = 5.12
    # The order in which a clip's frames reach the model (FRAME_ORDERS); None: the weights' order.
    frame_order: str | None = None

    def __post_init__(self) -> None:
        for name in ("frames", "clips"):
            check_count(name, getattr(self, name), least=1)


@dataclass(frozen=True)
class ClipPlan:
    index: int
    start: float
    end: float
    frame_times: np.ndarray  # in the order the frames are fed to the model
    audio_start: float
    audio_end: float  # may pass the end of the file: the model hears the rest as padding


def segment_indices(n: int, count: int = 16, position: float | Fraction = 0.5) -> np.ndarray:
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


def clip_positions(clips: int) -> tuple[Fraction, ...]:
    """Where in its segments each of `clips` clips over the same frames picks: the middle for one
    clip, 1/4 and 3/4 for two (the 2-clip protocol), (2i + 1) / (2 clips) in general."""
    return tuple(Fraction(2 * i + 1, 2 * clips) for i in range(clips))


def reference_order(n: int) -> np.ndarray:
    """Frame numbers 0..n-1 in the order the reference's MAFW loader lists them: frames saved as
    0.jpg, 1.jpg, ... and sorted as strings ('.' sorts before every digit, so 1.jpg < 10.jpg)."""
    return np.array(sorted(range(n), key=str), dtype=np.int64)


def frame_picks(n: int, position: float | Fraction = 0.5, count: int = 16, order: str | None = None) -> np.ndarray:
    """The frame numbers (0: the first in time) that a test-time clip over `n` frames feeds the model,
    in the order fed: the reference's segment picks taken from the frame list in `order`. The one
    rule for `dfer evaluate` and `dfer predict`."""
    picks = segment_indices(n, count, position)
    return reference_order(n)[picks] if order == REFERENCE_ORDER else picks


def kept_frames(n: int, max_frames: int = 48, orders: Sequence[str] = (TIME_ORDER,)) -> np.ndarray:
    """The frame numbers, sorted, that a prepared clip cache keeps of a clip's `n` frames: all of them
    up to `max_frames`; else every frame a test-time view picks in any of `orders` (1/4, 1/2 and 3/4
    of each segment: 48 frames per order at most), which training's random picks also choose from,
    and with `max_frames` above 48 the middles of `max_frames` equal spans too."""
    if n <= max_frames:
        return np.arange(n)
    picks = [frame_picks(n, p, 16, order) for p in (*clip_positions(1), *clip_positions(2)) for order in orders]
    if max_frames > 48:
        picks.append(segment_indices(n, max_frames))
    return np.unique(np.concatenate(picks))


def random_segment_indices(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """The reference's train-time pick: a random frame inside each of `count` equal segments."""
    if n < count:
        return segment_indices(n, count)
    edges = np.linspace(0, n, count + 1)
    starts, stops = np.floor(edges[:-1]).astype(int), np.floor(edges[1:]).astype(int)
    return starts + (rng.random(count) * np.maximum(stops - starts, 1)).astype(int)


def plan_clips(start_time: float, duration: float, cfg: ClipConfig, frame_rate: float = 0.0,
               frame_times: np.ndarray | None = None) -> list[ClipPlan]:
    """`cfg.clips` clips for a video: the whole video as a data set clip when it is no longer than
    `cfg.whole_up_to`, else clips of `cfg.max_span` at the middles of `cfg.clips` equal parts.
    `frame_times` (every frame's time) makes the picks exact; without it frames are assumed evenly
    spaced at `frame_rate` (or, unknown, one per segment)."""
    t1 = start_time + duration
    if duration <= cfg.whole_up_to:
        # The audio is read as for a data set clip: the track from the start, all the model hears.
        return [_plan(i, start_time, t1, 0.0, HEARD_S, cfg, frame_rate, frame_times, p)
                for i, p in enumerate(clip_positions(cfg.clips))]
    part = duration / cfg.clips
    span = min(part, cfg.max_span)
    plans = []
    for i in range(cfg.clips):
        center = start_time + part * (i + 0.5)
        a0, a1 = _audio_window(center - span / 2, center + span / 2, start_time, t1, cfg)
        plans.append(_plan(i, center - span / 2, center + span / 2, a0, a1, cfg, frame_rate))
    return plans


def plan_file(info: decode.VideoInfo, cfg: ClipConfig, window: float | None = None) -> list[ClipPlan]:
    """The clips of a probed video: with `window`, one per window of its timeline; else `plan_clips`
    (a short video sampled whole, exactly as `dfer evaluate` samples a data set clip, from the frames
    `probe` listed; a longer one in DFEW-like spans)."""
    if window:
        return plan_windows(info.start_time, info.duration, window, cfg, info.frame_rate)
    return plan_clips(info.start_time, info.duration, cfg, info.frame_rate, info.frame_times)


def plan_windows(start_time: float, duration: float, window: float, cfg: ClipConfig,
                 frame_rate: float = 0.0) -> list[ClipPlan]:
    """One clip per `window` seconds for a timeline; a short last window is merged into the one before."""
    if window <= 0:
        raise ValueError("window must be positive")
    t1 = start_time + duration
    count = max(1, int(duration // window))
    edges = [start_time + window * i for i in range(count)] + [t1]
    spans = zip(edges[:-1], edges[1:], strict=True)
    return [_plan(i, a, b, *_audio_window(a, b, start_time, t1, cfg), cfg, frame_rate)
            for i, (a, b) in enumerate(spans)]


def _audio_window(start: float, end: float, t0: float, t1: float, cfg: ClipConfig) -> tuple[float, float]:
    # Centred on the clip and slid (not cut) to stay inside the file.
    window = min(cfg.audio_window, t1 - t0)
    a0 = min(max((start + end) / 2 - window / 2, t0), t1 - window)
    return a0, a0 + window


def _plan(index: int, start: float, end: float, audio_start: float, audio_end: float, cfg: ClipConfig,
          frame_rate: float, frame_times: np.ndarray | None = None, position: Fraction = Fraction(1, 2),
          ) -> ClipPlan:
    """A clip over [start, end], its frames picked by `frame_picks` from the listed `frame_times`,
    or from frames assumed evenly spaced: each one's middle, which lands on it whatever the rounding."""
    if frame_times is not None and len(frame_times):
        times = frame_times[frame_picks(len(frame_times), position, cfg.frames, cfg.frame_order)]
    else:
        n = max(1, round((end - start) * frame_rate)) if frame_rate > 0 else cfg.frames
        picks = frame_picks(n, position, cfg.frames, cfg.frame_order)
        times = start + (end - start) / n * (picks + 0.5)
    return ClipPlan(index, start, end, times, audio_start, audio_end)


def fit_to_shots(plans: Sequence[ClipPlan], cuts: Sequence[float], cfg: ClipConfig, frame_rate: float = 0.0,
                 frame_times: np.ndarray | None = None) -> list[ClipPlan]:
    """`plans` kept inside one shot each, for predict (`dfer evaluate` and `dfer train` keep the paper's
    clips): a clip whose span [start, end) holds a cut (the time of a new shot's first frame) is shortened to
    its longest piece between cuts (the earlier on a tie), and its frames picked again within that piece by
    the same rule (`frame_picks`, the clip's position among clips over one span). Its audio window stays."""
    cuts = sorted(cuts)
    out = []
    for plan in plans:
        inside = [c for c in cuts if plan.start < c < plan.end]
        if not inside:
            out.append(plan)
            continue
        edges = [plan.start, *inside, plan.end]
        a, b = max(zip(edges[:-1], edges[1:], strict=True), key=lambda e: (e[1] - e[0], -e[0]))
        # Clips over one span (a short video's two clips) pick at their own positions in it, as plan_clips.
        same = [p for p in plans if (p.start, p.end) == (plan.start, plan.end)]
        position = clip_positions(len(same))[next(i for i, p in enumerate(same) if p is plan)]
        times = None if frame_times is None else frame_times[(frame_times >= a) & (frame_times < b)]
        out.append(_plan(plan.index, a, b, plan.audio_start, plan.audio_end, cfg, frame_rate, times, position))
    return out
