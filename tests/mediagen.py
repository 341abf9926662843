"""Media files made on the fly for tests, with the ffmpeg binary that the imageio-ffmpeg wheel ships.

Every ``make_*`` function writes one file at ``path`` (its suffix picks the container) and returns ``path``;
a failing ffmpeg run raises ``RuntimeError`` with ffmpeg's message. Pictures come from ``testsrc2`` (a moving
test card), so neighbouring frames differ; sounds from ``sine`` or ``anullsrc`` (digital silence).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import imageio_ffmpeg

Audio = Literal["sine", "silent"] | None

_H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def ffmpeg(*args: str | Path) -> None:
    """Run ffmpeg quietly with ``args``, overwriting outputs."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    done = subprocess.run([*command, *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {done.stderr.strip()}")


def _audio_input(audio: Literal["sine", "silent"], seconds: float, rate: int, channels: int) -> list[str]:
    layout = "mono" if channels == 1 else "stereo"
    source = (
        f"sine=frequency=440:sample_rate={rate}:duration={seconds}"
        if audio == "sine"
        else f"anullsrc=channel_layout={layout}:sample_rate={rate}:duration={seconds}"
    )
    # sine is mono; pan gives it the asked channel count.
    return ["-f", "lavfi", "-i", source, "-af", f"pan={layout}|c0=c0" + ("|c1=c0" if channels == 2 else "")]


def make_video(
    path: Path,
    seconds: float = 2.0,
    *,
    fps: float = 25,
    size: tuple[int, int] = (320, 240),
    audio: Audio = "sine",
    rate: int = 44100,
    channels: int = 2,
    gop: int | None = None,
    extra_args: Sequence[str] = (),
) -> Path:
    """A constant-frame-rate H.264 video (frame i at i / fps) with a 440 Hz tone, silence or no audio.

    ``gop`` sets the keyframe interval in frames; ``extra_args`` go before the output path (output options).
    """
    width, height = size
    args: list[str] = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"]
    if audio is not None:
        args += _audio_input(audio, seconds, rate, channels)
    args += [*_H264, *(["-g", str(gop)] if gop else [])]
    if audio is not None:
        codec = "aac" if path.suffix in {".mp4", ".m4a", ".mov", ".mkv"} else "pcm_s16le"
        args += ["-c:a", codec, "-shortest"]
    ffmpeg(*args, *extra_args, path)
    return path


def make_single_frame_video(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A video holding exactly one frame and no audio."""
    width, height = size
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=25", "-frames:v", "1", *_H264, path)
    return path


def make_rotated_video(
    path: Path, rotation: int = 90, seconds: float = 1.0, size: tuple[int, int] = (320, 240)
) -> Path:
    """A video stored at ``size`` whose display matrix says: turn ``rotation`` degrees counter-clockwise.

    Phones record this way. Current ffmpeg ignores ``-metadata:s:v rotate=``, so the display matrix is set
    while remuxing a plain video.
    """
    plain = path.with_name(f"{path.stem}.unrotated{path.suffix}")
    make_video(plain, seconds, size=size, audio=None)
    ffmpeg("-display_rotation", str(rotation), "-i", plain, "-c", "copy", path)
    plain.unlink()
    return path


def make_vfr_video(path: Path, times: Sequence[float], size: tuple[int, int] = (160, 120)) -> Path:
    """A variable-frame-rate video with one frame at each of ``times`` (seconds, increasing, 1 ms steps).

    Written with a 1 ms time base, so the file's timestamps equal ``times`` rounded to the millisecond.
    Meant for tens of frames: the timestamps become one nested ffmpeg expression.
    """
    expression = "0"
    for index in reversed(range(len(times))):
        expression = f"if(eq(N,{index}),{times[index]:.3f},{expression})"
    width, height = size
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=25",
        "-frames:v", str(len(times)),
        "-vf", f"settb=1/1000,setpts='({expression})/TB'",
        "-fps_mode", "vfr", "-enc_time_base:v", "1/1000", "-video_track_timescale", "1000",
        *_H264, path,
    )  # fmt: skip
    return path


def make_flash_beep_video(
    path: Path,
    events: Sequence[float],
    seconds: float,
    *,
    flash: float = 0.08,
    beep: float = 0.1,
    fps: float = 25,
    rate: int = 44100,
) -> Path:
    """A black video that turns white for ``flash`` s and beeps (1 kHz) for ``beep`` s at each of ``events``.

    Between events the picture is black and the audio digital silence: ground truth for audio-video alignment.
    """
    flashes = "+".join(f"between(t,{t},{t + flash})" for t in events)
    beeps = "+".join(f"between(t,{t},{t + beep})" for t in events)
    ffmpeg(
        "-f", "lavfi", "-i", f"color=black:size=160x120:rate={fps}:duration={seconds}",
        "-f", "lavfi", "-i",
        f"aevalsrc='if({beeps},0.5*sin(2*PI*1000*t),0)':sample_rate={rate}:duration={seconds}",
        "-vf", f"drawbox=color=white:t=fill:enable='{flashes}'",
        *_H264, "-c:a", "aac", "-shortest", path,
    )  # fmt: skip
    return path


def make_audio_file(
    path: Path, seconds: float = 2.0, *, rate: int = 44100, audio: Literal["sine", "silent"] = "sine"
) -> Path:
    """An audio-only file (no video stream): a 440 Hz tone or silence, stereo."""
    args = _audio_input(audio, seconds, rate, channels=2)
    ffmpeg(*args, *(["-c:a", "aac"] if path.suffix in {".m4a", ".mp4"} else []), path)
    return path


def damage(source: Path, target: Path, at: float = 0.5, length: int = 4096) -> Path:
    """Copy ``source`` to ``target`` with ``length`` bytes at fraction ``at`` of it overwritten by noise.

    The noise is a fixed pattern, so the damage is the same on every run.
    """
    data = bytearray(source.read_bytes())
    start = int(len(data) * at)
    noise = bytes((index * 151 + 7) % 251 for index in range(length))
    data[start : start + length] = noise[: len(data) - start]
    target.write_bytes(bytes(data))
    return target


def truncate(source: Path, target: Path, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``source``'s bytes: its header then claims more than it holds.

    An MP4 keeps its index at the end unless made with ``extra_args=("-movflags", "+faststart")``.
    """
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def make_voice_on_channel(path: Path, source: Path, layout: str, voice: str, music: Sequence[str] = (),
                          codec: str = "aac") -> Path:
    """`source`'s picture with its sound (a voice) on the `voice` channel of `layout` ("stereo", "5.1")
    alone, a quieter 220 Hz tone (music) on the `music` channels and digital silence on the rest, coded
    with `codec`."""
    names = {"stereo": ("FL", "FR"), "5.1": ("FL", "FR", "FC", "LFE", "BL", "BR")}[layout]
    gains = "|".join(f"{n}={'c0' if n == voice else 'c1' if n in music else '0*c0'}" for n in names)
    ffmpeg(
        "-i", source, "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=44100:duration=10",
        "-filter_complex", f"[0:a]aformat=channel_layouts=mono[v];[1:a]volume=0.2[m];"
                           f"[v][m]amerge=inputs=2,pan={layout}|{gains}[a]",
        "-map", "0:v", "-map", "[a]", "-c:v", "copy", "-c:a", codec, "-shortest", path,
    )  # fmt: skip
    return path


def make_eight_channels(path: Path, source: Path, codec: str = "aac", seconds: float = 3.0) -> Path:
    """`source`'s picture and its first ``seconds`` with its sound on all eight channels of 7.1, coded with
    ``codec`` (aac, libopus, pcm_s16le...)."""
    pan = "pan=7.1|" + "|".join(f"c{i}=c0" for i in range(8))
    ffmpeg("-i", source, "-t", str(seconds), "-af", pan, "-c:v", "copy", "-c:a", codec, path)
    return path
