"""Probe video files and decode the frames and audio the model needs, with PyAV, on one clock per file."""

# All times here are seconds on one clock for the whole file: the container's timestamps minus its start
# time, so a frame and an audio sample with the same time play together. Frame times always come from
# timestamps, never from an assumed frame rate, since phones write variable-frame-rate video.

from __future__ import annotations

import ctypes
import io
import math
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.container
import numpy as np

from dfer_cli.errors import MediaError

# What a folder is searched for (`dfer predict DIR`, folder data sets); anything else is still read
# when named directly.
VIDEO_EXTENSIONS = tuple(sorted((".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv", ".mpg", ".mpeg", ".m4v", ".ts",
                                 ".3gp")))


# A target further than this past the next decoded frame is reached by seeking, nearer ones by decoding on:
# seeking lands on a keyframe, often a couple of seconds back, so short hops are cheaper decoded.
SEEK_AHEAD_S = 2.0
# Frames larger than this many pixels are scaled down as they are converted (a 1280x720 frame's worth):
# detection letterboxes whole frames and tiles of 0.6 of them to 128-192 px and face crops are 160-224
# px, so a larger frame adds memory, not faces. Kept whole, a 2-s 8K clip's frames took 10 GB.
MAX_FRAME_PIXELS = 1280 * 720
# Audio decoders need a few frames before the asked start to settle (AAC overlap, the MP3 bit reservoir).
_AUDIO_PREROLL_S = 0.5


@dataclass(frozen=True, eq=False)
class MediaBytes:
    """A file's bytes, read from a URI (`s3://`, `file://`, ...): decoded from memory, named by the URI."""

    name: str
    data: bytes = field(repr=False)

    def __str__(self) -> str:
        return self.name


Source = str | Path | MediaBytes  # what the readers here take: a path, or a file's bytes


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns from a video's headers and its first frame."""

    path: Path | MediaBytes
    duration: float  # seconds of video from its first frame, as the file declares it
    width: int  # as displayed, after rotation
    height: int
    rotation: int  # degrees counter-clockwise that frames are turned to display upright: 0, 90, 180 or 270
    frame_rate: float  # average, for information only: frame times come from timestamps
    has_audio: bool
    audio_rate: int  # samples per second, 0 without audio
    audio_channels: int
    start_time: float  # time of the first video frame
    # Every frame's own time in presentation order, when `probe` was asked to list them (a short
    # video), else None.
    frame_times: np.ndarray | None = field(default=None, compare=False)
    audio_layout: tuple[str, ...] = ()  # the channels' names in order, e.g. FL, FR, FC, LFE, BL, BR


def probe(path: Source, list_frames_up_to: float = 0.0) -> VideoInfo:
    """Read a video's description, decoding only its first frame (cheap even for long or lying files).
    A video no longer than `list_frames_up_to` seconds also gets the time of each of its frames,
    read from the packets without decoding (see `frame_times`).

    Raises MediaError for a missing, unreadable or non-media file, a file without video or of no duration.
    """
    path = _source(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        _choose_threads(stream)
        first = next(_decode(container, stream), None)
        if first is None:
            raise MediaError(path, "no video frame could be decoded")
        start = _time(first, _origin(container), path)
        duration = _declared_duration(container, stream)
        if duration is None:
            duration = _scanned_end(container, stream, first) - first.time
        if duration <= 0:
            raise MediaError(path, "the video has zero duration")
        rotation = _rotation(first)
        width, height = (first.height, first.width) if rotation % 180 else (first.width, first.height)
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=path,
            duration=duration,
            width=width,
            height=height,
            rotation=rotation,
            frame_rate=float(stream.average_rate or stream.guessed_rate or 0.0),
            has_audio=audio is not None,
            audio_rate=audio.sample_rate if audio else 0,
            audio_channels=audio.channels if audio else 0,
            start_time=start,
            frame_times=frame_times(path, list_frames_up_to) if duration <= list_frames_up_to else None,
            audio_layout=_channel_names(audio.layout) if audio else (),
        )


def frame_times(path: Source, up_to: float = math.inf) -> np.ndarray | None:
    """The time of every frame, in presentation order, from the packets alone (no decoding): the
    frames that the decoder will output, as a frame-extraction tool numbers them. None when a packet
    carries no timestamp, or when the stream runs more than a second past `up_to` seconds (a header
    that understated the duration), so that a lying file is never read to its end."""
    path = _source(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        origin = _origin(container)
        times = []
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:  # flush packets; frames an edit list cuts
                continue
            if packet.pts is None:
                return None
            # The float arithmetic of av.Frame.time, so that each listed time equals the decoded
            # frame's own time bit for bit and read_frames lands on that very frame.
            base = packet.time_base
            times.append(float(packet.pts) * base.numerator / base.denominator - origin)
            if times[-1] > up_to + 1.0:
                return None
    return np.sort(np.array(times)) if times else None


def read_frames(path: Source, times: Sequence[float],
                max_pixels: int | None = MAX_FRAME_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """The frames on screen at ``times``: (N, H, W, 3) uint8 RGB upright, and their own times (N,) in s;
    frames of more than `max_pixels` pixels scaled down to that many (`frame_size`), None: as stored.

    The frame on screen at t is the last one starting at or before t; before the first frame it is the first,
    past the end the last. Decoding walks forward and seeks over long gaps, so a few dozen frames cost about
    the same from an hour-long file as from a short one. Corrupt packets are skipped.
    """
    # Written in place, in the order asked: a list stacked at the end held every frame twice (88 MB more
    # for a 4K file's two clips).
    images, stamps = None, np.empty(len(times))
    for k, image, stamp in iter_frames(path, times, max_pixels):
        if images is None:
            images = np.empty((len(stamps), *image.shape), np.uint8)
        images[k], stamps[k] = image, stamp
    return images, stamps


def iter_frames(path: Source, times: Sequence[float],
                max_pixels: int | None = MAX_FRAME_PIXELS) -> Iterator[tuple[int, np.ndarray, float]]:
    """`read_frames` one frame at a time, in time order: (index into ``times``, the frame, its own time).
    A frame on screen at several times is the same array each time. The file stays open between frames,
    so a caller can use each frame and let it go while the decoding walks on."""
    path = _source(path)
    targets = np.asarray(times, dtype=np.float64)
    if targets.ndim != 1 or not len(targets) or not np.all(np.isfinite(targets)):
        raise ValueError("read_frames needs a non-empty list of finite times (seconds)")
    with _open(path) as container:
        cursor = _Cursor(container, _video_stream(container, path), path, max_pixels)
        shown, image = None, None
        for k in np.argsort(targets, kind="stable"):
            frame = cursor.frame_at(float(targets[k]))
            if frame is None:
                raise MediaError(path, "no video frame could be decoded")
            # A frame repeats by its time, not by holding it: a held frame is one more full-size buffer
            # beside the decoder's own while it decodes on (50 MB at 8K).
            if cursor.time(frame) != shown:
                shown, image = cursor.time(frame), cursor.upright(frame)
            del frame
            yield int(k), image, shown


def read_audio(path: Source, start: float = 0.0, end: float = math.inf,
               every_channel: bool = False) -> tuple[np.ndarray | None, int]:
    """The first audio channel over [start, end) as float32 in [-1, 1], and its sample rate (the file's own);
    with `every_channel`, all of them, (channels, samples).

    Returns (None, 0) for a file without audio. The span is cut to the sample (to the millisecond in MKV,
    whose timestamps are that coarse); a span past the end of the track comes back shorter, and a track
    starting late is zero-filled from ``start`` so that it stays aligned with the video.
    """
    with AudioReader(path) as reader:
        return reader.read(start, end, every_channel)


class AudioReader:
    """`read_audio` for many spans of one file through one open container. Opening a file decodes a video
    frame to learn its streams (80 MB at 8K): a timeline's windows open it once, and before its frames are
    decoded, so that the two never add up."""

    def __init__(self, path: Source) -> None:
        self._path = _source(path)
        self._stack = ExitStack()
        self._container = self._stack.enter_context(_open(self._path))
        self._fresh = True

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def read(self, start: float = 0.0, end: float = math.inf,
             every_channel: bool = False) -> tuple[np.ndarray | None, int]:
        """See `read_audio`."""
        if not self._container.streams.audio:
            return None, 0
        if start <= _AUDIO_PREROLL_S and not self._fresh:
            # Read from the top without a seek, which some formats cannot do exactly: open it again.
            self._stack.close()
            self._container = self._stack.enter_context(_open(self._path))
        self._fresh = False
        container, path = self._container, self._path
        stream = container.streams.audio[0]
        rate = stream.sample_rate
        origin = _origin(container)
        if start > _AUDIO_PREROLL_S:
            seek_to = (start - _AUDIO_PREROLL_S + origin) / stream.time_base
            container.seek(int(seek_to), stream=stream, backward=True, any_frame=False)
        first = round(start * rate)
        stop = math.inf if math.isinf(end) else round(end * rate)
        chunks: list[tuple[int, np.ndarray]] = []
        position = None
        for frame in _decode(container, stream):
            if position is None:
                # Later frames follow on sample by sample, as ffmpeg writes them out, whatever rounding
                # their timestamps carry.
                position = round(_time(frame, origin, path) * rate)
            if position >= stop:
                break
            samples = _channels(frame, every_channel)
            chunks.append((position, samples))
            position += samples.shape[-1]
        end_sample = min(stop, position if position is not None else first)
        channels = max((samples.shape[0] for _, samples in chunks), default=1)  # a layout may change mid-track
        wave = np.zeros((channels, max(0, end_sample - first)), np.float32)
        for offset, samples in chunks:
            lo, hi = max(offset, first), min(offset + samples.shape[-1], end_sample)
            if lo < hi:
                wave[: len(samples), lo - first : hi - first] = samples[:, lo - offset : hi - offset]
        return (wave if every_channel else wave[0]), rate


class _Cursor:
    """A position in a video stream that moves forward to each asked time, seeking over long gaps."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, path: Path | MediaBytes,
                 max_pixels: int | None = None) -> None:
        self._container, self._stream, self._path = container, stream, path
        # A fixed size keeps frames stackable when a stream changes resolution midway.
        self._size = frame_size(stream.codec_context.width, stream.codec_context.height, max_pixels)
        self._origin = _origin(container)
        _choose_threads(stream)
        self._restart()

    def _restart(self) -> None:
        self._frames = _decode(self._container, self._stream)
        self._shown: av.VideoFrame | None = None
        self._next = next(self._frames, None)

    def time(self, frame: av.VideoFrame) -> float:
        return _time(frame, self._origin, self._path)

    def frame_at(self, t: float) -> av.VideoFrame | None:
        """The frame on screen at ``t``; ``t`` must not go back from the previous call."""
        if self._next is not None and self.time(self._next) < t - SEEK_AHEAD_S:
            self._seek(t)
        while self._next is not None and self.time(self._next) <= t:
            # One at a time: a tuple assignment would hold the frame before too while the next is decoded
            # (three full-size frames, 50 MB more at 8K).
            self._shown = self._next
            self._next = next(self._frames, None)
        return self._shown if self._shown is not None else self._next

    def _seek(self, t: float) -> None:
        # A seek can land past t: past the real end of a file whose header claims more than it holds, or a
        # keyframe late in formats without an index (MPEG-PS). Step back further until it lands in time;
        # a time before the start lands on the first frame.
        back = 0.0
        while True:
            self._seek_to(t - back)
            if (self._next is not None and self.time(self._next) <= t) or t - back < 0:
                return
            back = max(1.0, 2 * back)

    def _seek_to(self, t: float) -> None:
        offset = int((t + self._origin) / self._stream.time_base)
        self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
        self._restart()

    def upright(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = self._size
        # Area averaging: a clean picture when shrinking by large factors, where bilinear would alias.
        image = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        return np.ascontiguousarray(np.rot90(image, _rotation(frame) // 90))


def _source(path: Source) -> Path | MediaBytes:
    return path if isinstance(path, MediaBytes) else Path(path)


def frame_size(width: int, height: int, max_pixels: int | None = MAX_FRAME_PIXELS) -> tuple[int, int]:
    """The size (width, height) that `read_frames` gives frames stored at width x height: the same
    shape within `max_pixels` pixels (None: no limit)."""
    if not max_pixels or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, round(width * scale)), max(1, round(height * scale))


@contextmanager
def _open(path: Path | MediaBytes) -> Iterator[av.container.InputContainer]:
    # What the files closed before freed goes back first: their decoders die with their last reference,
    # after the `with` that closes them.
    _TRIM()
    if isinstance(path, Path):
        if not path.exists():
            raise MediaError(path, "no such file")
        if path.is_dir():
            raise MediaError(path, "is a directory, not a media file")
        if not path.is_file():  # opening a FIFO blocks until a writer comes, a device may never end
            raise MediaError(path, f"is {_special_kind(path)}, not a regular file")
    try:
        # BytesIO shares the bytes it is given: a file read from a URI is not copied again.
        container = av.open(io.BytesIO(path.data) if isinstance(path, MediaBytes) else str(path))
    except PermissionError:
        raise MediaError(path, "permission denied") from None
    except av.error.FFmpegError as error:
        raise MediaError(path, f"not a readable media file ({error.strerror})") from None
    _TRIM()  # and what opening freed: it decodes a frame or two to learn the streams
    with container:
        yield container


def _trimmer() -> Callable[[], object]:
    """glibc's malloc_trim, where there is one: the decoder's large frames are freed into the heap, which
    glibc keeps (a closed 8K file left 80 MB resident, and the next file's frames came on top)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc: macOS, musl
        return lambda: None
    return lambda: trim(0)


_TRIM = _trimmer()


def _choose_threads(stream: av.VideoStream) -> None:
    """Frame threads multiply decoding speed (they only delay the first frame, which costs nothing here),
    but each holds frames of its own: above MAX_FRAME_PIXELS (190 MB more at 8K), slices only."""
    context = stream.codec_context
    stream.thread_type = "AUTO" if context.width * context.height <= MAX_FRAME_PIXELS else "SLICE"


def _special_kind(path: Path) -> str:
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def _video_stream(container: av.container.InputContainer, path: Path | MediaBytes) -> av.VideoStream:
    # Cover art in music files shows up as a one-picture video stream.
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise MediaError(path, "no video stream")
    return streams[0]


def _decode(container: av.container.InputContainer, stream: av.stream.Stream) -> Iterator[av.frame.Frame]:
    """Decoded frames of one stream from the current position; a packet that fails to decode is skipped."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


def _origin(container: av.container.InputContainer) -> float:
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _time(frame: av.frame.Frame, origin: float, path: Path | MediaBytes) -> float:
    if frame.time is None:
        raise MediaError(path, "the stream carries no timestamps")
    return frame.time - origin


def _declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _scanned_end(
    container: av.container.InputContainer, stream: av.VideoStream, first: av.VideoFrame
) -> float:
    """Where the last packet ends, for files whose headers give no duration (e.g. web recordings)."""
    end = first.time + float((first.duration or 0) * first.time_base)
    for packet in container.demux(stream):
        if packet.pts is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end


def _channel_names(layout: av.AudioLayout) -> tuple[str, ...]:
    """The channels' names in order; c0, c1, ... where the layout leaves them unnamed (PCM in MKV:
    FFmpeg calls them NONE)."""
    names = tuple(c.name for c in layout.channels)
    return names if "NONE" not in names else tuple(f"c{i}" for i in range(len(names)))


def _rotation(frame: av.VideoFrame) -> int:
    # The display matrix may hold any angle; only quarter turns occur in practice, and they are lossless.
    return round(frame.rotation / 90) % 4 * 90


_SAMPLE_TYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32,
                 "dbl": np.float64}


def _channels(frame: av.AudioFrame, every_channel: bool) -> np.ndarray:
    """The frame's first channel, or every channel: (channels, samples) float32."""
    # Each plane is read as it is: PyAV counts one plane too many for 8 planar channels, and its
    # to_ndarray then reads past the frame (a crash, exit 139).
    channels = frame.layout.nb_channels
    kind = _SAMPLE_TYPES[frame.format.name.removesuffix("p")]
    if frame.format.is_planar:
        planes = range(channels if every_channel else 1)
        samples = np.stack([np.frombuffer(frame.planes[i], kind, frame.samples) for i in planes])
    else:
        data = np.frombuffer(frame.planes[0], kind, frame.samples * channels).reshape(-1, channels).T
        samples = data if every_channel else data[:1]
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128) / 128
    if samples.dtype.kind == "i":
        return samples.astype(np.float32) / -np.iinfo(samples.dtype).min
    return samples.astype(np.float32)
