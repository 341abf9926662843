"""Which visible face speaks each stretch of speech, or none (a voice off screen): pure numpy.

Per face and video frame the mouth opening (inner and outer lip), per frame the log energy of the voice band;
both high-passed and Pearson-correlated over a segment's speech frames at a few lags. The best face speaks if its
r passes a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# FaceMesh (468 points): inner lip 13 / 14, outer lip 0 / 17; forehead 10 and chin 152 give the face height.
INNER_LIP = (13, 14)
OUTER_LIP = (0, 17)
FACE_HEIGHT = (10, 152)
# The mean of both openings: the outer one moves with the jaw even while the lips touch (b, p, m), which let the
# threshold rise from 0.45 to 0.5 at the same pairs accuracy (off-screen voices rejected: 65% -> 78%).
LIP_PAIRS = (INNER_LIP, OUTER_LIP)


@dataclass(frozen=True)
class AttributionConfig:
    """Every parameter of the attribution; the defaults are the measured choice (benchmarks/speaker_bench.py)."""

    band_hz: tuple[float, float] = (800.0, 4000.0)  # consonant and formant energy follows the lips best
    # Frames the lips may lag (> 0) or lead the voice. GRID's own offset is 0-1 frames ((0, 1) there: 100% of pairs,
    # 89% off screen), but files are often a frame off either way: the wider set keeps them (95-100% of pairs).
    lags: tuple[int, ...] = (-1, 0, 1, 2)
    # Taken off r at the first and the last lag: the lips are far more often in step with the voice, or a
    # frame behind, than at the edges of the window, where chance maxima of a voice from off screen sit.
    # Measured on the GRID composites: 0.1 gives pairs 98.2% -> 100%, off screen rejected 77.5% -> 87.3%,
    # and files whose audio is a frame early or late fall from 95-100% of pairs to 79-81% (0.05: 98.6%,
    # 82.1%, 78-90%).
    edge_margin: float = 0.1
    highpass_frames: int = 9  # the series minus their moving average over this many frames: syllable rate stays
    threshold: float = 0.5  # a face speaks if its best r exceeds this; pairs fall fast above it, off-screen below
    min_frames: int = 8  # fewer usable frames than this: no score for that face
    pool_frames: int = 25  # a segment with fewer speech frames borrows the nearest speech frames of its neighbours
    run_gap: float = 1.5  # a gap between frame times over this many frame steps starts a new run


@dataclass(frozen=True)
class SegmentAttribution:
    """One speech segment: who speaks it (a person index, or None: nobody visible), and why."""

    start: float
    end: float
    person: int | None
    scores: np.ndarray  # (persons,) best r over the lags; NaN where the face had too few frames
    frames: int  # speech frames the scores were computed on (pooling included)


def lip_opening(landmarks: np.ndarray, pairs: Sequence[tuple[int, int]] = LIP_PAIRS) -> np.ndarray:
    """Mouth opening over face height from FaceMesh landmarks (..., 468, 2 or 3), pixel x and y: shape (...).

    The mean distance of the landmark ``pairs`` (default: inner and outer lip, top to bottom), in 2-D pixels:
    normalised coordinates would stretch one axis by the frame's aspect ratio.
    """
    xy = np.asarray(landmarks, dtype=np.float64)[..., :2]
    opening = np.mean([np.linalg.norm(xy[..., i, :] - xy[..., j, :], axis=-1) for i, j in pairs], axis=0)
    height = np.linalg.norm(xy[..., FACE_HEIGHT[0], :] - xy[..., FACE_HEIGHT[1], :], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(height > 0, opening / height, np.nan)


def _frame_step(frame_times: np.ndarray) -> float:
    steps = np.diff(frame_times)
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else 0.04


def band_gain(freqs: np.ndarray, sample_rate: int, band_hz: tuple[float, float], order: int = 4) -> np.ndarray:
    """Power gain of a zero-phase (forward-backward) Butterworth band-pass of ``order`` at ``freqs``: |H|^2.

    The digital filter's magnitude through the bilinear transform's frequency warping, so no IIR loop is needed:
    it is applied to spectra. Equals scipy's butter(order, band, "band") run with sosfiltfilt.
    """
    warp = np.tan(np.pi * np.asarray(freqs, dtype=np.float64) / sample_rate)
    low, high = (np.tan(np.pi * min(f, 0.499 * sample_rate) / sample_rate) for f in band_hz)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (warp**2 - low * high) / (warp * (high - low))
        gain = 1.0 / (1.0 + x ** (2 * order))
    return np.where(np.isfinite(gain), gain, 0.0)


def _band_passed(wave: np.ndarray, sample_rate: int, band_hz: tuple[float, float], block: int = 1 << 18) -> np.ndarray:
    # The gain applied to FFTs of blocks with margins on both sides (the zero-phase filter's response reaches
    # both ways, a few ms): an hour of audio never sits in one transform.
    margin = 8192
    n = wave.shape[-1]
    block = max(1, min(block, n))  # a clip's few seconds get a transform of their own size, not of the block's
    out = np.empty_like(wave)
    size = 1 << (block + 2 * margin - 1).bit_length()
    gain = band_gain(np.fft.rfftfreq(size, 1 / sample_rate), sample_rate, band_hz)
    for first in range(0, n, block):
        lo, hi = max(0, first - margin), min(n, first + block + margin)
        spectrum = np.fft.rfft(wave[..., lo:hi], n=size, axis=-1) * gain
        out[..., first:first + block] = np.fft.irfft(spectrum, n=size, axis=-1)[..., first - lo:first - lo + block][
            ..., : min(block, n - first)
        ]
    return out


def loudness_track(
    wave: np.ndarray,
    sample_rate: int,
    frame_times: Sequence[float] | np.ndarray,
    band_hz: tuple[float, float] = AttributionConfig.band_hz,
) -> np.ndarray:
    """Log energy of the ``band_hz`` band per video frame: (frames,), 0.5 * log(mean power + 1e-8).

    ``wave`` is (samples,) or (channels, samples) and starts at time 0 of ``frame_times`` (seconds). Frame i's
    energy is the band-passed wave's mean square from t_i to t_i + one frame step: what plays while the frame
    shows. A longer or tapered window smooths syllables away (pairs fell from 97% to 80-89%). Only the stretch
    of each run of frames is filtered. Channels' powers are averaged: a voice on one channel counts.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim == 1:
        wave = wave[None]
    times = np.asarray(frame_times, dtype=np.float64)
    out = np.full(len(times), 0.5 * np.log(1e-8))
    if len(times) == 0 or wave.shape[-1] == 0:
        return out
    step = _frame_step(times)
    width = max(1, int(round(step * sample_rate)))
    starts = np.round(times * sample_rate).astype(np.int64)
    runs = frame_runs(times)
    pad = 8192  # filter context either side of a run
    n = wave.shape[-1]
    for run in np.unique(runs):
        cols = np.flatnonzero(runs == run)
        lo = int(np.clip(starts[cols].min() - pad, 0, n))
        hi = int(np.clip(starts[cols].max() + width + pad, 0, n))
        if hi <= lo:
            continue
        passed = _band_passed(wave[:, lo:hi], sample_rate, band_hz)
        energy = np.concatenate([[0.0], np.cumsum((passed**2).mean(axis=0))])
        a = np.clip(starts[cols] - lo, 0, hi - lo)
        b = np.clip(starts[cols] + width - lo, 0, hi - lo)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(b > a, (energy[b] - energy[a]) / np.maximum(b - a, 1), 0.0)
        out[cols] = 0.5 * np.log(np.maximum(mean, 0.0) + 1e-8)
    return out


def frame_runs(frame_times: np.ndarray, run_gap: float = AttributionConfig.run_gap) -> np.ndarray:
    """A run number per frame: frames closer than ``run_gap`` frame steps to the previous one share a run."""
    times = np.asarray(frame_times, dtype=np.float64)
    if len(times) < 2:
        return np.zeros(len(times), dtype=np.int64)
    return np.concatenate([[0], np.cumsum(np.diff(times) > run_gap * _frame_step(times))])


def highpass(series: np.ndarray, runs: np.ndarray, frames: int) -> np.ndarray:
    """``series`` (..., frames) minus its centred moving average over ``frames``, within each run; NaN stays NaN.

    Near a run's ends and next to NaN the average is over the frames there are, so no edge is invented.
    """
    x = np.asarray(series, dtype=np.float64)
    out = np.full_like(x, np.nan)
    half = frames // 2
    kernel = np.ones(2 * half + 1)
    def window_sums(a: np.ndarray) -> np.ndarray:
        # "full" then the centred slice: "same" returns the kernel's length for a run shorter than it.
        return np.apply_along_axis(np.convolve, -1, a, kernel, "full")[..., half:half + a.shape[-1]]

    for run in np.unique(runs):
        cols = np.flatnonzero(runs == run)
        part = x[..., cols]
        valid = np.isfinite(part)
        total = window_sums(np.where(valid, part, 0.0))
        count = window_sums(valid.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[..., cols] = np.where(valid, part - total / count, np.nan)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / denominator) if denominator > 0 else 0.0


def lagged_scores(
    lips: np.ndarray, voice: np.ndarray, runs: np.ndarray, frames: np.ndarray, config: AttributionConfig
) -> np.ndarray:
    """Best r over ``config.lags`` per person between high-passed ``voice`` at ``frames`` and ``lips`` (persons,
    all frames) ``lag`` frames later in the same run; NaN for a person with fewer than ``min_frames`` pairs."""
    scores = np.full(lips.shape[0], np.nan)
    n = lips.shape[1]
    edges = {min(config.lags), max(config.lags)} if len(config.lags) > 2 else set()
    for lag in config.lags:
        shifted = frames + lag
        keep = (shifted >= 0) & (shifted < n)
        audio_at, video_at = frames[keep], shifted[keep]
        same_run = runs[audio_at] == runs[video_at]
        audio_at, video_at = audio_at[same_run], video_at[same_run]
        for person in range(lips.shape[0]):
            a, v = voice[audio_at], lips[person, video_at]
            ok = np.isfinite(a) & np.isfinite(v)
            if ok.sum() < config.min_frames:
                continue
            r = _pearson(a[ok], v[ok]) - (config.edge_margin if lag in edges else 0.0)
            scores[person] = r if np.isnan(scores[person]) else max(scores[person], r)
    return scores


def _pooled(segment_frames: np.ndarray, speech_frames: np.ndarray, times: np.ndarray, want: int) -> np.ndarray:
    # A short segment (a word or two) gives a noisy r: add the speech frames nearest to it in time, which mostly
    # belong to the same speaker's neighbouring segments; a long segment keeps its own frames only.
    if len(segment_frames) >= want or len(speech_frames) <= len(segment_frames):
        return segment_frames
    t0, t1 = times[segment_frames[0]], times[segment_frames[-1]]
    t = times[speech_frames]
    distance = np.maximum(t0 - t, 0) + np.maximum(t - t1, 0)
    nearest = speech_frames[np.argsort(distance, kind="stable")[:want]]
    return np.unique(np.concatenate([segment_frames, nearest]))


def attribute_segments(
    frame_times: Sequence[float] | np.ndarray,
    openings: np.ndarray,
    loudness: np.ndarray,
    segments: Sequence[tuple[float, float]],
    config: AttributionConfig = AttributionConfig(),
) -> list[SegmentAttribution]:
    """Who speaks each of ``segments`` ((start, end) seconds, as from ``speech.speech_segments``).

    ``frame_times`` (frames,) seconds, one or several contiguous runs at the video frame rate, on the clock of
    ``segments``; ``openings`` (persons, frames) from ``lip_opening``, NaN where the face was not found;
    ``loudness`` (frames,) from ``loudness_track``. A segment is scored on its own speech frames (a frame is in a
    segment when the audio it shows with is), pooled with the nearest speech frames of other segments up to
    ``config.pool_frames``. Segments with no frame at all are left out of the answer.
    """
    times = np.asarray(frame_times, dtype=np.float64)
    lips_raw = np.atleast_2d(np.asarray(openings, dtype=np.float64))
    if lips_raw.shape[1] != len(times) or len(loudness) != len(times):
        raise ValueError(f"{len(times)} frame times, openings {lips_raw.shape}, loudness {len(loudness)}")
    if len(times) == 0 or not segments:
        return []
    runs = frame_runs(times, config.run_gap)
    lips = highpass(lips_raw, runs, config.highpass_frames)
    voice = highpass(np.asarray(loudness, dtype=np.float64), runs, config.highpass_frames)
    centres = times + _frame_step(times) / 2
    members = [np.flatnonzero((centres >= start) & (centres < end)) for start, end in segments]
    speech_frames = np.unique(np.concatenate(members)) if members else np.zeros(0, np.int64)
    answer = []
    for (start, end), own in zip(segments, members, strict=True):
        if len(own) == 0:
            continue
        frames = _pooled(own, speech_frames, times, config.pool_frames)
        scores = lagged_scores(lips, voice, runs, frames, config)
        person = None
        if np.isfinite(scores).any():
            best = int(np.nanargmax(scores))
            person = best if scores[best] > config.threshold else None
        answer.append(SegmentAttribution(float(start), float(end), person, scores, len(frames)))
    return answer


def speaking_time(attributions: Sequence[SegmentAttribution]) -> dict[int | None, float]:
    """Seconds of speech per person over a file; the key None holds speech that no visible face speaks."""
    total: dict[int | None, float] = {}
    for a in attributions:
        total[a.person] = total.get(a.person, 0.0) + (a.end - a.start)
    return total
