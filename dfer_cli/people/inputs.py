"""Each person of a clip as a model input (their crops, the voice they hear), and the clip's record of who
is there and who speaks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from dfer_cli.clips.load import ClipInputs
from dfer_cli.people.speakers import Turn
from dfer_cli.people.voices import person_audio, voice_kind
from dfer_cli.results.records import ClipPerson, SpeechTurn

# One model input: the person it is (an index into the clip's people; None: the clip's main face alone),
# their crops (T, S, S, 3) uint8 and the audio they hear (frames, mels) float32.
Row = tuple[int | None, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ClipPeople:
    """A clip through the people stage: its model rows, and with every person who is there and who speaks
    (None: the main face alone, --people main)."""

    rows: list[Row]
    people: list[ClipPerson] | None = None
    speech: list[SpeechTurn] | None = None


def person_rows(clip: ClipInputs, turns: Sequence[Turn], voice: str, kept: Sequence[int],
                alone: bool = True) -> ClipPeople:
    """A row for each person of the clip analysed (`kept`: indices into its people, most present first),
    with the clip's people (numbered within the clip until the file numbers them) and speech. Speech by a
    person not analysed is nobody's in the record. `alone`: the clip's faces are the only person of what
    was read (a single face then hears the whole soundtrack)."""
    seen = clip.track.people
    local = {k: n for n, k in enumerate(kept)}
    turns = [replace(t, person=local.get(t.person)) for t in turns]
    people, rows = [], []
    for k, person in enumerate(seen[k] for k in kept):
        kind = voice_kind(k, 1 if alone else max(len(seen), 2), turns, voice)
        b = person.median
        identity = clip.identities[kept[k]] if clip.identities else None
        embedding = None if identity is None or identity.embedding is None else tuple(map(float, identity.embedding))
        times = clip.frame_times[sorted(person.detected)]
        people.append(ClipPerson(k, [round(v * clip.scale, 1) for v in (b.x0, b.y0, b.x1, b.y1)], person.found,
                                 clip.track.total, kind, round(sum(t.seconds for t in turns if t.person == k), 3),
                                 person.main, embedding=embedding, chips=identity.chips if identity else 0,
                                 shown=(float(times.min()), float(times.max()))))
        rows.append((k, person.crops, person_audio(clip.fbank, clip.plan.audio_start, turns, k, kind)))
    return ClipPeople(rows, people, [SpeechTurn(round(t.start, 3), round(t.end, 3), t.person) for t in turns])
