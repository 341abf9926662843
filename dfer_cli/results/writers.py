"""Writers that turn records into text: a Rich table for people; JSON, JSON Lines and CSV for scripts."""

from __future__ import annotations

import csv
import json
from typing import TextIO

from rich.cells import cell_len, chop_cells
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

from dfer_cli.results.records import FileResult, probability_column


class Writer:
    def __init__(self, stream: TextIO, class_names: list[str], timeline: bool, explain: bool = False,
                 people: bool = False) -> None:
        self.stream, self.class_names, self.timeline, self.explain = stream, class_names, timeline, explain
        self.people = people  # the records carry people: a line per person where the format has lines

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
    """One row per file; with --window, one row per window; with people, one row per person of each."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.csv = csv.writer(self.stream)
        head = ["path", "status", "start", "end"] if self.timeline else ["path", "status"]
        persons = ["person", "speaker", "voice", "speech_seconds"] if self.people else []
        shares = ["voice_share", "face_share"] if self.explain else []
        # The people's columns come last, so that scripts reading the columns before them by position go on.
        probabilities = map(probability_column, self.class_names)
        self._writerow([*head, "label", "confidence", *probabilities, *shares, "faces", "no_audio", "silent_audio",
                        "still_image", "error", *persons])

    def _writerow(self, row: list) -> None:
        self.csv.writerow([_inert(v) for v in row])

    def _row(self, r: FileResult, label, probs, extra: list, shares: tuple, person: list | None = None) -> list:
        values = [f"{probs[n]:.6f}" if probs else "" for n in self.class_names]
        faces = f"{r.flags.get('faces_found', '')}/{r.flags.get('frames', '')}" if r.flags else ""
        explained = ["" if v is None else f"{v:.4f}" for v in shares] if self.explain else []
        persons = (person or ["", "", "", ""]) if self.people else []
        return [r.path, r.status, *extra, label or "", f"{max(probs.values()):.6f}" if probs else "",
                *values, *explained, faces, r.flags.get("no_audio", ""), r.flags.get("silent_audio", ""),
                r.flags.get("still_image", ""), r.error or "", *persons]

    def write(self, r: FileResult) -> None:
        if self.timeline and r.clips:
            for c in r.clips:
                span = [f"{c.start:.3f}", f"{c.end:.3f}"]
                shares = (c.voice_share, c.face_share)
                if not c.people:
                    self._writerow(self._row(r, c.label, c.probabilities, span, shares))
                for e in c.people or []:
                    self._writerow(self._row(r, e.get("label"), e.get("probabilities"), span, shares,
                                                _person(e, c.speaker)))
        elif r.people:
            for p in r.people:
                e = p.get("explanation") or {}
                self._writerow(self._row(r, p["label"], p["probabilities"], ["", ""] if self.timeline else [],
                                            (e.get("voice_share"), e.get("face_share")), _person(p, r.speaker)))
        else:
            e = r.explanation or {}
            self._writerow(self._row(r, r.label, r.probabilities, ["", ""] if self.timeline else [],
                                        (e.get("voice_share"), e.get("face_share"))))
        self.stream.flush()


def _inert(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (a file named `=HYPERLINK(...).mp4`),
    prefixed with ', which spreadsheets show as text; numbers are left as they are."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def _person(entry: dict, speaker: int | None) -> list:
    return [entry["person"], entry["person"] == speaker, entry["voice"], f"{entry['speech_seconds']:.3f}"]


class TableWriter(Writer):
    """Collects the results and prints them as tables at the end (people read them all at once)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.results: list[FileResult] = []

    def write(self, result: FileResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        console = Console(file=self.stream, highlight=False)
        # A person column only where some file shows more than one person: one face reads as before.
        self.people = self.people and any(len(r.people or []) > 1 for r in self.results)
        persons = [Column("person", no_wrap=True)] if self.people else []
        table = Table(*persons, "emotion", "confidence", "top 3", "faces", Column("audio", no_wrap=True),
                      *(["voice / face"] if self.explain else []))
        table.columns.insert(0, Column("file"))
        for r in self.results:
            if self.people and r.people and r.status == "ok":
                for row in self._people(r):
                    table.add_row(*row)
            else:
                table.add_row(*self._summary(r)[:1], *[""] * len(persons), *self._summary(r)[1:])
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

    def _summary(self, r: FileResult) -> list:
        shares = [_shares(r.explanation)] if self.explain else []
        if r.status == "error":
            return [_Path(r.path), "[red]error[/red]", "", escape(r.error or ""), "", "", *shares]
        faces = f"{r.flags.get('faces_found')}/{r.flags.get('frames')}"
        if r.flags.get("still_image"):
            faces += " (still image)"
        audio = "none" if r.flags.get("no_audio") else "silent" if r.flags.get("silent_audio") else "yes"
        if r.status == "no_face":
            return [_Path(r.path), "[yellow]no face found[/yellow]", "", "", faces, audio, *shares]
        return [_Path(r.path), f"[bold]{r.label}[/bold]", f"{r.confidence:.0%}", self._top3(r.probabilities),
                faces, audio, *shares]

    def _people(self, r: FileResult) -> list[list]:
        """A line per person: the speaker marked, the voice each heard (own speech, none, or all of it)."""
        rows = []
        audio = "none" if r.flags.get("no_audio") else "silent" if r.flags.get("silent_audio") else None
        for k, p in enumerate(r.people):
            mark = f"{p['person']} [bold]speaks[/bold]" if p["person"] == r.speaker else str(p["person"])
            voice = audio or {"own": f"own {p['speech_seconds']:.1f} s", "none": "not theirs",
                              "all": "all"}[p["voice"]]
            shares = [_shares(p.get("explanation"))] if self.explain else []
            faces = f"{p['flags']['faces_found']}/{p['flags']['frames']}"
            emotion = f"[bold]{p['label']}[/bold]" if p["label"] else "[yellow]no face[/yellow]"
            rows.append([_Path(r.path) if k == 0 else "", mark, emotion,
                         f"{p['confidence']:.0%}" if p["confidence"] is not None else "",
                         self._top3(p["probabilities"]), faces, voice, *shares])
        return rows

    def _windows(self, r: FileResult) -> Table:
        speakers = ["people", "speaker"] if self.people and len(r.people or []) > 1 else []
        table = Table("start", "end", "emotion", "top 3", "faces", *speakers,
                      *(["voice / face"] if self.explain else []), title=escape(r.path))
        for c in r.clips:
            shares = [_shares({"voice_share": c.voice_share, "face_share": c.face_share})
                      if c.face_share is not None else ""] if self.explain else []
            who = [str(len(c.people or [])), "" if c.speaker is None else str(c.speaker)] if speakers else []
            table.add_row(f"{c.start:.1f}s", f"{c.end:.1f}s", c.label or "no face",
                          self._top3(c.probabilities), f"{c.faces_found}/{c.frames}", *who, *shares)
        return table


class _Path:
    """A path in the table on one line: cut in the middle to the width the table gives it (an 80-column
    pipe wrapped it over several), keeping its start and more of its end, the file's name."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(cell_len(self.path), _PATH_LEAST), cell_len(self.path))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(middle_ellipsis(self.path, options.max_width), no_wrap=True, overflow="crop")


_PATH_LEAST = 16  # cells: the narrowest a path column gets, enough for a name's end


def middle_ellipsis(text: str, width: int) -> str:
    """`text` cut to `width` terminal cells with "…" in the middle: a third of the rest from its start,
    two thirds from its end."""
    if cell_len(text) <= width:
        return text
    keep = max(width - 1, 0)
    head = chop_cells(text, keep // 3)[0] if keep >= 3 else ""
    rest = keep - cell_len(head)
    tail = chop_cells(text[::-1], rest)[0][::-1] if rest else ""
    return head + "…" + tail


def _shares(explanation: dict | None) -> str:
    if not explanation:
        return ""
    if explanation["voice_share"] is None:
        return "face only (no audio)"
    undetermined = " (undetermined)" if explanation.get("undetermined") else ""
    return f"{explanation['voice_share']:.0%} / {explanation['face_share']:.0%}{undetermined}"


def make_writer(fmt: str, stream: TextIO, class_names: list[str], timeline: bool, explain: bool = False,
                people: bool = False) -> Writer:
    kinds = {"table": TableWriter, "json": JsonWriter, "jsonl": JsonlWriter, "csv": CsvWriter}
    return kinds[fmt](stream, class_names, timeline, explain, people)
