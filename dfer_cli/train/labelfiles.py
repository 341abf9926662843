"""The label files of the data sets (their layouts: datasets.py): DFEW's split CSVs, MAFW's split lists
and a folder data set's labels CSV, read into (clip, label) pairs with a one-line error naming the file
and the line for anything malformed.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from dfer_cli.errors import DferError, DferWarning
from dfer_cli.labels import DFEW_CLASSES, MAFW_CLASSES, default_class_names
from dfer_cli.media.decode import VIDEO_EXTENSIONS

SPLITS = ("train", "val", "test")

# MAFW's own label numbering (its paper and release list the emotions in this order).
_MAFW_NUMBERING = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
                   "contempt", "anxiety", "helplessness", "disappointment")


_MAFW_ALIASES = {"happy": "happiness", "sad": "sadness", "angry": "anger"}
_LISTED = 5  # how many offending entries an error message names

Entry = tuple[str, int, Path, str | None]  # key, label, video, split (None: to be assigned)


def norm_name(name: str) -> str:
    """Folder, file and column names compared without case, spaces or punctuation ('Train (single-labeled)')."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def listed(items: Sequence[str]) -> str:
    """The first few of `items`, for an error message."""
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def dfew_id(raw: str) -> str:
    """DFEW clip ids are 5-digit folder names; split files and some copies drop the zero padding."""
    text = Path(raw.strip()).stem if raw.strip().lower().endswith(tuple(VIDEO_EXTENSIONS)) else raw.strip()
    match = re.fullmatch(r"(\d+)(\.0+)?", text)  # "25.0": the id went through a float column somewhere
    return f"{int(match.group(1)):05d}" if match else text


def read_dfew_csv(path: Path) -> list[tuple[str, int]]:
    """(clip id, 0-based label) of a DFEW split file: video_name,label with labels 1..7."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(_csv_rows(csv.reader(f)))
    name_col, label_col = 0, 1
    if rows and not rows[0][1][-1].strip().isdigit():
        header = [norm_name(c) for c in rows.pop(0)[1]]
        if "videoname" in header and "label" in header:
            name_col, label_col = header.index("videoname"), header.index("label")
    out: list[tuple[str, int]] = []
    for line_no, row in rows:
        where = f"{path}, line {line_no}"
        if len(row) <= max(name_col, label_col):
            raise DferError(f"{where}: expected video_name,label, got {','.join(row)!r}")
        label = row[label_col].strip()
        if not (label.isdigit() and 1 <= int(label) <= len(DFEW_CLASSES)):
            raise DferError(f"{where}: label {label!r} is not 1..7 (1 happy, 2 sad, 3 neutral, 4 angry, "
                            f"5 surprise, 6 disgust, 7 fear)")
        out.append((dfew_id(row[name_col]), int(label) - 1))
    if not out:
        raise DferError(f"{path}: no clips listed (expected rows video_name,label)")
    return out


def read_mafw_list(path: Path) -> list[tuple[str, int]]:
    """(clip name, label in MAFW_CLASSES order) of a MAFW split file: lines `<clip>.mp4 <label>`."""
    out: list[tuple[str, int]] = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DferError(f"{path}, line {line_no}: expected '<clip>.mp4 <label>', got {line.strip()!r}")
        out.append((Path(parts[0].strip()).stem, _mafw_label(parts[1], f"{path}, line {line_no}")))
    return out


def read_labels_csv(csv_path: Path, root: Path) -> tuple[tuple[str, ...], list[Entry]]:
    """A folder data set's labels CSV `path,label[,split]` (header optional): the class names and the
    entries. Paths are relative to the CSV's folder or to `root`; labels are class names (sorted to give
    indices), or integers used as 0-based indices with labels.default_class_names."""
    if not csv_path.is_file():
        raise DferError(f"{csv_path}: labels CSV not found (expected columns path,label[,split])")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(_csv_rows(csv.reader(f)))
    columns = {"path": 0, "label": 1, "split": 2}
    if rows and norm_name(rows[0][1][0]) == "path":
        header = [norm_name(c) for c in rows.pop(0)[1]]
        if "label" not in header:
            raise DferError(f"{csv_path}: the header has no 'label' column (expected path,label[,split])")
        columns = {name: header.index(name) for name in columns if name in header}
    if not rows:
        raise DferError(f"{csv_path}: no rows (expected path,label[,split])")
    raw: list[tuple[str, str, Path, str | None]] = []
    missing: list[str] = []
    for line_no, row in rows:
        where = f"{csv_path}, line {line_no}"
        if len(row) <= max(columns["path"], columns["label"]):
            raise DferError(f"{where}: expected path,label[,split], got {','.join(row)!r}")
        name, label = row[columns["path"]].strip(), row[columns["label"]].strip()
        split_col = columns.get("split")
        split = row[split_col].strip() if split_col is not None and split_col < len(row) else ""
        video = _resolve(name, (csv_path.parent, root))
        if video is None:
            missing.append(f"{name} (line {line_no})")
            continue
        raw.append((name, label, video, _canonical_split(split, where) if split else None))
    if missing:
        raise DferError(f"{len(missing)} videos listed in {csv_path} exist neither relative to "
                        f"{csv_path.parent} nor to {root}: {listed(missing)}")
    raw = _once_each(raw, csv_path)
    if all(label.isdigit() for _, label, _, _ in raw):
        numbers = {int(label) for _, label, _, _ in raw}
        class_names = default_class_names(max(numbers) + 1)
        gaps = [str(n) for n in range(max(numbers)) if n not in numbers]
        if gaps:
            warnings.warn(f"{csv_path}: integer labels are class indices, and {listed(gaps)} have no clip: the "
                          f"model gets {len(class_names)} classes, {len(gaps)} of them never seen", DferWarning,
                          stacklevel=2)
        return class_names, [(k, int(label), v, s) for k, label, v, s in raw]
    class_names = tuple(sorted({label for _, label, _, _ in raw}))
    index = {name: i for i, name in enumerate(class_names)}
    return class_names, [(k, index[label], v, s) for k, label, v, s in raw]


def _once_each(raw: list[tuple[str, str, Path, str | None]], csv_path: Path) -> list[tuple[str, str, Path, str | None]]:
    """The rows with each video once: a video listed twice alike counts once (its copies could land
    in train and val); listed with two labels or splits, it is refused, named."""
    seen: dict[Path, tuple[str, str, Path, str | None]] = {}
    for row in raw:
        first = seen.setdefault(row[2].resolve(), row)
        if (first[1], first[3]) != (row[1], row[3]):
            raise DferError(f"{csv_path}: {row[0]} is listed twice, as {first[1]!r}{_split_of(first)} and as "
                            f"{row[1]!r}{_split_of(row)}: keep one line for it")
    return list(seen.values())


def _split_of(row: tuple[str, str, Path, str | None]) -> str:
    return f" ({row[3]})" if row[3] else ""


def _csv_rows(reader: Iterable[list[str]]) -> Iterable[tuple[int, list[str]]]:
    """Non-blank rows with their 1-based line numbers (for error messages)."""
    for line_no, row in enumerate(reader, start=1):
        if any(cell.strip() for cell in row):
            yield line_no, row


def _mafw_label(raw: str, where: str) -> int:
    text = raw.strip().lower()
    if text.isdigit():
        number = int(text)
        if not 1 <= number <= len(_MAFW_NUMBERING):
            raise DferError(f"{where}: label {raw!r} is not 1..11 (MAFW numbering: "
                            f"{', '.join(f'{i} {n}' for i, n in enumerate(_MAFW_NUMBERING, 1))})")
        return MAFW_CLASSES.index(_MAFW_NUMBERING[number - 1])
    name = _MAFW_ALIASES.get(text, text)
    if name not in MAFW_CLASSES:
        raise DferError(f"{where}: unknown MAFW label {raw!r} (expected one of {', '.join(MAFW_CLASSES)} "
                        f"or 1..11)")
    return MAFW_CLASSES.index(name)


def _canonical_split(text: str, where: str) -> str:
    split = {"validation": "val", "valid": "val"}.get(text.lower(), text.lower())
    if split not in SPLITS:
        raise DferError(f"{where}: split {text!r} is not one of train, val, test")
    return split


def _resolve(name: str, bases: Sequence[Path]) -> Path | None:
    for base in bases:
        candidate = base / name  # an absolute `name` ignores the base
        if candidate.is_file():
            return candidate
    return None
