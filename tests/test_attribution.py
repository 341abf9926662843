"""Speaker attribution: the numpy parts on synthetic series, then silero-vad and FaceMesh on GRID composites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA

from dfer_cli.people import attribution, vad
from dfer_cli.people.attribution import AttributionConfig, attribute_segments

GRID = MEDIA / "grid"
FPS = 25


def _syllables(rng: np.random.Generator, frames: int) -> np.ndarray:
    # Mouth opening at about 4 syllables a second: smoothed random pulses.
    pulses = rng.random(frames) < 0.3
    return np.convolve(pulses.astype(float), np.hanning(5), "same") + 0.01 * rng.standard_normal(frames)


def test_highpass_keeps_nan_and_runs_apart():
    x = np.array([1.0, 2, 3, np.nan, 5, 100, 101, 102])
    runs = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    out = attribution.highpass(x, runs, 3)
    assert np.isnan(out[3]) and np.isfinite(out[[0, 1, 2, 4]]).all()
    assert out[6] == pytest.approx(0.0) and out[1] == pytest.approx(0.0)  # 100 never meets 5
    assert attribution.frame_runs(np.array([0, 0.04, 0.08, 1.0, 1.04])).tolist() == [0, 0, 0, 1, 1]


def test_loudness_track_follows_the_band():
    rate = 16000
    t = np.arange(2 * rate) / rate
    inside = np.sin(2 * np.pi * 1500 * t) * (t >= 1)  # in band, second half only
    below = np.sin(2 * np.pi * 200 * t)  # a loud pitch below the band throughout
    track = attribution.loudness_track(np.stack([inside, below]), rate, np.arange(50) / FPS)
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
    a = attribution.SegmentAttribution(0.0, 1.5, 0, np.array([0.8]), 37)
    b = attribution.SegmentAttribution(2.0, 2.5, None, np.array([0.1]), 12)
    assert attribution.speaking_time([a, b]) == {0: 1.5, None: 0.5}


def test_resample_keeps_the_band_and_drops_aliases():
    rate = 44100
    t = np.arange(rate) / rate
    assert np.abs(vad.resample(np.sin(2 * np.pi * 1000 * t), rate)[500:-500]).max() == pytest.approx(1, abs=1e-3)
    assert np.abs(vad.resample(np.sin(2 * np.pi * 12000 * t), rate)[500:-500]).max() < 1e-3
    assert vad.resample(np.zeros((2, 48000)), 48000).shape == (2, 16000)


# ---- GRID composites: silero-vad and mediapipe's FaceMesh as the landmark source -------------------------------

LEFT, RIGHT, THIRD = "bbaf2n", "lrwp9a", "swiz3n"
LISTEN = (  # the first 10 frames (GRID's silent start) forwards and backwards: a face listening, not speaking
    "trim=end_frame=10,setpts=PTS-STARTPTS,split[{t}f][{t}b];[{t}b]reverse[{t}r];[{t}f][{t}r]concat=n=2,"
    "loop=loop=3:size=20,trim=end_frame=75,setpts=N/25/TB"
)


def _grid(*names: str) -> list[str]:
    paths = [GRID / f"{n}.mpg" for n in names]
    if not all(p.exists() for p in paths):
        pytest.skip("the GRID clips are not in ../shared/media/grid")
    return [a for p in paths for a in ("-i", str(p))]


def _frames(tmp_path: Path, names: tuple[str, ...], graph: str, width: int) -> np.ndarray:
    from mediagen import ffmpeg

    out = tmp_path / "frames.rgb"
    ffmpeg(*_grid(*names), "-filter_complex", graph, "-map", "[v]", "-f", "rawvideo", "-pix_fmt", "rgb24", out)
    return np.fromfile(out, np.uint8).reshape(-1, 288, width, 3)


def _wave(tmp_path: Path, names: tuple[str, ...], graph: str | None = None) -> tuple[np.ndarray, int]:
    """(2, samples) float32 at 44.1 kHz: the first input's audio, or what ``graph`` (ending in [a]) makes."""
    from mediagen import ffmpeg

    out = tmp_path / "audio.f32"
    mapping = ["-filter_complex", graph, "-map", "[a]"] if graph else ["-map", "0:a"]
    ffmpeg(*_grid(*names), *mapping, "-f", "f32le", "-ac", "2", "-ar", "44100", out)
    return np.fromfile(out, np.float32).reshape(-1, 2).T.copy(), 44100


def _openings(frames: np.ndarray, slots: int) -> np.ndarray:
    """(slots, frames) lip openings from FaceMesh; a face goes to the vertical strip its nose is in."""
    face_mesh = pytest.importorskip("mediapipe.python.solutions.face_mesh")
    n, height, width = frames.shape[:3]
    out = np.full((slots, n), np.nan)
    with face_mesh.FaceMesh(static_image_mode=False, max_num_faces=slots) as mesh:
        for i, frame in enumerate(frames):
            for face in mesh.process(frame).multi_face_landmarks or []:
                xy = np.array([(p.x * width, p.y * height) for p in face.landmark])
                out[min(slots - 1, int(xy[1, 0] // (width / slots))), i] = attribution.lip_opening(xy)
    return out


def _who(openings: np.ndarray, wave: np.ndarray, rate: int) -> list[attribution.SegmentAttribution]:
    times = np.arange(openings.shape[1]) / FPS
    segments = vad.speech_segments(wave, rate)
    return attribute_segments(times, openings, attribution.loudness_track(wave, rate, times), segments)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> np.ndarray:
    pytest.importorskip("mediapipe")
    return _openings(_frames(tmp_path_factory.mktemp("pair"), (LEFT, RIGHT), "[0:v][1:v]hstack[v]", 720), 2)


@pytest.mark.parametrize("slot", [0, 1])
def test_the_speaker_side_by_side_is_named(pair, tmp_path, slot):
    wave, rate = _wave(tmp_path, ((LEFT, RIGHT)[slot],))
    got = _who(pair, wave, rate)
    assert got and max(attribution.speaking_time(got).items(), key=lambda kv: kv[1])[0] == slot


def test_a_voice_off_screen_is_nobody_visible(pair, tmp_path):
    wave, rate = _wave(tmp_path, (THIRD,))
    got = _who(pair, wave, rate)
    assert got and attribution.speaking_time(got).get(None, 0) > 0.5 * vad.speech_seconds(
        [(a.start, a.end) for a in got]
    )


def test_silence_under_two_faces_is_no_speech():
    rng = np.random.default_rng(0)
    assert vad.speech_seconds(vad.speech_segments(np.zeros((2, 3 * 44100), np.float32), 44100)) < 0.3
    hiss = (rng.standard_normal((2, 3 * 44100)) * 1e-3).astype(np.float32)  # -60 dBFS
    assert vad.speech_seconds(vad.speech_segments(hiss, 44100)) < 0.3


def test_a_voice_on_one_stereo_channel_is_found(tmp_path):
    wave, rate = _wave(tmp_path, (LEFT,), "[0:a]pan=stereo|c0=c0|c1=0*c0[a]")
    assert np.abs(wave[1]).max() == 0 and np.abs(wave[0]).max() > 0.01
    both = vad.speech_seconds(vad.speech_segments(wave[[0, 0]], rate))
    assert both > 1.0
    assert vad.speech_seconds(vad.speech_segments(wave, rate)) == pytest.approx(both, abs=0.1)
    # Two voices, one per channel, at different times: both are found.
    other, _ = _wave(tmp_path, (RIGHT,))
    two = np.stack([np.r_[wave[0], np.zeros(wave.shape[1])], np.r_[np.zeros(wave.shape[1]), other[1]]])
    found = vad.speech_segments(two, rate)
    assert any(e < 3.0 for _, e in found) and any(s > 3.0 for s, _ in found)


def test_a_conversation_is_split_between_its_speakers(tmp_path):
    graph = (
        "[0:v]setpts=PTS-STARTPTS,split[a0][a1];[1:v]setpts=PTS-STARTPTS,split[b0][b1];"
        f"[a1]{LISTEN.format(t='la')}[al];[b0]{LISTEN.format(t='lb')}[bl];"
        "[a0][al]concat=n=2,setpts=N/25/TB[left];[bl][b1]concat=n=2,setpts=N/25/TB[right];[left][right]hstack[v]"
    )
    openings = _openings(_frames(tmp_path, (LEFT, RIGHT), graph, 720), 2)
    wave, rate = _wave(tmp_path, (LEFT, RIGHT), "[0:a][1:a]concat=n=2:v=0:a=1[a]")
    got = _who(openings, wave, rate)
    assert {a.person for a in got if a.end < 3.0} == {0}
    assert {a.person for a in got if a.start > 3.0} == {1}


def test_highpass_of_a_run_shorter_than_its_window():
    """A 4-frame run (a short speech segment at a window's edge) against a 9-frame high-pass."""
    series = np.array([[1.0, 2.0, 3.0, 4.0, 10.0, 10.0]])
    out = attribution.highpass(series, np.array([0, 0, 0, 0, 1, 1]), 9)
    np.testing.assert_allclose(out[0, :4], [1 - 2.5, 2 - 2.5, 3 - 2.5, 4 - 2.5])
    np.testing.assert_allclose(out[0, 4:], [0.0, 0.0])
