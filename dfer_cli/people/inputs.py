"""Each person of a clip as a model input (their crops, the voice they hear), and the clip's record of who
is there and who speaks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from dfer_cli.clips.load import ClipInputs
from dfer_cli.people.speaking import Turn
from dfer_cli.people.voices import person_audio, voice_kind
from dfer_cli.results.records import ClipResult


def analysed(people: int, turns: Sequence[Turn], max_people: int) -> list[int]:
    """Which of a clip's people (indices, most present and largest first) are analysed: those who speak
    in it first, then the most present, `max_people` at most, in their order."""
    speaks = {t.person for t in turns}
    ranked = sorted(range(people), key=lambda k: (k not in speaks, k))
    return sorted(ranked[:max_people])


def person_rows(clip: ClipInputs, turns: Sequence[Turn], record: ClipResult, voice: str,
                max_people: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(person, crops, audio input) for each person of the clip analysed (`analysed`), most present
    first; fills in the clip's record: its people (numbered within the clip until the file numbers
    them), speech and speaker. Speech by a person not analysed is nobody's in the record."""
    seen = clip.track.people
    kept = analysed(len(seen), turns, max_people)
    local = {k: n for n, k in enumerate(kept)}
    turns = [replace(t, person=local.get(t.person)) for t in turns]
    people = [seen[k] for k in kept]
    record.people, rows = [], []
    for k, person in enumerate(people):
        kind = voice_kind(k, len(seen), turns, voice)
        b = person.median
        record.people.append({"person": k, "box": [round(v * clip.scale, 1) for v in (b.x0, b.y0, b.x1, b.y1)],
                              "faces_found": person.found, "frames": clip.track.total, "voice": kind,
                              "speech_seconds": round(sum(t.seconds for t in turns if t.person == k), 3),
                              "main": person.main})
        rows.append((k, person.crops, person_audio(clip.fbank, clip.plan.audio_start, turns, k, kind)))
    record.speech = [{"start": round(t.start, 3), "end": round(t.end, 3), "person": t.person} for t in turns]
    return rows
