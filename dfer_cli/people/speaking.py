"""Who speaks in a clip: speech presence over every channel, then, where two or more people are seen,
their lips read at the video's own rate during the speech and matched against the voice."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dfer_cli.clips.load import ClipInputs
from dfer_cli.clips.plan import ClipPlan
from dfer_cli.faces.box import pair_by_overlap
from dfer_cli.faces.follow import PersonTrack
from dfer_cli.media import decode
from dfer_cli.people.attribute import attribute_segments, lip_opening, loudness_track
from dfer_cli.people.config import PeopleConfig
from dfer_cli.people.landmarks import FaceLandmarker
from dfer_cli.people.speech import speech_segments
from dfer_cli.runtime.pool import single_thread

_CHUNK = 32  # full-size frames decoded at once: a 1080p chunk is 200 MB
_MATCH_IOU = 0.3  # a person whose median box overlaps another clip's person's this much is that person
_CONTEXT_S = 0.2  # frames kept either side of a segment: the high-pass needs its neighbours


@dataclass(frozen=True)
class Turn:
    """A stretch of speech and who speaks it: an index into the clip's people, or None (nobody seen)."""

    start: float  # seconds on the file's clock
    end: float
    person: int | None

    @property
    def seconds(self) -> float:
        return self.end - self.start


@functools.cache
def process_landmarker() -> FaceLandmarker:
    """One landmark model per process, kept for its lifetime (as the face detector is)."""
    return FaceLandmarker("cpu")


def speaking_turns(path: str, info: decode.VideoInfo, plan: ClipPlan, people: Sequence[PersonTrack],
                   seen_at: np.ndarray, wave: np.ndarray, rate: int, config: PeopleConfig) -> list[Turn]:
    """The speech within the clip's video span, each segment with its speaker. One person alone is given
    all of it unchecked (the model was trained on the whole soundtrack of one face); with two or more,
    the lips decide, and a voice no visible face moves with belongs to nobody. `seen_at`: the times of
    the clip's frames, where the people's boxes were detected."""
    span = (plan.start, plan.end)
    # Only the audio of the clip's own span (and a little either side, for silero's context) is listened
    # to: a timeline window hears 5.12 s of audio for 2 s of video.
    lo = max(0, round((span[0] - plan.audio_start - _CONTEXT_S) * rate))
    hi = round((span[1] - plan.audio_start + _CONTEXT_S) * rate)
    heard = lo / rate + plan.audio_start
    segments = [(max(s + heard, span[0]), min(e + heard, span[1]))
                for s, e in speech_segments(wave[..., lo:hi], rate, config.vad)]
    segments = [(s, e) for s, e in segments if e > s]
    if not segments or not people:
        return [Turn(s, e, None) for s, e in segments]
    if len(people) == 1:
        return [Turn(s, e, 0) for s, e in segments]
    times = _lip_frames(info, span, segments, config.max_frames)
    openings = _openings(path, times, people, seen_at)
    loudness = loudness_track(wave, rate, times - plan.audio_start, config.attribution.band_hz)
    relative = [(s - plan.audio_start, e - plan.audio_start) for s, e in segments]
    found = {(a.start, a.end): a.person for a in attribute_segments(times - plan.audio_start, openings, loudness,
                                                                    relative, config.attribution)}
    return [Turn(s, e, found.get(r)) for (s, e), r in zip(segments, relative, strict=True)]


def _lip_frames(info: decode.VideoInfo, span: tuple[float, float], segments: Sequence[tuple[float, float]],
                limit: int) -> np.ndarray:
    """The video frames that the lips are read on: those showing during the speech (with a little context),
    at most `limit`, taken around each segment's middle in proportion to its length."""
    times = info.frame_times
    if times is None:
        step = 1 / (info.frame_rate or 25.0)
        times = np.arange(span[0], span[1], step)
    times = times[(times >= span[0]) & (times < span[1])]
    total = sum(e - s for s, e in segments)
    picked = []
    for s, e in segments:
        inside = times[(times >= s - _CONTEXT_S) & (times < e + _CONTEXT_S)]
        keep = max(1, round(limit * (e - s) / total)) if total > 0 else len(inside)
        if len(inside) > keep:
            first = (len(inside) - keep) // 2
            inside = inside[first:first + keep]
        picked.append(inside)
    return np.unique(np.concatenate(picked)) if picked else np.zeros(0)


def _openings(path: str, times: np.ndarray, people: Sequence[PersonTrack], seen_at: np.ndarray) -> np.ndarray:
    """(people, frames) mouth opening over face height. Each face's box at a frame's time is interpolated
    from where it was detected in the clip's frames (no second detection: the crop the landmark model
    takes is 1.5 times the box, which a face moving between the clip's frames stays inside)."""
    openings = np.full((len(people), len(times)), np.nan)
    boxes = [_boxes_at(p, seen_at, times) for p in people]
    landmarker = process_landmarker()
    for first in range(0, len(times), _CHUNK):
        frames, _ = decode.read_frames(path, times[first:first + _CHUNK])
        jobs = [(i, k) for i in range(len(frames)) for k in range(len(people))]
        with single_thread(torch.device("cpu")):  # measured: 2 threads on 2 busy cores ran up to 20x slower
            points = landmarker.landmarks(frames[[i for i, _ in jobs]],
                                          [tuple(boxes[k][first + i]) for i, k in jobs])
        for (i, k), opening in zip(jobs, lip_opening(points), strict=True):
            openings[k, first + i] = opening
    return openings


def _boxes_at(person: PersonTrack, seen_at: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(frames, 4) the person's box at each of `times`, linear between their detections (held at the ends)."""
    found = sorted((float(seen_at[i]), (b.x0, b.y0, b.x1, b.y1)) for i, b in person.detected.items())
    at = np.array([t for t, _ in found])
    coords = np.array([c for _, c in found])
    return np.stack([np.interp(times, at, coords[:, k]) for k in range(4)], axis=1)


def clip_turns(path: str, info: decode.VideoInfo, clips: Sequence[ClipInputs],
               config: PeopleConfig) -> list[list[Turn]]:
    """Each clip's turns, found once per video span: the clips that share one (the two clips of a short
    file) get the same turns, their people matched by box."""
    found: dict[tuple[float, float], tuple[Sequence[PersonTrack], list[Turn]]] = {}
    turns: list[list[Turn]] = []
    for c in clips:
        span = (c.plan.start, c.plan.end)
        if not c.track.people or c.wave is None:
            turns.append([])
        elif span in found:
            people, first = found[span]
            moved = pair_by_overlap([p.median for p in people], [p.median for p in c.track.people], _MATCH_IOU)
            turns.append([Turn(t.start, t.end, moved.get(t.person) if t.person is not None else None)
                          for t in first])
        else:
            turns.append(speaking_turns(path, info, c.plan, c.track.people, c.frame_times, c.wave, c.rate, config))
            found[span] = (c.track.people, turns[-1])
    return turns
