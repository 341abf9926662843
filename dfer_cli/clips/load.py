"""The CPU front end that predict and prepare share: decode each planned clip's frames and audio, crop
the face, compute the fbank."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dfer_cli.clips.plan import ClipPlan
from dfer_cli.errors import MediaError
from dfer_cli.faces import detect, follow
from dfer_cli.faces.config import FaceConfig
from dfer_cli.media import decode, fbank
from dfer_cli.media.channels import FIRST, VOICE, voice_channel


@dataclass
class ClipInputs:
    """One clip after the front end: the model's inputs and what was seen on the way."""

    plan: ClipPlan
    track: follow.FaceTrack  # crops (T, S, S, 3) uint8, or None when the clip has no face
    fbank: np.ndarray  # (512, 128) float32: the audio model input
    silent: bool  # a track was heard, too quiet in the clip's window to carry speech
    frame_times: np.ndarray  # the decoded frames' own times: equal times are the same frame
    # With people: the audio window's every channel (channels, samples) where a person is seen, for
    # speech presence and who speaks; else None.
    wave: np.ndarray | None = None
    rate: int = 0
    channel: str | None = None  # with channels=VOICE: which channel the model heard (media.channels)
    scale: float = 1.0  # the file's pixels per decoded pixel (decode.MAX_FRAME_PIXELS): boxes to the file's


def read_clip_media(path: str, info: decode.VideoInfo, plans: Sequence[ClipPlan], frames_per_clip: int,
                    group: int = 8, audio_errors: list[str] | None = None, every_channel: bool = False,
                    ) -> Iterator[tuple[ClipPlan, np.ndarray, np.ndarray, np.ndarray | None, int]]:
    """Each clip's frames, their own times, and the audio of its window (None without a track; every
    channel, (channels, samples), with `every_channel`).
    Frames are decoded for `group` clips per pass, so that a long timeline never holds more than a
    few hundred full-size frames at once. With `audio_errors`, a track that fails to decode is
    reported there and heard as no track (the faces are still worth classifying); without it the
    MediaError propagates."""
    errors = audio_errors if audio_errors is not None else []
    for g in range(0, len(plans), group):
        chunk = plans[g:g + group]
        frames, times = decode.read_frames(path, np.concatenate([p.frame_times for p in chunk]))
        for k, p in enumerate(chunk):
            # After one failure the track is heard as missing: every later read would fail the same way.
            heard = info.has_audio and not errors
            wave, rate = (read_audio(path, p.audio_start, p.audio_end, audio_errors, every_channel) if heard
                          else (None, 0))
            span = slice(k * frames_per_clip, (k + 1) * frames_per_clip)
            yield p, frames[span], times[span], wave, rate


def read_audio(path: str | os.PathLike, start: float, end: float, audio_errors: list[str] | None = None,
               every_channel: bool = False) -> tuple[np.ndarray | None, int]:
    """The audio between `start` and `end` (None, 0 without a track). With `audio_errors`, an
    unreadable track is reported there and heard as none; without it the MediaError propagates."""
    try:
        return decode.read_audio(path, start, end, every_channel)
    except MediaError as e:
        if audio_errors is None:
            raise
        audio_errors.append(str(e))
        return None, 0


def load_clips(path: str, info: decode.VideoInfo, plans: Sequence[ClipPlan], face_config: FaceConfig,
               size: int, detector: detect.FaceDetector, audio_errors: list[str] | None = None,
               lap: Callable[[str], None] = lambda stage: None,
               keep_frames: Callable[[np.ndarray], None] | None = None, max_people: int = 0,
               channels: str = FIRST) -> Iterator[ClipInputs]:
    """The model inputs of each planned clip (see read_clip_media for `audio_errors`). `lap(stage)`
    times the stages; `keep_frames` receives each clip's full-size frames, which are otherwise
    dropped as soon as the face is cropped. With `max_people`, every person too (faces_for_clip).
    `channels`: FIRST hears channel 0 (the benchmarks), VOICE the channel carrying the voice."""
    frames_per_clip = len(plans[0].frame_times) if plans else 0
    every_channel = max_people > 0 or channels == VOICE
    for plan, frames, times, wave, rate in read_clip_media(path, info, plans, frames_per_clip,
                                                           audio_errors=audio_errors, every_channel=every_channel):
        lap("decode")
        if keep_frames is not None:
            keep_frames(frames)
        track = follow.faces_for_clip(frames, detector, face_config, size, max_people)
        lap("faces")
        heard, channel = wave, None
        if wave is not None and channels == VOICE:
            heard, channel = voice_channel(wave, info.audio_layout)
        elif wave is not None and wave.ndim == 2:
            heard = wave[0]
        features = fbank.model_input(heard, rate)
        lap("fbank")
        every = wave if track.people else None
        yield ClipInputs(plan, track, features, heard is not None and fbank.is_silent(heard), times, every, rate,
                         channel, info.width / frames.shape[2])
