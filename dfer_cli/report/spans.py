"""What a record says happened when: each person's emotion over time, where they are, when they speak, and
the cuts, read from the JSON record (`FileResult.to_dict()`) that the page, the lanes and the annotated
video all draw."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mood:
    """A person's call over one span of the video (a `--window` window, or a clip), and their box there
    (x0, y0, x1, y1 in pixels of the decoded frame; None for the main face of `--people main`)."""
    start: float
    end: float
    label: str
    confidence: float
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class PersonSpans:
    number: int | None  # None: the main face of a record without people
    moods: tuple[Mood, ...]
    appearances: tuple[tuple[float, float], ...]  # on screen: the record's own, else the spans they are seen in
    turns: tuple[tuple[float, float], ...]  # speech attributed to them


@dataclass(frozen=True)
class FileSpans:
    duration: float
    persons: tuple[PersonSpans, ...]
    speech: tuple[tuple[float, float, int | None], ...]  # every speech turn, and whose (None: nobody seen)
    cuts: tuple[float, ...]
    covered: bool  # the calls' spans cover the whole video (a --window timeline, or a short file's clips)


def file_spans(record: dict) -> FileSpans:
    """The spans of one file's record (status ok or no_face); a record without people has one main face."""
    clips = record.get("clips") or []
    groups: dict[tuple[float, float], list[dict]] = defaultdict(list)  # the two clips of a short file share a span
    for clip in clips:
        groups[clip["start"], clip["end"]].append(clip)
    spans = sorted(groups)
    duration = float(record.get("media", {}).get("duration") or max((e for _, e in spans), default=0.0))
    speech = sorted({(t["start"], t["end"], t["person"]) for c in clips for t in c.get("speech") or []},
                    key=lambda t: (t[0], t[1], -1 if t[2] is None else t[2]))
    if record.get("people") is None:
        moods = tuple(m for span in spans if (m := _mood(span, [c.get("probabilities") for c in groups[span]], []))
                      is not None)
        persons = (PersonSpans(None, moods, tuple(_merge([(m.start, m.end) for m in moods])), ()),)
    else:
        persons = tuple(_person(p, spans, groups, speech) for p in record["people"])
    cuts = tuple(float(t) for t in record.get("cuts") or ())
    return FileSpans(duration, persons, tuple(speech), cuts, _covers(spans, duration))


def _person(person: dict, spans: list, groups: dict, speech: list) -> PersonSpans:
    number = person["person"]
    moods, seen = [], []
    for span in spans:
        entries = [e for c in groups[span] for e in c.get("people") or [] if e["person"] == number]
        if not entries:
            continue
        if any(e.get("faces_found", 1) for e in entries):
            seen.append(span)
        mood = _mood(span, [e.get("probabilities") for e in entries], [e["box"] for e in entries if e.get("box")])
        if mood is not None:
            moods.append(mood)
    own = person.get("appearances")
    appearances = tuple((float(s), float(e)) for s, e in own) if own is not None else tuple(_merge(seen))
    turns = tuple((s, e) for s, e, p in speech if p == number)
    return PersonSpans(number, tuple(moods), appearances, turns)


def _mood(span: tuple[float, float], probabilities: list, boxes: list) -> Mood | None:
    rows = [p for p in probabilities if p]
    if not rows:
        return None
    names = list(rows[0])
    mean = np.mean([[p[n] for n in names] for p in rows], axis=0)
    best = int(np.argmax(mean))
    box = tuple(float(v) for v in np.mean(boxes, axis=0)) if boxes else None
    return Mood(float(span[0]), float(span[1]), names[best], float(mean[best]), box)


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching spans joined."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + 1e-6:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(float(s), float(e)) for s, e in merged]


def _covers(spans: list[tuple[float, float]], duration: float) -> bool:
    """Whether the spans leave no gap longer than a frame's worth (40 ms) in [0, duration]."""
    reached = 0.0
    for start, end in _merge(spans):
        if start > reached + 0.04:
            return False
        reached = max(reached, end)
    return reached >= duration - 0.04


def visible(mood: Mood, appearances: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    """The parts of a mood's span where its person is on screen."""
    parts = [(max(mood.start, s), min(mood.end, e)) for s, e in appearances]
    return [(s, e) for s, e in parts if e > s]


def mood_at(person: PersonSpans, t: float) -> Mood | None:
    """The person's mood whose span holds time t (the latest to start, where spans overlap), if on screen."""
    held = [m for m in person.moods if m.start <= t < m.end]
    if not held or not any(s <= t < e for s, e in person.appearances):
        return None
    return max(held, key=lambda m: m.start)
