"""What the stages before the model share: a file (or one part of a timeline) opened (`open_file`: probe,
plans, its record begun), its model rows stacked (`model_inputs`), and the records of a file that failed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfer_cli.clips.flags import file_flags
from dfer_cli.clips.load import ClipInputs
from dfer_cli.clips.plan import ClipPlan, plan_file
from dfer_cli.errors import DferError
from dfer_cli.media import decode
from dfer_cli.people.inputs import ClipPeople
from dfer_cli.predict.config import PredictConfig
from dfer_cli.predict.files import display_path
from dfer_cli.predict.tasks import FilePart
from dfer_cli.results.records import ClipResult, FileResult


@dataclass(frozen=True)
class RowOwner:
    """Whose a model row is: a clip (an index into the record's clips) and its person (None: its main face)."""

    clip: int
    person: int | None


@dataclass
class PreparedFile:
    """A file after the CPU stages: its record so far and the model inputs of its face clips."""

    result: FileResult
    videos: np.ndarray | None = None  # (K, T, S, S, 3) uint8
    audios: np.ndarray | None = None  # (K, frames, mels) float32
    rows: list[RowOwner] = field(default_factory=list)  # whose each row of videos and audios is
    frame_times: np.ndarray | None = None  # (K, T) s: the crops' own times in the video
    audio_starts: np.ndarray | None = None  # (K,) s: where each clip's audio window starts
    has_audio: bool = False  # a track was heard (the explanation measures the voice only then)
    picture: Path | None = None  # with explain_dir: where its explanation is drawn
    part: FilePart | None = None  # the task it came from (clips.FilePart); None: a whole file
    seen_times: np.ndarray | None = None  # a timeline part's decoded frame times (merge_flags)


class Clock:
    """Adds each stage's seconds to a record's timings, stage after stage."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(self.timings.get(stage, 0.0) + now - self.last, 4)
        self.last = now


@dataclass
class OpenedFile:
    """A file probed: its record begun (its media), what the probe found, the plans of its clips, and the
    clock of its stages. `audio_errors` collects an unreadable track's reason (heard as none, and flagged)."""

    path: str
    result: FileResult
    info: decode.VideoInfo
    plans: Sequence[ClipPlan]
    clock: Clock
    part: FilePart | None = None
    audio_errors: list[str] = field(default_factory=list)


def open_file(path: str, config: PredictConfig, part: FilePart | None = None) -> OpenedFile:
    """The media stage: probe the file (unless `part` brings the probe and the plans) and plan its clips."""
    result = FileResult(path=display_path(path))
    clock = Clock(result.timings)
    info = part.info if part and part.info else decode.probe(
        path, list_frames_up_to=0.0 if config.window else config.clips.whole_up_to)
    result.media = {"duration": round(info.duration, 3), "width": info.width, "height": info.height,
                    "rotation": info.rotation, "frame_rate": round(info.frame_rate or 0.0, 3),
                    "audio_rate": info.audio_rate}
    clock.lap("probe")
    plans = part.plans if part and part.info else plan_file(info, config.clips, config.window)
    return OpenedFile(path, result, info, plans, clock, part)


def model_inputs(opened: OpenedFile, clips: Sequence[ClipInputs], seen: Sequence[ClipPeople],
                 people: bool) -> PreparedFile:
    """The model's rows of a file (each clip's, from the people stage: `seen`) stacked, and its clips'
    records; `people`: the clips were read for every person (the record's people_seen flag)."""
    result, part = opened.result, opened.part
    prepared = PreparedFile(result, part=part)
    videos, audios, times, starts = [], [], [], []
    for c, mine in zip(clips, seen, strict=True):
        p = c.plan
        for person, video, audio in mine.rows:
            prepared.rows.append(RowOwner(len(result.clips), person))
            videos.append(video)
            audios.append(audio)
            times.append(c.frame_times)
            starts.append(p.audio_start)
        result.clips.append(ClipResult(p.index, round(p.start, 3), round(p.end, 3), round(p.audio_start, 3),
                                       round(p.audio_end, 3), c.track.found, c.track.total,
                                       faces_seen=c.track.faces_seen, people=mine.people, speech=mine.speech))
    result.flags = file_flags(opened.info, clips, opened.audio_errors, people=people)
    if part and part.count > 1:
        prepared.seen_times = np.unique(np.concatenate([c.frame_times for c in clips]))
    if videos:
        prepared.videos, prepared.audios = np.stack(videos), np.stack(audios)
        prepared.frame_times, prepared.audio_starts = np.stack(times), np.array(starts)
        prepared.has_audio = not result.flags["no_audio"]
    return prepared


def failed(path: str, error: Exception, part: FilePart | None = None) -> PreparedFile:
    """The record of a file whose stages raised: a DferError's reason, else the exception named."""
    if isinstance(error, DferError):
        reason = getattr(error, "reason", str(error))
    else:
        reason = f"{type(error).__name__}: {error}"
    return PreparedFile(FileResult.failed(display_path(path), reason), part=part)


def timed_out(part: FilePart, limit: float) -> PreparedFile:
    """The record of a file whose worker gave no result within `limit` seconds and was killed."""
    return PreparedFile(FileResult.failed(display_path(part.path), f"no result after {limit:g} s (the file stopped "
                                          f"delivering data?); --time-limit sets the limit"), part=part)


def lost(part: FilePart, reason: str) -> PreparedFile:
    """The record of a file whose worker died on it (a crash in a decoder, out of memory, killed)."""
    return PreparedFile(FileResult.failed(display_path(part.path), reason), part=part)
