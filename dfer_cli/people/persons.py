"""Persons: the face tracks of a file linked into persons (`link_tracks` by place within a shot, `link_persons` by
face across shots), and a file's persons from its clips' records, numbered by first appearance (ties left to right),
with their appearances, their time on screen, their share of the speech, their voice and their emotion."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from dfer_cli.faces.box import Box, pair_by_overlap
from dfer_cli.people.identity import SAME_PERSON, Stretch, link
from dfer_cli.results.records import ClipPerson, FileResult, PersonResult, mean_probabilities
from dfer_cli.shots.detect import new_shot

_SAME_PERSON_IOU = 0.3  # a box overlapping a known person's this much is that person (one box per person)


def link_tracks(clips: Sequence[Sequence[Box]]) -> list[list[int]]:
    """The person each face track is, clip by clip: for each clip, a person index per track (its median
    box), persons numbered as first seen. A track is the person last seen (their latest box) where it
    is, each person at most one track of a clip; a track that overlaps nobody is a new person. Faces are
    placed, not recognised: someone who comes back where they were is the same person, one who comes
    back elsewhere a new one. The one rule: the speakers of a stretch and the persons of a file alike."""
    known: list[Box] = []  # each person's latest box
    persons = []
    for boxes in clips:
        linked = pair_by_overlap(boxes, known, _SAME_PERSON_IOU)
        for k, box in enumerate(boxes):
            if k not in linked:
                linked[k] = len(known)
                known.append(box)
            known[linked[k]] = box
        persons.append([linked[k] for k in range(len(boxes))])
    return persons


@dataclass(frozen=True)
class SeenClip:
    """A clip's faces as persons are linked from them: its span, and for each face its median box, when it
    was detected (its first and last frame's times), and its identity (the mean embedding of `chips` frontal
    chips; None where the face continues an identified stretch)."""

    start: float
    end: float
    boxes: list[Box]
    shown: list[tuple[float, float]]
    embeddings: list[np.ndarray | None]
    chips: list[int]


def link_persons(clips: Sequence[SeenClip], cuts: Sequence[float]) -> list[list[int]]:
    """The person each face of each clip is, numbered by first appearance, ties left to right. Within a
    shot (shots.new_shot: clips in time order, a cut or an undecoded gap between two starts a new one) the
    tracks are linked by place (`link_tracks`) into stretches; the stretches, by their faces
    (people/identity.py), wherever and whenever they appear. Two stretches detected at once are never one
    person (a split screen of one face stays two); one never embedded (no frontal frame) is a person of
    its own. A cut the detector missed still parts two faces: a track whose face is another person's than
    its stretch's so far starts a new stretch, and tracks never seen together are never one stretch."""
    order = sorted(range(len(clips)), key=lambda ci: (clips[ci].start, ci))
    shots: list[list[int]] = []
    for ci in order:
        if not shots or new_shot((clips[shots[-1][-1]].start, clips[shots[-1][-1]].end), clips[ci].start, cuts):
            shots.append([])
        shots[-1].append(ci)
    stretch_of: dict[tuple[int, int], int] = {}
    spans: list[list[float]] = []  # each stretch's first and last detection, and its first box's left edge
    sums: list[np.ndarray | None] = []
    weights: list[int] = []
    for shot in shots:
        current: dict[int, int] = {}  # the shot's track (link_tracks) -> its stretch now
        for ci, mine in zip(shot, link_tracks([clips[ci].boxes for ci in shot]), strict=True):
            c = clips[ci]
            for k, local in enumerate(mine):
                s, (a, b), face = current.get(local), c.shown[k], c.embeddings[k]
                if (s is not None and face is not None and sums[s] is not None
                        and np.linalg.norm(np.asarray(face, np.float64) - sums[s] / weights[s]) >= SAME_PERSON):
                    s = None  # another face in the same place
                if s is None:
                    s = current[local] = len(spans)
                    spans.append([a, b, c.boxes[k].x0])
                    sums.append(None)
                    weights.append(0)
                spans[s][0], spans[s][1] = min(spans[s][0], a), max(spans[s][1], b)
                stretch_of[ci, k] = s
                if c.embeddings[k] is not None:
                    n = max(c.chips[k], 1)
                    add = np.asarray(c.embeddings[k], np.float64) * n
                    sums[s] = add if sums[s] is None else sums[s] + add
                    weights[s] += n
    stretches = [Stretch(a, b, None if total is None else total / n, x, max(n, 1))
                 for (a, b, x), total, n in zip(spans, sums, weights, strict=True)]
    persons = link(stretches).of_stretch
    return [[persons[stretch_of[ci, k]] for k in range(len(c.boxes))] for ci, c in enumerate(clips)]


def _match_people(result: FileResult) -> dict[tuple[int, int], int]:
    """(clip, person in clip) -> the file's person (`link_persons` on the records)."""
    seen = [SeenClip(clip.start, clip.end, [Box(*e.box) for e in clip.people or []],
                     [e.shown or (clip.start, clip.end) for e in clip.people or []],
                     [None if e.embedding is None else np.asarray(e.embedding) for e in clip.people or []],
                     [e.chips for e in clip.people or []]) for clip in result.clips]
    persons = link_persons(seen, result.cuts)
    return {(ci, k): pi for ci, mine in enumerate(persons) for k, pi in enumerate(mine)}


def _appearances(result: FileResult, clips: Sequence[int]) -> list[list[float]]:
    """[start, end] of each time a person is on screen: the spans of the clips showing them, joined where
    one follows the other in the same shot with no clip between that does not show them."""
    order = sorted(range(len(result.clips)), key=lambda ci: (result.clips[ci].start, ci))
    mine = set(clips)
    out: list[list[float]] = []
    joined = False  # the clip before showed them, in the same shot
    for n, ci in enumerate(order):
        c = result.clips[ci]
        if ci not in mine:
            joined = False
            continue
        before = result.clips[order[n - 1]] if n else None
        if joined and before is not None and not new_shot((before.start, before.end), c.start, result.cuts):
            out[-1][1] = max(out[-1][1], c.end)
        else:
            out.append([c.start, c.end])
        joined = True
    return [[round(a, 3), round(b, 3)] for a, b in out]


def file_person(result: FileResult) -> int | None:
    """Whose call the file's label is: its speaker, else the person most often the clips' main face (the
    leftmost of a tie); None without people. The clips' people must be numbered (finish_people)."""
    if result.speaker is not None:
        return result.speaker
    main = dict.fromkeys(sorted(p.person for p in result.people or []), 0)
    for clip in result.clips:
        for entry in clip.people or []:
            main[entry.person] += entry.main
    return max(main, key=main.get) if main else None


def finish_people(result: FileResult, class_names: list[str]) -> None:
    """Fills in the file's people, speaker and speech, and each clip's person numbers and speaker; the
    file's label is its speaker's, or its main face's when nobody visible speaks."""
    keys = _match_people(result)
    entries: dict[int, list[tuple[int, ClipPerson]]] = defaultdict(list)
    for (ci, k), key in keys.items():
        entries[key].append((ci, result.clips[ci].people[k]))
    spans: dict[tuple[float, float], list[int]] = defaultdict(list)  # the two clips of a short file share one
    for ci, clip in enumerate(result.clips):
        spans[clip.start, clip.end].append(ci)
    order = sorted(entries)  # numbered by first appearance already (link_persons)
    number = {key: n for n, key in enumerate(order)}
    total = unattributed = 0.0
    own: dict[int, float] = defaultdict(float)
    seen: dict[int, float] = defaultdict(float)
    for (start, end), members in spans.items():
        # The clips of one span hear the same speech, and may see other people: each counts for its share.
        for ci in members:
            for turn in result.clips[ci].speech or []:
                seconds = (turn.end - turn.start) / len(members)
                total += seconds
                if turn.person is None:
                    unattributed += seconds
                else:
                    own[keys[ci, turn.person]] += seconds
        for key in entries:
            present = [e.faces_found / e.frames for ci, e in entries[key] if ci in members]
            seen[key] += (end - start) * sum(present) / len(members)
    for ci, clip in enumerate(result.clips):  # the clips' people, numbered as the file's
        if clip.people is not None:
            clip.people = [replace(e, person=number[keys[ci, k]], label=_top(e.probabilities))
                           for k, e in enumerate(clip.people)]
        if clip.speech is not None:
            clip.speech = [t if t.person is None else replace(t, person=number[keys[ci, t.person]])
                           for t in clip.speech]
        spoken = defaultdict(float)
        for turn in clip.speech or []:
            if turn.person is not None:
                spoken[turn.person] += turn.end - turn.start
        clip.speaker = max(spoken, key=spoken.get) if spoken else None
    people = []
    for key in order:
        mine = [e for _, e in entries[key]]
        probs = [[e.probabilities[n] for n in class_names] for e in mine if e.probabilities]
        named, label, confidence = mean_probabilities(probs, class_names) if probs else (None, None, None)
        voices = {e.voice for e in mine}
        voice = "all" if voices == {"all"} else "own" if "own" in voices else "none"
        box = np.median([e.box for e in mine], axis=0)
        people.append(PersonResult(number[key], [round(float(v), 1) for v in box], round(seen[key], 3),
                                   round(own[key] / total, 3) if total else 0.0, round(own[key], 3), voice, label,
                                   confidence, named, {"faces_found": sum(e.faces_found for e in mine),
                                                       "frames": sum(e.frames for e in mine)},
                                   appearances=_appearances(result, [ci for ci, _ in entries[key]])))
    result.people = people
    result.speech_seconds, result.unattributed_speech_seconds = round(total, 3), round(unattributed, 3)
    speakers = [p for p in people if p.speech_seconds > 0]
    result.speaker = max(speakers, key=lambda p: p.speech_seconds).person if speakers else None
    chosen = file_person(result)
    for clip in result.clips:  # a clip shows its own speaker's call, else the file's person's, else its main face's
        by_number = {e.person: e for e in clip.people or []}
        shown = by_number.get(clip.speaker) or by_number.get(chosen)
        shown = shown or next((e for e in clip.people or [] if e.main), None)
        clip.probabilities = shown.probabilities if shown else None
    mine = next((p for p in people if p.person == chosen), None)
    if mine is None or mine.probabilities is None:
        result.status = "no_face"
        return
    result.probabilities, result.label, result.confidence = mine.probabilities, mine.label, mine.confidence


def _top(probabilities: dict[str, float] | None) -> str | None:
    return max(probabilities, key=probabilities.get) if probabilities else None
