"""What `dfer predict` reports: plain records per file and per clip, and a pandas view of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from dfer_cli.errors import DferError


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
    explanation: dict | None = None  # with --explain (explain.py): why the label, in voice, face, time

    @classmethod
    def failed(cls, path: str, error: str) -> FileResult:
        return cls(path=path, status="error", error=error)

    def finish(self, class_names: list[str]) -> None:
        """Averages the classified clips' probabilities into the file's label."""
        probs = [[c.probabilities[n] for n in class_names] for c in self.clips if c.probabilities]
        if not probs:
            self.status = "no_face"
            return
        mean = np.mean(probs, axis=0)
        self.probabilities = {n: round(float(p), 6) for n, p in zip(class_names, mean, strict=True)}
        best = int(np.argmax(mean))
        self.label, self.confidence = class_names[best], round(float(mean[best]), 6)

    def to_dict(self) -> dict:
        """The JSON record; the explanation's keys appear only where one was asked for."""
        record = asdict(self)
        if self.explanation is None:
            del record["explanation"]
        for clip, raw in zip(self.clips, record["clips"], strict=True):
            raw["label"] = clip.label
            if self.explanation is None:
                del raw["voice_share"], raw["face_share"]
        return record


def to_dataframe(results: Iterable[FileResult]):
    """One row per file (path, status, label, confidence, a column per class, the flags, error) as a
    pandas DataFrame; pandas is optional and needed only here."""
    try:
        import pandas as pd
    except ImportError:
        raise DferError("to_dataframe needs pandas: pip install pandas") from None
    rows = []
    for r in results:
        row = {"path": r.path, "status": r.status, "label": r.label, "confidence": r.confidence}
        row |= dict(r.probabilities or {})
        row |= {k: v for k, v in r.flags.items() if isinstance(v, bool | int | float | str)}
        row |= {"weights": r.weights, "error": r.error}
        rows.append(row)
    return pd.DataFrame(rows)
