"""Which frames and which audio make up a clip.

A clip is 16 face frames plus the 5.12-s audio window that goes with them. The model was trained on
DFEW clips of a few seconds, each seen whole: 16 equal segments over all its frames, one frame per
segment. Every clip dfer builds follows that rule (`frame_picks`):
- a data set clip (`dfer evaluate`) and a video no longer than the model's span (`dfer predict`)
  are sampled whole, exactly alike: one clip at the middle of each segment, or two at 1/4 and 3/4;
  the audio is the track from the start;
- a longer video gets clips of a DFEW-like span spread over it (or one per window of a timeline),
  each sampled as if it were such a clip, with the audio window centred on it.

Frame order: the reference's MAFW loader lists a clip's frames by file name sorted as strings
(0.jpg, 1.jpg, 10.jpg, 11.jpg, ..., 19.jpg, 2.jpg, ...), so the official MAFW checkpoints were trained
and tested on their 16 frames in that scrambled order (`reference_order`). dfer feeds those
checkpoints the same order; its own training uses time order.

The second half is the CPU front end that `dfer predict` and `dfer prepare` share (`load_clips`):
decode each planned clip's frames and audio, find and crop the face, compute the fbank. It also owns
the one vocabulary of flags that records and cache entries carry (`file_flags`):
    no_audio         the file has no audio track (the model gets its no-audio input)
    audio_error      the audio track exists but could not be decoded (treated as no audio)
    silent_audio     there is a track, and every clip's audio is too quiet to carry speech
    no_face          no clip had a face in enough frames: nothing was classified
    faces_found      frames where the face was detected (the rest were filled in), of `frames`
    distinct_frames  different video frames among those sampled: below `frames` when a short or
                     low-rate video repeats frames to fill its clips
    still_image      a single distinct frame (a photo read as a 1-frame video): no motion to read
    faces_seen       distinct faces (tracks) in the clip that had the most: people are followed
                     within a clip, not across clips seconds apart
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from . import faces, media
from .errors import MediaError, UsageError
from .media import HEARD_S

TIME_ORDER = "time"
REFERENCE_ORDER = "reference-lexicographic"
FRAME_ORDERS = (TIME_ORDER, REFERENCE_ORDER)

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


@dataclass(frozen=True)
class ClipPlan:
    index: int
    start: float
    end: float
    frame_times: np.ndarray  # in the order the frames are fed to the model
    audio_start: float
    audio_end: float  # may pass the end of the file: the model hears the rest as padding


# Windows per part of a long timeline: about 50 MB of face crops and fbanks at 160 px (1.5 MB a
# window), and enough parts for the workers to share even a 10-minute video at --window 2.
TIMELINE_PART = 32


@dataclass(frozen=True)
class FilePart:
    """One task of the predict pipeline: a whole file (`info` None: the worker probes and plans it),
    or part `index` of `count` of a long timeline, which the main process probes and plans once. A
    timeline goes through in parts so that no process holds more than a part's crops at once."""

    path: str
    info: media.VideoInfo | None = None
    plans: tuple[ClipPlan, ...] = ()
    index: int = 0
    count: int = 1


def file_tasks(paths: Sequence[str], cfg: ClipConfig, window: float | None) -> Iterator[FilePart]:
    """The predict pipeline's tasks: whole files, or with `window` the parts of each timeline, probed
    and planned here. A file that fails to probe stays whole: its worker meets the failure again and
    records it."""
    for path in paths:
        try:
            info = media.probe(path, list_frames_up_to=0.0) if window else None
        except Exception:
            info = None
        if info is None:
            yield FilePart(path)
            continue
        plans = plan_file(info, cfg, window)
        count = max(1, math.ceil(len(plans) / TIMELINE_PART))
        for k in range(count):
            yield FilePart(path, info, tuple(plans[k * TIMELINE_PART:(k + 1) * TIMELINE_PART]), k, count)


def parse_frame_order(name: str) -> str:
    """"time", "reference" or "reference-lexicographic" -> one of FRAME_ORDERS."""
    order = REFERENCE_ORDER if name == "reference" else name
    if order not in FRAME_ORDERS:
        raise UsageError(f"frame order {name!r}: choose time or reference")
    return order


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


def plan_file(info: media.VideoInfo, cfg: ClipConfig, window: float | None = None) -> list[ClipPlan]:
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


@dataclass
class ClipInputs:
    """One clip after the front end: the model's inputs and what was seen on the way."""

    plan: ClipPlan
    track: faces.FaceTrack  # crops (T, S, S, 3) uint8, or None when the clip has no face
    fbank: np.ndarray  # (512, 128) float32: the audio model input
    silent: bool  # a track was heard, too quiet in the clip's window to carry speech
    frame_times: np.ndarray  # the decoded frames' own times: equal times are the same frame


def read_clip_media(path: str, info: media.VideoInfo, plans: Sequence[ClipPlan], frames_per_clip: int,
                    group: int = 8, audio_errors: list[str] | None = None,
                    ) -> Iterator[tuple[ClipPlan, np.ndarray, np.ndarray, np.ndarray | None, int]]:
    """Each clip's frames, their own times, and the audio of its window (None without a track).
    Frames are decoded for `group` clips per pass, so that a long timeline never holds more than a
    few hundred full-size frames at once. With `audio_errors`, a track that fails to decode is
    reported there and heard as no track (the faces are still worth classifying); without it the
    MediaError propagates."""
    errors = audio_errors if audio_errors is not None else []
    for g in range(0, len(plans), group):
        chunk = plans[g:g + group]
        frames, times = media.read_frames(path, np.concatenate([p.frame_times for p in chunk]))
        for k, p in enumerate(chunk):
            # After one failure the track is heard as missing: every later read would fail the same way.
            heard = info.has_audio and not errors
            wave, rate = read_audio(path, p.audio_start, p.audio_end, audio_errors) if heard else (None, 0)
            span = slice(k * frames_per_clip, (k + 1) * frames_per_clip)
            yield p, frames[span], times[span], wave, rate


def read_audio(path: str | os.PathLike, start: float, end: float,
               audio_errors: list[str] | None = None) -> tuple[np.ndarray | None, int]:
    """The audio between `start` and `end` (None, 0 without a track). With `audio_errors`, an
    unreadable track is reported there and heard as none; without it the MediaError propagates."""
    try:
        return media.read_audio(path, start, end)
    except MediaError as e:
        if audio_errors is None:
            raise
        audio_errors.append(str(e))
        return None, 0


def load_clips(path: str, info: media.VideoInfo, plans: Sequence[ClipPlan], face_config: faces.FaceConfig,
               size: int, detector: faces.FaceDetector, audio_errors: list[str] | None = None,
               lap: Callable[[str], None] = lambda stage: None,
               keep_frames: Callable[[np.ndarray], None] | None = None) -> Iterator[ClipInputs]:
    """The model inputs of each planned clip (see read_clip_media for `audio_errors`). `lap(stage)`
    times the stages; `keep_frames` receives each clip's full-size frames, which are otherwise
    dropped as soon as the face is cropped."""
    frames_per_clip = len(plans[0].frame_times) if plans else 0
    for plan, frames, times, wave, rate in read_clip_media(path, info, plans, frames_per_clip,
                                                           audio_errors=audio_errors):
        lap("decode")
        if keep_frames is not None:
            keep_frames(frames)
        track = faces.faces_for_clip(frames, detector, face_config, size)
        lap("faces")
        fbank = media.model_input(wave, rate)
        lap("fbank")
        yield ClipInputs(plan, track, fbank, wave is not None and media.is_silent(wave), times)


def file_flags(info: media.VideoInfo, clips: Sequence[ClipInputs], audio_errors: Sequence[str] = ()) -> dict:
    """The flags of a file's record (or a cache entry) in the one vocabulary above."""
    found = sum(c.track.found for c in clips)
    total = sum(c.track.total for c in clips)
    distinct = len(np.unique(np.concatenate([c.frame_times for c in clips]))) if clips else 0
    flags = {"no_audio": not info.has_audio or bool(audio_errors),
             "silent_audio": bool(clips) and all(c.silent for c in clips),
             "no_face": not any(c.track.crops is not None for c in clips), "faces_found": found,
             "frames": total, "distinct_frames": distinct, "still_image": distinct == 1,
             "faces_seen": max((c.track.faces_seen for c in clips), default=0)}
    if audio_errors:
        flags["audio_error"] = audio_errors[0]
    return flags


def merge_flags(parts: Sequence[dict], seen_times: Sequence[np.ndarray]) -> dict:
    """The flags of a file analysed in parts (a long timeline), from each part's flags and the
    times of the frames each part decoded (a frame two parts share counts once)."""
    distinct = len(np.unique(np.concatenate(seen_times))) if seen_times else 0
    flags = {"no_audio": any(f["no_audio"] for f in parts), "silent_audio": all(f["silent_audio"] for f in parts),
             "no_face": all(f["no_face"] for f in parts), "faces_found": sum(f["faces_found"] for f in parts),
             "frames": sum(f["frames"] for f in parts), "distinct_frames": distinct, "still_image": distinct == 1,
             "faces_seen": max((f["faces_seen"] for f in parts), default=0)}
    errors = [f["audio_error"] for f in parts if "audio_error" in f]
    if errors:
        flags["audio_error"] = errors[0]
    return flags
