"""A file's people from its clips' records: the same person matched across clips by box, numbered left to
right, with their time on screen, their share of the speech, their voice and their emotion."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from dfer_cli.faces.box import Box, pair_by_overlap
from dfer_cli.results.records import FileResult, mean_probabilities

_SAME_PERSON_IOU = 0.3  # a box overlapping a known person's this much is that person (one box per person)


def _match_people(result: FileResult) -> dict[tuple[int, int], int]:
    """(clip, person in clip) -> the file's person. Someone who leaves and comes back where they were is
    the same person; one who comes back elsewhere is a new one (faces are not recognised, only placed)."""
    known: list[Box] = []  # each person's latest box
    keys = {}
    for ci, clip in enumerate(result.clips):
        boxes = [Box(*entry["box"]) for entry in clip.people or []]
        keys |= {(ci, k): pi for k, pi in pair_by_overlap(boxes, known, _SAME_PERSON_IOU).items()}
        for k, box in enumerate(boxes):
            if (ci, k) not in keys:
                keys[ci, k] = len(known)
                known.append(box)
            known[keys[ci, k]] = box
    return keys


def file_person(result: FileResult) -> int | None:
    """Whose call the file's label is: its speaker, else the person most often the clips' main face (the
    leftmost of a tie); None without people. The clips' people must be numbered (finish_people)."""
    if result.speaker is not None:
        return result.speaker
    main = dict.fromkeys(sorted(p["person"] for p in result.people or []), 0)
    for clip in result.clips:
        for entry in clip.people or []:
            main[entry["person"]] += entry["main"]
    return max(main, key=main.get) if main else None


def finish_people(result: FileResult, class_names: list[str]) -> None:
    """Fills in the file's people, speaker and speech, and each clip's person numbers and speaker; the
    file's label is its speaker's, or its main face's when nobody visible speaks."""
    keys = _match_people(result)
    entries: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    for (ci, k), key in keys.items():
        entries[key].append((ci, result.clips[ci].people[k]))
    spans: dict[tuple[float, float], list[int]] = defaultdict(list)  # the two clips of a short file share one
    for ci, clip in enumerate(result.clips):
        spans[clip.start, clip.end].append(ci)
    order = sorted(entries, key=lambda key: np.median([(e["box"][0] + e["box"][2]) / 2 for _, e in entries[key]]))
    number = {key: n for n, key in enumerate(order)}
    total = unattributed = 0.0
    own: dict[int, float] = defaultdict(float)
    seen: dict[int, float] = defaultdict(float)
    for (start, end), members in spans.items():
        # The clips of one span hear the same speech, and may see other people: each counts for its share.
        for ci in members:
            for turn in result.clips[ci].speech or []:
                seconds = (turn["end"] - turn["start"]) / len(members)
                total += seconds
                if turn["person"] is None:
                    unattributed += seconds
                else:
                    own[keys[ci, turn["person"]]] += seconds
        for key in entries:
            present = [e["faces_found"] / e["frames"] for ci, e in entries[key] if ci in members]
            seen[key] += (end - start) * sum(present) / len(members)
    for ci, clip in enumerate(result.clips):  # the clips' people, numbered as the file's
        for k, entry in enumerate(clip.people or []):
            entry["person"] = number[keys[ci, k]]
            if entry.get("probabilities"):
                entry["label"] = max(entry["probabilities"], key=entry["probabilities"].get)
        spoken = defaultdict(float)
        for turn in clip.speech or []:
            if turn["person"] is not None:
                turn["person"] = number[keys[ci, turn["person"]]]
                spoken[turn["person"]] += turn["end"] - turn["start"]
        clip.speaker = max(spoken, key=spoken.get) if spoken else None
    people = []
    for key in order:
        mine = [e for _, e in entries[key]]
        probs = [[e["probabilities"][n] for n in class_names] for e in mine if e.get("probabilities")]
        named, label, confidence = mean_probabilities(probs, class_names) if probs else (None, None, None)
        voices = {e["voice"] for e in mine}
        voice = "all" if voices == {"all"} else "own" if "own" in voices else "none"
        box = np.median([e["box"] for e in mine], axis=0)
        people.append({"person": number[key], "box": [round(float(v), 1) for v in box],
                       "seen": round(seen[key], 3), "speaking": round(own[key] / total, 3) if total else 0.0,
                       "speech_seconds": round(own[key], 3), "voice": voice, "label": label,
                       "confidence": confidence, "probabilities": named,
                       "flags": {"faces_found": sum(e["faces_found"] for e in mine),
                                 "frames": sum(e["frames"] for e in mine)}})
    result.people = people
    result.speech_seconds, result.unattributed_speech_seconds = round(total, 3), round(unattributed, 3)
    speakers = [p for p in people if p["speech_seconds"] > 0]
    result.speaker = max(speakers, key=lambda p: p["speech_seconds"])["person"] if speakers else None
    chosen = file_person(result)
    for clip in result.clips:  # a clip shows its own speaker's call, else the file's person's, else its main face's
        by_number = {e["person"]: e for e in clip.people or []}
        shown = by_number.get(clip.speaker) or by_number.get(chosen)
        shown = shown or next((e for e in clip.people or [] if e["main"]), None)
        clip.probabilities = shown.get("probabilities") if shown else None
    mine = next((p for p in people if p["person"] == chosen), None)
    if mine is None or mine["probabilities"] is None:
        result.status = "no_face"
        return
    result.probabilities, result.label, result.confidence = mine["probabilities"], mine["label"], mine["confidence"]
