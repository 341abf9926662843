"""Where a video's shots change: the cut detector that predict feeds small frames as it decodes, and the cuts
and shots it reports.

Frames are 48x27 RGB uint8, (N, 27, 48, 3), as `small_frame` makes them from a decoded PyAV frame, each with
its time in seconds. A cut's time is the time of the first frame of the new shot. A dissolve has no such
frame: its cut time is the frame after the one the detector finds most like a transition, which for
TransNet V2 (trained to mark a dissolve's middle frame) and for the histogram detector (the largest change
across 20 frames) is about the middle of the cross-fade; frames of the cross-fade on either side mix both
shots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import av
import numpy as np

from dfer_cli.shots import histogram, transnet
from dfer_cli.shots.histogram import HistogramConfig

WIDTH, HEIGHT = transnet.WIDTH, transnet.HEIGHT
Method = Literal["transnet", "histogram"]


@dataclass(frozen=True)
class Cut:
    """A change of shot: `time` is the first frame of the new shot (s); `score`, how sure the detector is
    (TransNet's probability, 1.0 for the histogram detector); `frames`, how many frames in a row looked like
    a transition (1-2 for a hard cut, more for a dissolve's middle or images that change at every frame)."""

    time: float
    score: float
    frames: int = 1


@dataclass(frozen=True)
class Shot:
    """A stretch of one shot: [start, end) in seconds."""

    start: float
    end: float


@dataclass(frozen=True)
class CutConfig:
    # The histogram detector by default: on composites of the shared clips it finds cuts, dissolves and
    # slideshows as well as TransNet V2 or better, with fewer false cuts in strobe light, at about 170 times
    # less CPU time (benchmarks/cut_bench.py); TransNet, trained on real footage, is the choice on a GPU.
    method: Method = "histogram"
    threshold: float = 0.5  # TransNet's probability above which a frame is a transition
    # ... and how much the colours must change there and stay changed (histogram.lasting_change) for it to
    # count: TransNet takes some flashes and strobe light for cuts; 0 turns the check off.
    confirm: float = 0.1
    # Frames further apart than this are not compared: the stretch before ends, a new one starts
    # (predict reads a long file in stretches; a cut inside the gap cannot be timed).
    max_gap: float = 1.0
    histogram: HistogramConfig = field(default_factory=HistogramConfig)


def small_frame(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as the detector's input: (27, 48, 3) uint8 RGB, scaled by swscale (area averaging) from
    the frame as stored (a rotated video's frames stay turned: a cut is one either way)."""
    return frame.to_ndarray(format="rgb24", width=WIDTH, height=HEIGHT, interpolation="AREA")


def shots(cuts: list[Cut], start: float, end: float) -> list[Shot]:
    """The shots of [start, end) that `cuts` divide it into."""
    edges = [start, *(c.time for c in cuts if start < c.time < end), end]
    return [Shot(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class _TransNetScores:
    """TransNet V2 over a stream of frames, 100-frame windows stepped by 50 (as the original runs it): per
    frame, the probability that a new shot starts there (the network marks the last frame before a cut)."""

    def __init__(self, device: str, confirm: float, cfg: HistogramConfig) -> None:
        self._net = transnet.transnet(device)
        self._confirm, self._hist_cfg = confirm, cfg
        self._frames: np.ndarray | None = None  # the frames not yet decided, after 25 of context
        self._pending = 0
        self._last = 0.0  # the previous frame's probability: the next frame's score

    def push(self, frames: np.ndarray) -> np.ndarray:
        if self._frames is None:
            self._frames = np.repeat(frames[:1], transnet.CONTEXT, 0)
        self._frames = np.concatenate([self._frames, frames])
        self._pending += len(frames)
        ready = (len(self._frames) - transnet.WINDOW) // transnet.STEP + 1
        return self._run(ready) if ready > 0 else np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        if not self._pending:
            return np.zeros(0, np.float32)
        ready = -(-self._pending // transnet.STEP)
        fill = transnet.WINDOW + (ready - 1) * transnet.STEP - len(self._frames)
        self._frames = np.concatenate([self._frames, np.repeat(self._frames[-1:], fill, 0)])
        return self._run(ready)

    def _run(self, count: int) -> np.ndarray:
        steps = count * transnet.STEP
        windows = np.lib.stride_tricks.sliding_window_view(self._frames[: transnet.WINDOW + steps - transnet.STEP],
                                                           transnet.WINDOW, 0)[:: transnet.STEP]
        p = transnet.probabilities(self._net, np.moveaxis(windows, -1, 1))[: min(steps, self._pending)]
        if self._confirm > 0:  # p[j] is the score of the frame after j: the change is checked there
            first = transnet.CONTEXT + 1
            hists = histogram.hsv_histograms(self._frames[: transnet.WINDOW + steps - transnet.STEP])
            p = p * (histogram.lasting_change(hists, self._hist_cfg, first, first + len(p)) >= self._confirm)
        self._frames = self._frames[steps:]
        self._pending -= len(p)
        scores = np.concatenate([[self._last], p[:-1]]).astype(np.float32)
        self._last = float(p[-1])
        return scores


class _HistogramScores:
    """The histogram detector over a stream: a frame is decided once `margin` frames after it have come."""

    def __init__(self, cfg: HistogramConfig) -> None:
        self._cfg, self._margin = cfg, histogram.margin(cfg)
        self._hists = np.zeros((0, 72), np.float32)
        self._decided = 0  # frames of _hists decided; those before it are context only

    def push(self, frames: np.ndarray) -> np.ndarray:
        self._hists = np.concatenate([self._hists, histogram.hsv_histograms(frames)])
        return self._decide(len(self._hists) - self._margin)

    def finish(self) -> np.ndarray:
        return self._decide(len(self._hists))

    def _decide(self, upto: int) -> np.ndarray:
        if upto <= self._decided:
            return np.zeros(0, np.float32)
        scores = histogram.cut_scores(self._hists, self._cfg, self._decided, upto)
        drop = max(0, upto - self._margin)
        self._hists, self._decided = self._hists[drop:], upto - drop
        return scores


class CutDetector:
    """Cuts found incrementally: `push` each stretch of frames as it is decoded, in time order, and `finish`
    at the end; each returns the cuts it has become sure of (TransNet decides frames 50 at a time and needs 25
    frames after them, the histogram detector 20). Frames more than `max_gap` apart start a new stretch."""

    def __init__(self, cfg: CutConfig = CutConfig(), device: str = "cpu") -> None:
        self._cfg, self._device = cfg, device
        self._scorer: _TransNetScores | _HistogramScores | None = None
        self._times: list[float] = []  # of frames pushed and not yet scored
        self._last_time = -np.inf
        self._run: tuple[float, float, int] | None = None  # an open transition: (time, score, frames)

    def push(self, frames: np.ndarray, times: np.ndarray) -> list[Cut]:
        """Add (N, 27, 48, 3) uint8 RGB frames and their times (s, increasing); the cuts now certain."""
        frames, times = np.asarray(frames), np.asarray(times, dtype=np.float64).reshape(-1)
        if frames.ndim != 4 or frames.shape[1:] != (HEIGHT, WIDTH, 3) or frames.dtype != np.uint8:
            raise ValueError(f"the cut detector takes (N, {HEIGHT}, {WIDTH}, 3) uint8 RGB frames, not "
                             f"{frames.shape} {frames.dtype}")
        if len(frames) != len(times):
            raise ValueError("one time per frame")
        if len(times) and (times[0] <= self._last_time or np.any(np.diff(times) <= 0)):
            raise ValueError("frame times must increase")
        cuts: list[Cut] = []
        if self._scorer is not None and len(times) and times[0] - self._last_time > self._cfg.max_gap:
            cuts += self.finish()
        starts = [0, *(np.flatnonzero(np.diff(times) > self._cfg.max_gap) + 1).tolist()]
        for a, b in zip(starts, [*starts[1:], len(times)], strict=True):
            if a > 0:
                cuts += self.finish()
            for lo in range(a, b, 1000):  # bounded memory however long a stretch is
                cuts += self._add(frames[lo : min(b, lo + 1000)], times[lo : min(b, lo + 1000)])
        if len(times):
            self._last_time = float(times[-1])
        return cuts

    def finish(self) -> list[Cut]:
        """The cuts left in the frames pushed so far; the next push starts a new stretch."""
        cuts = self._scored(self._scorer.finish()) if self._scorer is not None else []
        if self._run is not None:
            cuts.append(Cut(*self._run))
        self._scorer, self._times, self._run = None, [], None
        return cuts

    def _add(self, frames: np.ndarray, times: np.ndarray) -> list[Cut]:
        if not len(frames):
            return []
        if self._scorer is None:
            self._scorer = (_TransNetScores(self._device, self._cfg.confirm, self._cfg.histogram)
                            if self._cfg.method == "transnet"
                            else _HistogramScores(self._cfg.histogram))
        self._times += times.tolist()
        return self._scored(self._scorer.push(frames))

    def _scored(self, scores: np.ndarray) -> list[Cut]:
        times, self._times = self._times[: len(scores)], self._times[len(scores):]
        if self._cfg.method == "histogram":  # its decisions are per frame already
            return [Cut(t, 1.0) for t, s in zip(times, scores, strict=True) if s > 0]
        cuts = []
        for t, s in zip(times, scores.tolist(), strict=True):
            if s > self._cfg.threshold:
                best = self._run
                if best is None or s > best[1]:
                    self._run = (t, s, 1 if best is None else best[2] + 1)
                else:
                    self._run = (best[0], best[1], best[2] + 1)
            elif self._run is not None:
                cuts.append(Cut(*self._run))
                self._run = None
        return cuts


def detect_cuts(frames: np.ndarray, times: np.ndarray, cfg: CutConfig = CutConfig(), device: str = "cpu") -> list[Cut]:
    """The cuts in one run of frames (see `CutDetector`)."""
    detector = CutDetector(cfg, device)
    return detector.push(frames, times) + detector.finish()
