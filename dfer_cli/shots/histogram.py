"""The cheap cut detector: HSV colour histograms of consecutive frames compared, with a threshold that adapts
to how much the neighbouring frames change, a check that the change lasts (a flash is no cut), and a slower
comparison across 20 frames for dissolves."""

# Its weakness is gradual change: a dissolve spreads its histogram change over many frames, each small, so it
# is found only through the 20-frame comparison, which fast motion over differently coloured scenery can also
# trigger (benchmarks/cut_bench.py measures both).

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_HUES, _SATURATIONS, _VALUES = 16, 4, 8


@dataclass(frozen=True)
class HistogramConfig:
    # A hard cut: the histogram change between the frames before and after (the smallest over `persist`
    # frames on each side, so that a flash or a shake of fewer frames does not count) is at least `floor`
    # and `ratio` times the mean change around it, or at least `strong` whatever the neighbours do (a
    # slideshow changes at every frame).
    floor: float = 0.3
    ratio: float = 3.0
    strong: float = 0.5
    persist: int = 3
    around: int = 8  # frames either side whose change sets the adaptive level
    # A dissolve: frames `gap` apart differ by at least `gradual`, the most within `gap` either side.
    gap: int = 10
    gradual: float = 0.5


def hsv_histograms(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 72) float32: a joint hue x saturation histogram (64 bins, weight 3/4)
    and a value histogram (8 bins, 1/4), each summing to its weight. Brightness weighs least: lights
    change it within a shot."""
    rgb = frames.reshape(len(frames), -1, 3).astype(np.float32) / 255.0
    top, bottom = rgb.max(2), rgb.min(2)
    chroma = top - bottom
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(top == r, (g - b) / safe % 6, np.where(top == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    saturation = np.where(top > 0, chroma / np.where(top > 0, top, 1.0), 0.0)
    h = np.minimum((hue * _HUES).astype(np.int64), _HUES - 1)
    s = np.minimum((saturation * _SATURATIONS).astype(np.int64), _SATURATIONS - 1)
    v = np.minimum((top * _VALUES).astype(np.int64), _VALUES - 1)
    n, pixels = rgb.shape[:2]
    row = (np.arange(n) * (_HUES * _SATURATIONS + _VALUES))[:, None]
    bins = np.concatenate([row + h * _SATURATIONS + s, row + _HUES * _SATURATIONS + v], 1)
    weights = np.concatenate([np.full((n, pixels), 0.75 / pixels), np.full((n, pixels), 0.25 / pixels)], 1)
    counts = np.bincount(bins.reshape(-1), weights.reshape(-1), minlength=n * (_HUES * _SATURATIONS + _VALUES))
    return counts.reshape(n, -1).astype(np.float32)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Half the L1 distance of histograms (the share of pixels that moved bins): 0 alike, 1 disjoint."""
    return 0.5 * np.abs(a - b).sum(-1)


def margin(cfg: HistogramConfig) -> int:
    """Frames of context either side that scoring a frame needs."""
    return max(cfg.persist + cfg.around, 2 * cfg.gap + cfg.persist)


def cut_scores(hists: np.ndarray, cfg: HistogramConfig, lo: int, hi: int) -> np.ndarray:
    """For frames lo..hi-1 of `hists`: 1.0 where a new shot starts at that frame, else 0 (the detector's
    decision as a score, so that it composes like the network's probabilities); frames past either end of
    `hists` are taken as the end frames repeated."""
    n, g = len(hists), cfg.gap
    wide = np.arange(lo - g, hi + g)  # the frames asked, and `gap` either side
    hard = _lasting(hists, wide - 1, wide, cfg.persist)
    span = [k for k in range(-cfg.around, cfg.around + 1) if k]
    nearby = np.mean([distance(_at(hists, wide + k - 1), _at(hists, wide + k)) for k in span], 0)
    is_hard = (hard >= cfg.strong) | ((hard >= cfg.floor) & (hard >= cfg.ratio * nearby))
    # Frames `gap` apart, again the smallest change over `persist` frames on each side (a flash is no
    # dissolve); none near the ends of a run, where frames past the ends would repeat.
    across = _lasting(hists, wide - g, wide + g, cfg.persist)
    soft = np.where((wide - g - cfg.persist >= 0) & (wide + g + cfg.persist <= n), across, 0.0)
    window = np.lib.stride_tricks.sliding_window_view(np.pad(soft, g), 2 * g + 1)
    near = np.lib.stride_tricks.sliding_window_view(np.pad(is_hard, g), 2 * g + 1)
    # A dissolve's middle: the largest change across `gap` frames around it, and no hard cut within `gap`.
    is_soft = (soft >= cfg.gradual) & (soft >= window.max(1)) & ~near.any(1)
    return (is_hard | is_soft)[g : g + hi - lo].astype(np.float32)


def lasting_change(hists: np.ndarray, cfg: HistogramConfig, lo: int, hi: int) -> np.ndarray:
    """For frames lo..hi-1: how much the picture changes there and stays changed, the larger of the change
    across the frame and the change across `gap` frames either side (a dissolve), each the smallest over
    `persist` frames on either side. A flash, shorter than `persist`, scores about 0."""
    i = np.arange(lo, hi)
    return np.maximum(_lasting(hists, i - 1, i, cfg.persist), _lasting(hists, i - cfg.gap, i + cfg.gap, cfg.persist))


def _at(hists: np.ndarray, i: np.ndarray) -> np.ndarray:
    return hists[np.clip(i, 0, len(hists) - 1)]  # past either end: the end frame repeated


def _lasting(hists: np.ndarray, before: np.ndarray, after: np.ndarray, persist: int) -> np.ndarray:
    """The smallest change between any of `persist` frames up to `before` and any of `persist` from `after`."""
    return np.min([distance(_at(hists, before - a), _at(hists, after + b)) for a in range(persist)
                   for b in range(persist)], 0)
