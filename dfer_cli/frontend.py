"""The CPU front end that `dfer predict` and `dfer prepare` share: decode a clip's frames and audio,
find and crop the face, compute the fbank.

It also owns the one vocabulary of flags that records and cache entries carry:
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

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import audio, faces, media
from .clips import ClipPlan
from .errors import MediaError


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
        fbank = audio.model_input(wave, rate)
        lap("fbank")
        yield ClipInputs(plan, track, fbank, wave is not None and audio.is_silent(wave), times)


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
