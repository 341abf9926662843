"""The CPU front end that predict and prepare share: decode each planned clip's frames and audio, crop
the face, compute the fbank."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
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


_HELD_CLIPS = 2


def read_clip_media(path: str, info: decode.VideoInfo, plans: Sequence[ClipPlan], frames_per_clip: int,
                    audio_errors: list[str] | None = None, every_channel: bool = False,
                    ) -> Iterator[tuple[ClipPlan, np.ndarray, np.ndarray, np.ndarray | None, int]]:
    """Each clip's frames, their own times, and the audio of its window (None without a track; every
    channel, (channels, samples), with `every_channel`), in the plans' order.
    The frames come from one pass through the file, and only a few clips are held at a time (groups of
    eight clips held 350 MB of 720p frames). With `audio_errors`, a track that fails to decode is reported there
    and heard as no track (the faces are still worth classifying); without it the MediaError propagates."""
    if not plans:
        return
    errors = audio_errors if audio_errors is not None else []
    with ExitStack() as stack:
        audio = None
        if info.has_audio:
            with _reported(audio_errors):
                audio = stack.enter_context(decode.AudioReader(path))
        waiting = [frames_per_clip] * len(plans)
        held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        done, left = 0, len(plans) * frames_per_clip
        decoding = decode.iter_frames(path, np.concatenate([p.frame_times for p in plans]))
        for k, image, stamp in decoding:
            clip, slot = divmod(k, frames_per_clip)
            if clip not in held:
                held[clip] = np.empty((frames_per_clip, *image.shape), np.uint8), np.empty(frames_per_clip)
            held[clip][0][slot], held[clip][1][slot] = image, stamp
            waiting[clip] -= 1
            left -= 1
            if not left:
                decoding.close()  # the decoder's full-size frames go before the last clips are worked on
            # A clip waits while at most _HELD_CLIPS are held, so that a file's two clips are worked on
            # once the decoder is closed (its 8K frames beside the detector's cost 40 MB more).
            while done < len(plans) and not waiting[done] and (not left or len(held) > _HELD_CLIPS):
                frames, times = held.pop(done)
                p = plans[done]
                done += 1
                wave, rate = None, 0
                # After one failure the track is heard as missing: every later read would fail the same way.
                if audio is not None and not errors:
                    with _reported(audio_errors):
                        wave, rate = audio.read(p.audio_start, p.audio_end, every_channel)
                yield p, frames, times, wave, rate


def read_audio(path: str | os.PathLike, start: float, end: float, audio_errors: list[str] | None = None,
               every_channel: bool = False) -> tuple[np.ndarray | None, int]:
    """The audio between `start` and `end` (None, 0 without a track). With `audio_errors`, an
    unreadable track is reported there and heard as none; without it the MediaError propagates."""
    with _reported(audio_errors):
        return decode.read_audio(path, start, end, every_channel)
    return None, 0


@contextmanager
def _reported(audio_errors: list[str] | None) -> Iterator[None]:
    """An unreadable track's MediaError noted in `audio_errors`; without a list, it propagates."""
    try:
        yield
    except MediaError as e:
        if audio_errors is None:
            raise
        audio_errors.append(str(e))


def load_clips(path: str, info: decode.VideoInfo, plans: Sequence[ClipPlan], face_config: FaceConfig,
               size: int, detector: detect.FaceDetector, audio_errors: list[str] | None = None,
               lap: Callable[[str], None] = lambda stage: None,
               keep_frames: Callable[[np.ndarray], None] | None = None, every_face: bool = False,
               channels: str = FIRST) -> Iterator[ClipInputs]:
    """The model inputs of each planned clip (see read_clip_media for `audio_errors`). `lap(stage)`
    times the stages; `keep_frames` receives each clip's full-size frames, which are otherwise
    dropped as soon as the face is cropped. With `every_face`, every person too (faces_for_clip).
    `channels`: FIRST hears channel 0 (the benchmarks), VOICE the channel carrying the voice."""
    frames_per_clip = len(plans[0].frame_times) if plans else 0
    every_channel = every_face or channels == VOICE
    for plan, frames, times, wave, rate in read_clip_media(path, info, plans, frames_per_clip,
                                                           audio_errors=audio_errors, every_channel=every_channel):
        lap("decode")
        if keep_frames is not None:
            keep_frames(frames)
        track = follow.faces_for_clip(frames, detector, face_config, size, every_face)
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
