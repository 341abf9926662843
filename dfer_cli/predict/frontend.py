"""One file (or one part of a timeline) to model inputs: probe, decode, crop faces, fbank; its record so far."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfer_cli.clips.flags import file_flags
from dfer_cli.clips.load import load_clips
from dfer_cli.clips.plan import plan_file
from dfer_cli.errors import DferError
from dfer_cli.faces import detect
from dfer_cli.media import decode
from dfer_cli.media.channels import VOICE
from dfer_cli.people.inputs import person_rows
from dfer_cli.people.speaking import clip_turns
from dfer_cli.predict.config import PredictConfig
from dfer_cli.predict.files import display_path
from dfer_cli.predict.tasks import FilePart
from dfer_cli.results.records import ClipResult, FileResult


@dataclass
class PreparedFile:
    """A file after the CPU stages: its record so far and the model inputs of its face clips."""

    result: FileResult
    videos: np.ndarray | None = None  # (K, T, S, S, 3) uint8
    audios: np.ndarray | None = None  # (K, frames, mels) float32
    clip_ids: list[int] = field(default_factory=list)  # each row's clip
    row_people: list[int | None] = field(default_factory=list)  # each row's person in its clip; None: main face
    frame_times: np.ndarray | None = None  # (K, T) s: the crops' own times in the video
    audio_starts: np.ndarray | None = None  # (K,) s: where each clip's audio window starts
    has_audio: bool = False  # a track was heard (the explanation measures the voice only then)
    picture: Path | None = None  # with explain_dir: where its explanation is drawn
    part: FilePart | None = None  # the task it came from (clips.FilePart); None: a whole file
    seen_times: np.ndarray | None = None  # a timeline part's decoded frame times (merge_flags)


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(self.timings.get(stage, 0.0) + now - self.last, 4)
        self.last = now


def prepare_file(path: str, config: PredictConfig, size: int, detector: detect.FaceDetector,
                 part: FilePart | None = None, device: str = "cpu") -> PreparedFile:
    """Probe (unless `part` brings the probe and the plans), then the front end: decode the clips'
    frames and audio spans, crop the face, fbank. The landmark model runs on `device`
    (runtime.device.frontend_device)."""
    result = FileResult(path=display_path(path))
    clock = _Clock(result.timings)
    info = part.info if part and part.info else decode.probe(
        path, list_frames_up_to=0.0 if config.window else config.clips.whole_up_to)
    result.media = {"duration": round(info.duration, 3), "width": info.width, "height": info.height,
                    "rotation": info.rotation, "frame_rate": round(info.frame_rate or 0.0, 3),
                    "audio_rate": info.audio_rate}
    clock.lap("probe")
    prepared = PreparedFile(result, part=part)
    plans = part.plans if part and part.info else plan_file(info, config.clips, config.window)
    audio_errors: list[str] = []  # an unreadable track is heard as none, and flagged
    people = config.people
    every = people.people == "all"
    clips = list(load_clips(path, info, plans, config.face, size, detector, audio_errors, lap=clock.lap,
                            every_face=every, channels=VOICE))
    turns = clip_turns(path, info, clips, people, device) if every else [[] for _ in clips]
    clock.lap("speakers")
    videos, audios, times, starts = [], [], [], []
    for c, said in zip(clips, turns, strict=True):
        p = c.plan
        record = ClipResult(p.index, round(p.start, 3), round(p.end, 3), round(p.audio_start, 3),
                            round(p.audio_end, 3), c.track.found, c.track.total, faces_seen=c.track.faces_seen)
        rows = [(None, c.track.crops, c.fbank)] if c.track.crops is not None else []
        if every and c.track.crops is not None:
            rows = person_rows(c, said, record, people.voice, people.max_people)
        for person, video, audio in rows:
            prepared.clip_ids.append(len(result.clips))
            prepared.row_people.append(person)
            videos.append(video)
            audios.append(audio)
            times.append(c.frame_times)
            starts.append(p.audio_start)
        result.clips.append(record)
    result.flags = file_flags(info, clips, audio_errors, people=every)
    if part and part.count > 1:
        prepared.seen_times = np.unique(np.concatenate([c.frame_times for c in clips]))
    if videos:
        prepared.videos, prepared.audios = np.stack(videos), np.stack(audios)
        prepared.frame_times, prepared.audio_starts = np.stack(times), np.array(starts)
        prepared.has_audio = not result.flags["no_audio"]
    return prepared


def guarded_prepare(part: FilePart, config: PredictConfig, size: int, device: str = "cpu") -> PreparedFile:
    try:
        return prepare_file(part.path, config, size, detect.process_detector(config.face), part, device)
    except DferError as e:
        return PreparedFile(FileResult.failed(display_path(part.path), getattr(e, "reason", str(e))), part=part)
    except Exception as e:  # one bad file never sinks the batch; its record carries the reason
        return PreparedFile(FileResult.failed(display_path(part.path), f"{type(e).__name__}: {e}"), part=part)


def timed_out(part: FilePart, limit: float) -> PreparedFile:
    """The record of a file whose worker gave no result within `limit` seconds and was killed."""
    return PreparedFile(FileResult.failed(display_path(part.path), f"no result after {limit:g} s (the file stopped "
                                          f"delivering data?); --time-limit sets the limit"), part=part)


def lost(part: FilePart, reason: str) -> PreparedFile:
    """The record of a file whose worker died on it (a crash in a decoder, out of memory, killed)."""
    return PreparedFile(FileResult.failed(display_path(part.path), reason), part=part)
