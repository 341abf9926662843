"""What `dfer predict` reports: plain records per file and per clip, and a pandas view of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from dfer_cli.errors import DferError, one_line


@dataclass(frozen=True)
class SpeechTurn:
    """A stretch of speech and who speaks it: a person of the clip's (of the file's once numbered), or
    None: nobody visible."""

    start: float
    end: float
    person: int | None


@dataclass(frozen=True)
class ClipPerson:
    """One person in one clip: where (the median box, the file's pixels), how often seen, whose voice
    they heard, how long they spoke, and their call (once classified)."""

    person: int  # within the clip until the file numbers its persons, then the file's number
    box: list[float]
    faces_found: int
    frames: int
    voice: str  # "all", "own" or "none" (people/voices.py)
    speech_seconds: float
    main: bool  # the clip's main face (kept out of the record)
    probabilities: dict[str, float] | None = None
    label: str | None = None
    # Who the face is (faces/identify.py), kept out of the record: the mean embedding of its frontal chips
    # and how many; None where the face continues a stretch identified in a clip before.
    embedding: tuple[float, ...] | None = None
    chips: int = 0
    shown: tuple[float, float] | None = None  # the times of the first and last frame it was detected in (s)

    def to_dict(self) -> dict:
        record = asdict(self)
        del record["main"], record["embedding"], record["chips"], record["shown"]
        return record


@dataclass(frozen=True)
class PersonResult:
    """One person of a file: where, how long on screen, their share of the speech and whose voice they
    heard, their emotion, and with --explain why."""

    person: int
    box: list[float]
    seen: float  # seconds on screen
    speaking: float  # their share of the file's speech
    speech_seconds: float
    voice: str  # "all", "own" or "none": "own" where any of their clips heard their own speech
    label: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    flags: dict[str, int]
    explanation: dict | None = None
    appearances: list[list[float]] = field(default_factory=list)  # [start, end] of each time on screen (s)

    def to_dict(self) -> dict:
        record = asdict(self)
        if self.explanation is None:
            del record["explanation"]
        return record


@dataclass
class ClipResult:
    index: int
    start: float
    end: float
    audio_start: float
    audio_end: float
    faces_found: int
    frames: int
    probabilities: dict[str, float] | None = None  # None: no face in this clip, nothing classified
    # With --explain: how much of the file's call this clip's voice and face carry (None: not measured).
    voice_share: float | None = None
    face_share: float | None = None
    faces_seen: int = 0  # distinct faces (tracks) in the clip; the main one is cropped
    # With people (people/persons.py): each person of the clip, the speech with its speakers, the speaker.
    people: list[ClipPerson] | None = None
    speech: list[SpeechTurn] | None = None
    speaker: int | None = None

    def classified(self, person: int | None, probabilities: dict[str, float]) -> None:
        """The model's call for the clip's main face (`person` None), or for one of its people: whose the
        clip shows is the file's choice once its persons are known."""
        if person is None:
            self.probabilities = probabilities
        else:
            self.people[person] = replace(self.people[person], probabilities=probabilities)

    @property
    def label(self) -> str | None:
        return max(self.probabilities, key=self.probabilities.get) if self.probabilities else None


@dataclass
class FileResult:
    path: str
    status: str = "ok"  # ok | no_face | error
    error: str | None = None
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    clips: list[ClipResult] = field(default_factory=list)
    flags: dict[str, object] = field(default_factory=dict)
    media: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    weights: str | None = None  # which weights classified it, so a record never hides random ones
    precision: str | None = None  # the precision the model ran in (fp32, bf16, int8): its numbers depend on it
    explanation: dict | None = None  # with --explain (explain/): why the label, in voice, face, time
    cuts: list[float] = field(default_factory=list)  # the cuts found in what was read: new shots' first frames (s)
    # With people (people/persons.py): one record per person, the one who speaks most (None: nobody
    # visible speaks), all the speech found and the part of it no visible person made.
    people: list[PersonResult] | None = None
    speaker: int | None = None
    speech_seconds: float | None = None
    unattributed_speech_seconds: float | None = None

    @classmethod
    def failed(cls, path: str, error: str) -> FileResult:
        return cls(path=path, status="error", error=one_line(error))

    def finish(self, class_names: list[str]) -> None:
        """Averages the classified clips' probabilities into the file's label (with people, see
        people/persons.py: finish_people)."""
        probs = [[c.probabilities[n] for n in class_names] for c in self.clips if c.probabilities]
        if not probs:
            self.status = "no_face"
            return
        self.probabilities, self.label, self.confidence = mean_probabilities(probs, class_names)

    def to_dict(self) -> dict:
        """The JSON record; the explanation's keys appear only where one was asked for."""
        record = asdict(self)
        if self.explanation is None:
            del record["explanation"]
        people = any(c.people is not None for c in self.clips) or self.people is not None
        if not people:  # --people main: the single-person record
            for key in ("people", "speaker", "speech_seconds", "unattributed_speech_seconds"):
                del record[key]
        elif self.people is not None:
            record["people"] = [p.to_dict() for p in self.people]
        for clip, raw in zip(self.clips, record["clips"], strict=True):
            raw["label"] = clip.label
            if self.explanation is None:
                del raw["voice_share"], raw["face_share"]
            if not people:
                del raw["people"], raw["speech"], raw["speaker"]
            elif clip.people is not None:
                raw["people"] = [p.to_dict() for p in clip.people]
        return record


def mean_probabilities(probs: list[list[float]], class_names: list[str]) -> tuple[dict[str, float], str, float]:
    """The mean of rows of class probabilities, as a named dict, with its top class and that class's value."""
    mean = np.mean(probs, axis=0)
    best = int(np.argmax(mean))
    named = {n: round(float(p), 6) for n, p in zip(class_names, mean, strict=True)}
    return named, class_names[best], round(float(mean[best]), 6)


def probability_column(class_name: str) -> str:
    """A class's column in a table of records (CSV, DataFrame): apart from the record's own columns,
    which a class folder named `label` or `path` would otherwise take."""
    return f"p_{class_name}"


def to_dataframe(results: Iterable[FileResult]):
    """One row per file (path, status, label, confidence, a column per class: p_<class>, the flags, error),
    or with people one row per person (person, speaker, voice, seen, speaking and their label and classes), as a
    pandas DataFrame; pandas is optional and needed only here."""
    try:
        import pandas as pd
    except ImportError:
        raise DferError("to_dataframe needs pandas: pip install pandas") from None
    rows = []
    for r in results:
        file = {"path": r.path, "status": r.status}
        flags = {k: v for k, v in r.flags.items() if isinstance(v, bool | int | float | str)}
        tail = {"weights": r.weights, "error": r.error}
        if not r.people:
            rows.append(file | {"label": r.label, "confidence": r.confidence} | _probabilities(r.probabilities)
                        | flags | tail)
        for p in r.people or []:
            rows.append(file | {"person": p.person, "speaker": p.person == r.speaker, "voice": p.voice,
                                "seen": p.seen, "speaking": p.speaking, "speech_seconds": p.speech_seconds,
                                "label": p.label, "confidence": p.confidence}
                        | _probabilities(p.probabilities) | flags | tail)
    return pd.DataFrame(rows)


def _probabilities(probabilities: dict[str, float] | None) -> dict[str, float]:
    return {probability_column(n): p for n, p in (probabilities or {}).items()}
