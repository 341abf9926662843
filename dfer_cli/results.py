"""What `dfer predict` reports per file: plain records, and the writers that turn them into text
(a Rich table for people; JSON, JSON Lines and CSV for scripts).

Machine formats stream one record per file as it finishes; the JSON array is closed even when the
run is interrupted, so stdout stays parseable.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TextIO

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from .errors import DferError


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


class Writer:
    def __init__(self, stream: TextIO, class_names: list[str], timeline: bool, explain: bool = False) -> None:
        self.stream, self.class_names, self.timeline, self.explain = stream, class_names, timeline, explain

    def write(self, result: FileResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class JsonWriter(Writer):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.count = 0
        self.stream.write("[")

    def write(self, result: FileResult) -> None:
        record = json.dumps(result.to_dict(), ensure_ascii=False)
        self.stream.write(("," if self.count else "") + "\n" + record)
        self.stream.flush()
        self.count += 1

    def close(self) -> None:
        self.stream.write("\n]\n" if self.count else "]\n")
        super().close()


class JsonlWriter(Writer):
    def write(self, result: FileResult) -> None:
        self.stream.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        self.stream.flush()


class CsvWriter(Writer):
    """One row per file; with --window, one row per window."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.csv = csv.writer(self.stream)
        head = ["path", "status", "start", "end"] if self.timeline else ["path", "status"]
        shares = ["voice_share", "face_share"] if self.explain else []
        self.csv.writerow([*head, "label", "confidence", *self.class_names, *shares, "faces", "no_audio",
                           "silent_audio", "still_image", "error"])

    def _row(self, r: FileResult, label, probs, extra: list, shares: tuple) -> list:
        values = [f"{probs[n]:.6f}" if probs else "" for n in self.class_names]
        faces = f"{r.flags.get('faces_found', '')}/{r.flags.get('frames', '')}" if r.flags else ""
        explained = ["" if v is None else f"{v:.4f}" for v in shares] if self.explain else []
        return [r.path, r.status, *extra, label or "", f"{max(probs.values()):.6f}" if probs else "", *values,
                *explained, faces, r.flags.get("no_audio", ""), r.flags.get("silent_audio", ""),
                r.flags.get("still_image", ""), r.error or ""]

    def write(self, r: FileResult) -> None:
        if self.timeline and r.clips:
            for c in r.clips:
                self.csv.writerow(self._row(r, c.label, c.probabilities, [f"{c.start:.3f}", f"{c.end:.3f}"],
                                            (c.voice_share, c.face_share)))
        else:
            e = r.explanation or {}
            self.csv.writerow(self._row(r, r.label, r.probabilities, ["", ""] if self.timeline else [],
                                        (e.get("voice_share"), e.get("face_share"))))
        self.stream.flush()


class TableWriter(Writer):
    """Collects the results and prints them as tables at the end (people read them all at once)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.results: list[FileResult] = []

    def write(self, result: FileResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        console = Console(file=self.stream, highlight=False)
        table = Table("emotion", "confidence", "top 3", "faces", "audio", *(["voice / face"] if self.explain else []))
        table.columns.insert(0, Column("file", overflow="fold"))
        for r in self.results:
            table.add_row(*self._summary(r))
        console.print(table)
        if self.timeline:
            for r in self.results:
                if r.clips and r.status != "error":
                    console.print(self._windows(r))
        super().close()

    @staticmethod
    def _top3(probs: dict[str, float] | None) -> str:
        if not probs:
            return ""
        return ", ".join(f"{n} {p:.0%}" for n, p in sorted(probs.items(), key=lambda kv: -kv[1])[:3])

    def _summary(self, r: FileResult) -> list[str]:
        shares = [_shares(r.explanation)] if self.explain else []
        if r.status == "error":
            return [escape(r.path), "[red]error[/red]", "", escape(r.error or ""), "", "", *shares]
        faces = f"{r.flags.get('faces_found')}/{r.flags.get('frames')}"
        if r.flags.get("still_image"):
            faces += " (still image)"
        audio = "none" if r.flags.get("no_audio") else "silent" if r.flags.get("silent_audio") else "yes"
        if r.status == "no_face":
            return [escape(r.path), "[yellow]no face found[/yellow]", "", "", faces, audio, *shares]
        return [escape(r.path), f"[bold]{r.label}[/bold]", f"{r.confidence:.0%}", self._top3(r.probabilities),
                faces, audio, *shares]

    def _windows(self, r: FileResult) -> Table:
        table = Table("start", "end", "emotion", "top 3", "faces", *(["voice / face"] if self.explain else []),
                      title=escape(r.path))
        for c in r.clips:
            shares = [_shares({"voice_share": c.voice_share, "face_share": c.face_share})
                      if c.face_share is not None else ""] if self.explain else []
            table.add_row(f"{c.start:.1f}s", f"{c.end:.1f}s", c.label or "no face",
                          self._top3(c.probabilities), f"{c.faces_found}/{c.frames}", *shares)
        return table


def _shares(explanation: dict | None) -> str:
    if not explanation:
        return ""
    if explanation["voice_share"] is None:
        return "face only (no audio)"
    undetermined = " (undetermined)" if explanation.get("undetermined") else ""
    return f"{explanation['voice_share']:.0%} / {explanation['face_share']:.0%}{undetermined}"


def make_writer(fmt: str, stream: TextIO, class_names: list[str], timeline: bool, explain: bool = False) -> Writer:
    kinds = {"table": TableWriter, "json": JsonWriter, "jsonl": JsonlWriter, "csv": CsvWriter}
    return kinds[fmt](stream, class_names, timeline, explain)
