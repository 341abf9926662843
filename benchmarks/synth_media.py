"""Media for the benchmarks, made with PyAV alone (a GPU machine has no ffmpeg binary)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, seconds: float, size: tuple[int, int] = (320, 240), fps: int = 25,
               rate: int = 44_100) -> Path:
    """A moving gradient with a 440 Hz tone: H.264 video and AAC audio in an MP4."""
    w, h = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"preset": "ultrafast"}
        sound = out.add_stream("aac", rate=rate, layout="mono")
        ramp = np.add.outer(np.arange(h), np.arange(w)).astype(np.float32)
        for i in range(round(seconds * fps)):
            picture = np.stack([(ramp + 4 * i) % 256, (ramp * 0.5 + 8 * i) % 256, np.full_like(ramp, 128)], -1)
            out.mux(video.encode(av.VideoFrame.from_ndarray(picture.astype(np.uint8), format="rgb24")))
        samples = int(seconds * rate)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(sound.encode(frame))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return path


def loop_video(source: Path, path: Path, seconds: float) -> Path:
    """`source` repeated back to back until `seconds`, packets copied (no re-encoding: an hour of a
    GRID clip takes seconds to write), into a Matroska file, whose index lets decoders seek."""
    with av.open(str(source)) as probe:
        span = probe.duration / av.time_base + 0.1  # a little over the clip: timestamps stay increasing
    loops = max(1, round(seconds / span))
    with av.open(str(path), "w", format="matroska") as out:
        streams: dict[int, av.stream.Stream] = {}
        for loop in range(loops):
            with av.open(str(source)) as inp:
                kept = [s for s in inp.streams if s.type in ("video", "audio")]
                if not streams:
                    streams = {s.index: out.add_stream_from_template(s) for s in kept}
                for packet in inp.demux(*kept):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    shift = round(loop * span / packet.time_base)
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
    return path
