"""Who speaks in a stretch of video (the clips whose spans touch: a timeline part's windows, or one clip):
speech presence over every channel, heard once per stretch; then, for each segment where two or more
people are seen, their lips read at the video's own rate over the segment's middle, matched against the voice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dfer_cli.clips.load import ClipInputs
from dfer_cli.faces.landmarks import process_landmarker
from dfer_cli.media import decode
from dfer_cli.people.attribution import attribute_segments, lip_opening, loudness_track
from dfer_cli.people.config import PeopleConfig
from dfer_cli.people.persons import link_tracks
from dfer_cli.people.vad import speech_segments
from dfer_cli.runtime.pool import single_thread
from dfer_cli.shots.detect import new_shot

# Full-size frames decoded at once: 32, or as many as fit in this many bytes (77 at 720x288); each read opens the file
# and decodes from the keyframe before it, so smaller frames go in larger reads.
_CHUNK_BYTES = 48 << 20
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


@dataclass
class _Face:
    """One face through a stretch, linked across its clips by box: where it was detected (file clock),
    and which person it is in each clip that shows it."""

    times: list[float] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    local: dict[int, int] = field(default_factory=dict)  # clip (index into clips) -> its person index

    def boxes_at(self, times: np.ndarray) -> np.ndarray:
        """(frames, 4) the box at each of `times`, linear between detections (held at the ends)."""
        order = np.argsort(self.times, kind="stable")
        at, coords = np.asarray(self.times)[order], np.asarray(self.boxes)[order]
        return np.stack([np.interp(times, at, coords[:, k]) for k in range(4)], axis=1)


def _stretches(clips: Sequence[ClipInputs]) -> list[list[int]]:
    """Runs of consecutive clips with people and audio whose spans touch or overlap, within one shot: each is
    heard once and its segments attributed whole, so a sentence across two windows is one segment, not two
    fragments; a cut ends a run (speech is attributed per segment within each shot)."""
    runs: list[list[int]] = []
    end = -np.inf
    cuts = [t for c in clips for t in c.cuts]
    for i, c in enumerate(clips):
        if not c.track.people or c.wave is None:
            end = -np.inf
            continue
        before = clips[i - 1].plan if i else None
        if (runs and runs[-1][-1] == i - 1 and c.plan.start <= end + 1e-6
                and not new_shot((before.start, before.end), c.plan.start, cuts)):
            runs[-1].append(i)
            end = max(end, c.plan.end)
        else:
            runs.append([i])
            end = c.plan.end
    return runs


def _heard(clips: Sequence[ClipInputs], lo: float, hi: float) -> tuple[np.ndarray, int, float]:
    """The audio of [lo, hi) pieced from the clips' windows (channels, samples), its rate, and its start."""
    rate = clips[0].rate
    lo = max(lo, min(c.plan.audio_start for c in clips))
    hi = min(hi, max(c.plan.audio_start + c.wave.shape[-1] / rate for c in clips))
    out = np.zeros((clips[0].wave.shape[0], max(0, round((hi - lo) * rate))), np.float32)
    for c in clips:
        at = round((c.plan.audio_start - lo) * rate)
        first, last = max(0, -at), min(c.wave.shape[-1], out.shape[-1] - at)
        if last > first:
            out[:, at + first:at + last] = c.wave[:, first:last]
    return out, rate, lo


def _faces(clips: Sequence[ClipInputs], run: Sequence[int]) -> list[_Face]:
    """The stretch's faces: each clip's people linked to the faces of the clips before (`link_tracks`)."""
    faces: list[_Face] = []
    linked = link_tracks([[p.median for p in clips[ci].track.people] for ci in run])
    for ci, persons in zip(run, linked, strict=True):
        for k, (person, face_index) in enumerate(zip(clips[ci].track.people, persons, strict=True)):
            if face_index == len(faces):  # first seen here
                faces.append(_Face())
            face = faces[face_index]
            face.local[ci] = k
            for i, b in person.detected.items():
                face.times.append(float(clips[ci].frame_times[i]))
                face.boxes.append((b.x0, b.y0, b.x1, b.y1))
    return faces


def _grid(info: decode.VideoInfo, lo: float, hi: float) -> np.ndarray:
    """The times of the video frames showing in [lo, hi): the listed ones, or the frame rate's grid."""
    if info.frame_times is not None:
        times = info.frame_times
        return times[(times >= lo) & (times < hi)]
    step = 1 / (info.frame_rate or 25.0)
    first = info.start_time + np.ceil((lo - info.start_time) / step - 1e-6) * step
    return np.arange(first, hi - 1e-9, step)


def _lip_frames(info: decode.VideoInfo, span: tuple[float, float], segments: Sequence[tuple[float, float]],
                limit: int) -> np.ndarray:
    """The video frames that the lips are read on: those showing during each segment (with a little context,
    inside `span`), at most `limit` of each around its middle: the correlation needs a run of frames at the
    video's rate, not all of them (benchmarks/speaker_bench.py: 50 frames score as the whole segment)."""
    picked = []
    for s, e in segments:
        inside = _grid(info, max(span[0], s - _CONTEXT_S), min(span[1], e + _CONTEXT_S))
        if len(inside) > limit:
            first = (len(inside) - limit) // 2
            inside = inside[first:first + limit]
        picked.append(inside)
    return np.unique(np.concatenate(picked)) if picked else np.zeros(0)


def _openings(path: str, info: decode.VideoInfo, times: np.ndarray, faces: Sequence[_Face], shown: np.ndarray,
              device: str) -> np.ndarray:
    """(faces, frames) mouth opening over face height, NaN where `shown` (faces, frames) is False. Each
    face's box at a frame's time is interpolated from where it was detected in the clips' frames (no second
    detection: the crop the landmark model takes is 1.5 times the box, which a face moving between the
    clips' frames stays inside)."""
    openings = np.full((len(faces), len(times)), np.nan)
    boxes = [f.boxes_at(times) for f in faces]
    landmarker = process_landmarker(device)
    # Each frame is asked for at its middle: a time computed to be its start may fall a hair before it,
    # which is the previous frame (read_frames gives the frame on screen).
    middles = times + np.median(np.diff(times)) / 2 if len(times) > 1 else times
    chunk = max(32, _CHUNK_BYTES // max(1, 3 * info.width * info.height))
    for first in range(0, len(times), chunk):
        frames, _ = decode.read_frames(path, middles[first:first + chunk])
        jobs = [(i, k) for i in range(len(frames)) for k in range(len(faces)) if shown[k, first + i]]
        if not jobs:
            continue
        with single_thread(landmarker.device):  # measured: 2 threads on 2 busy cores ran up to 20x slower
            points = landmarker.landmarks(frames, [tuple(boxes[k][first + i]) for i, k in jobs],
                                          sources=[i for i, _ in jobs])
        for (i, k), opening in zip(jobs, lip_opening(points), strict=True):
            openings[k, first + i] = opening
    return openings


def _stretch_turns(path: str, info: decode.VideoInfo, clips: Sequence[ClipInputs], run: Sequence[int],
                   config: PeopleConfig, device: str, alone: Sequence[bool]) -> dict[int, list[Turn]]:
    """Each clip of one stretch with its turns: the speech within its span, each segment with its speaker.
    A clip whose faces are the only person read (`alone`) gives them all of its speech unchecked (the model
    was trained on the whole soundtrack of one face); elsewhere the lips decide, even of a single face, and
    a voice no visible face moves with belongs to nobody."""
    span = (min(clips[i].plan.start for i in run), max(clips[i].plan.end for i in run))
    # The stretch's own span (and a little either side, for silero's context) is listened to, once: a
    # timeline window's audio input is 5.12 s for 2 s of video.
    wave, rate, heard = _heard([clips[i] for i in run], span[0] - _CONTEXT_S, span[1] + _CONTEXT_S)
    segments = [(max(s + heard, span[0]), min(e + heard, span[1])) for s, e in speech_segments(wave, rate, config.vad)]
    segments = [(s, e) for s, e in segments if e > s]
    faces = _faces(clips, run)

    def showing(s: float, e: float) -> list[int]:
        return [ci for ci in run if clips[ci].plan.start < e and s < clips[ci].plan.end]

    read = [k for k, (s, e) in enumerate(segments) if any(not alone[ci] for ci in showing(s, e))]
    speaker: dict[int, int | None] = {}
    if read:
        times = _lip_frames(info, span, [segments[k] for k in read], config.max_frames)
        # A face is read where one of its clips shows it: elsewhere in the stretch it may have left.
        shown = np.zeros((len(faces), len(times)), dtype=bool)
        for k, face in enumerate(faces):
            for ci in face.local:
                shown[k] |= (times >= clips[ci].plan.start) & (times < clips[ci].plan.end)
        openings = _openings(path, info, times, faces, shown, device)
        loudness = loudness_track(wave, rate, times - heard, config.attribution.band_hz)
        relative = [(segments[k][0] - heard, segments[k][1] - heard) for k in read]
        found = {(a.start, a.end): a.person for a in attribute_segments(times - heard, openings, loudness, relative,
                                                                        config.attribution)}
        speaker = {k: found.get(r) for k, r in zip(read, relative, strict=True)}
    turns: dict[int, list[Turn]] = {}
    for ci in run:
        plan, lone = clips[ci].plan, alone[ci]
        turns[ci] = []
        for k, (s, e) in enumerate(segments):
            s, e = max(s, plan.start), min(e, plan.end)
            if e > s:
                face = speaker.get(k)
                turns[ci].append(Turn(s, e, 0 if lone else None if face is None else faces[face].local.get(ci)))
    return turns


def clip_turns(path: str, info: decode.VideoInfo, clips: Sequence[ClipInputs],
               config: PeopleConfig, device: str = "cpu", alone: Sequence[bool] | None = None) -> list[list[Turn]]:
    """Each clip's turns; a clip without people or audio has none. Clips whose spans touch or overlap are
    heard and attributed together (_stretches), their people matched by box. The lips are read on `device`.
    `alone` (by default: one face) says of each clip whether its faces are the only person read."""
    alone = [len(c.track.people) == 1 for c in clips] if alone is None else alone
    turns: dict[int, list[Turn]] = {}
    for run in _stretches(clips):
        turns |= _stretch_turns(path, info, clips, run, config, device, alone)
    return [turns.get(i, []) for i in range(len(clips))]
