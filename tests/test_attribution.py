"""Speaker attribution: the numpy parts on synthetic series, then silero-vad and FaceMesh on GRID composites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfer_cli.people import attribute, speech
from dfer_cli.people.attribute import AttributionConfig, attribute_segments

GRID = Path(__file__).resolve().parents[2] / "shared" / "media" / "grid"
FPS = 25


def _syllables(rng: np.random.Generator, frames: int) -> np.ndarray:
    # Mouth opening at about 4 syllables a second: smoothed random pulses.
    pulses = rng.random(frames) < 0.3
    return np.convolve(pulses.astype(float), np.hanning(5), "same") + 0.01 * rng.standard_normal(frames)


def test_highpass_keeps_nan_and_runs_apart():
    x = np.array([1.0, 2, 3, np.nan, 5, 100, 101, 102])
    runs = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    out = attribute.highpass(x, runs, 3)
    assert np.isnan(out[3]) and np.isfinite(out[[0, 1, 2, 4]]).all()
    assert out[6] == pytest.approx(0.0) and out[1] == pytest.approx(0.0)  # 100 never meets 5
    assert attribute.frame_runs(np.array([0, 0.04, 0.08, 1.0, 1.04])).tolist() == [0, 0, 0, 1, 1]


def test_loudness_track_follows_the_band():
    rate = 16000
    t = np.arange(2 * rate) / rate
    inside = np.sin(2 * np.pi * 1500 * t) * (t >= 1)  # in band, second half only
    below = np.sin(2 * np.pi * 200 * t)  # a loud pitch below the band throughout
    track = attribute.loudness_track(np.stack([inside, below]), rate, np.arange(50) / FPS)
    assert track[30:45].min() > track[5:20].max() + 3  # e^3: the band tone stands out
    assert np.ptp(track[5:20]) < 1.0  # the 200 Hz tone does not leak in


def test_conversation_split_and_off_screen_on_synthetic_series():
    rng = np.random.default_rng(1)
    frames = 250  # 10 s: person 0 speaks 0-5 s, person 1 5-10 s
    lips = np.stack([_syllables(rng, frames), _syllables(rng, frames)])
    voice = np.where(np.arange(frames) < 125, np.roll(lips[0], -1), np.roll(lips[1], -1))  # lips lag one frame
    loud = np.log(0.05 + voice) + 0.05 * rng.standard_normal(frames)
    times = np.arange(frames) / FPS
    segments = [(0.2, 2.4), (2.6, 4.8), (5.2, 7.0), (7.2, 9.8)]
    got = attribute_segments(times, lips, loud, segments)
    assert [a.person for a in got] == [0, 0, 1, 1]
    assert all(a.scores[a.person] > 0.6 for a in got)
    # A third voice over the same faces: nobody visible speaks.
    other = np.log(0.05 + _syllables(rng, frames))
    assert [a.person for a in attribute_segments(times, lips, other, segments)] == [None] * 4
    # Person 0's face lost: no score for it, and the voice is not given to person 1.
    lost = lips.copy()
    lost[0] = np.nan
    first = attribute_segments(times, lost, loud, segments[:1])[0]
    assert np.isnan(first.scores[0]) and first.person is None


def test_frames_in_several_runs_and_short_segments_pool():
    rng = np.random.default_rng(2)
    frames = 200
    lips = np.stack([_syllables(rng, frames), _syllables(rng, frames)])
    loud = np.log(0.05 + lips[1])
    times = np.arange(frames) / FPS
    keep = np.r_[0:60, 100:160]  # only the frames around speech were analysed: two runs
    segments = [(0.0, 2.4), (4.0, 4.3), (4.4, 6.4)]  # the middle one holds 7 frames only
    got = attribute_segments(times[keep], lips[:, keep], loud[keep], segments)
    assert [a.person for a in got] == [1, 1, 1]
    assert got[1].frames >= AttributionConfig().pool_frames
    alone = attribute_segments(times[keep], lips[:, keep], loud[keep], segments, AttributionConfig(pool_frames=0))
    assert alone[1].frames < 8 and alone[1].person is None  # too few frames to say


def test_speaking_time():
    a = attribute.SegmentAttribution(0.0, 1.5, 0, np.array([0.8]), 37)
    b = attribute.SegmentAttribution(2.0, 2.5, None, np.array([0.1]), 12)
    assert attribute.speaking_time([a, b]) == {0: 1.5, None: 0.5}


def test_resample_keeps_the_band_and_drops_aliases():
    rate = 44100
    t = np.arange(rate) / rate
    assert np.abs(speech.resample(np.sin(2 * np.pi * 1000 * t), rate)[500:-500]).max() == pytest.approx(1, abs=1e-3)
    assert np.abs(speech.resample(np.sin(2 * np.pi * 12000 * t), rate)[500:-500]).max() < 1e-3
    assert speech.resample(np.zeros((2, 48000)), 48000).shape == (2, 16000)
