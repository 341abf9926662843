"""Data set adapters (DFEW, MAFW, a folder of videos) behind one interface: `samples(split)`."""

# Assumed layouts, `root` being the folder given on the command line:
#
# DFEW (root = the DFEW folder), folds 1..5, splits train and test:
#     EmoLabel_DataSplit/train(single-labeled)/set_<fold>.csv    columns video_name,label; label 1..7 =
#     EmoLabel_DataSplit/test(single-labeled)/set_<fold>.csv     happy sad neutral angry surprise disgust fear
#     Clip/clip_224x224/<5-digit id>/*.jpg    aligned face frames: the model's image input
#     Clip/original/<id>.mp4                  original clips, read for their audio (optional)
#   Names are matched ignoring case and the characters ' _-()' , so `train_single-labeled` or
#   `Train (single-labeled)` work too; `set1.csv` and `train_set_1.csv` are accepted; ids may lack their zero
#   padding (25 for 00025), in the CSV and in the original clips' file names. A clip without an original
#   video is kept with `video=None` (its audio input is then the no-audio input); prepare, train and
#   evaluate say how many clips of a split have no audio track.
#
# MAFW (root = the MAFW folder), folds 1..5, splits train and test:
#     Train & Test Set/single/no_caption/set_<fold>/train.txt    lines `<clip>.mp4 <label>`
#     Train & Test Set/single/no_caption/set_<fold>/test.txt
#     data/clips/<clip>.mp4
#   A label is an emotion name (case ignored) or an integer 1..11 in MAFW's own numbering (1 anger,
#   2 disgust, 3 fear, 4 happiness, 5 neutral, 6 sadness, 7 surprise, 8 contempt, 9 anxiety, 10 helplessness,
#   11 disappointment); both are mapped to the reference model's order (labels.MAFW_CLASSES). MAFW has no
#   aligned faces in this layout: samples carry the video and faces come from the face detector.
#
# Folder (any data): `root/<class name>/**/<video>`, class indices following the sorted class names, split
# into train/val per class with a seeded shuffle. Or a CSV `path,label[,split]` (header optional): paths are
# relative to the CSV's folder or to root; labels are class names (sorted to give indices), or integers
# used as 0-based indices with labels.default_class_names; rows without a split are split as above.

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dfer_cli.errors import DferError, DferWarning
from dfer_cli.labels import DFEW_CLASSES, MAFW_CLASSES, REFERENCE_ORDER, TIME_ORDER
from dfer_cli.media.decode import VIDEO_EXTENSIONS
from dfer_cli.train.labelfiles import (
    SPLITS,
    Entry,
    dfew_id,
    listed,
    norm_name,
    read_dfew_csv,
    read_labels_csv,
    read_mafw_list,
)

NUM_FOLDS = 5


@dataclass(frozen=True)
class Sample:
    """One labelled clip. `video` is the original video (audio, and faces when `frames_dir` is None);
    `frames_dir` holds pre-extracted face frames (DFEW)."""

    key: str
    label: int
    video: Path | None
    frames_dir: Path | None
    split: str


class Dataset(Protocol):
    name: str  # human-readable, for messages and reports (e.g. "DFEW fold 1")
    cache_name: str  # names its prepared clip cache, which every fold shares (e.g. "dfew")
    class_names: tuple[str, ...]
    splits: tuple[str, ...]

    def samples(self, split: str) -> list[Sample]: ...


@dataclass(frozen=True)
class SplitSummary:
    """What a split holds, for the user to read before a long run (`dfer prepare` prints it)."""

    dataset: str
    split: str
    class_names: tuple[str, ...]
    counts: tuple[int, ...]

    def __str__(self) -> str:
        per_class = ", ".join(f"{n} {c}" for n, c in zip(self.class_names, self.counts, strict=True))
        return f"{self.dataset}, {self.split}: {sum(self.counts)} clips ({per_class})"


def open_dataset(name: str, root: Path, fold: int = 1, labels_csv: Path | None = None,
                 val_fraction: float = 0.2) -> Dataset:
    """The adapter for `name` (dfew, mafw or folder); the fold is ignored by folder data sets."""
    if name == "folder":
        return FolderDataset(root, val_fraction=val_fraction, labels_csv=labels_csv)
    if name == "dfew":
        return DfewDataset(root, fold)
    if name == "mafw":
        return MafwDataset(root, fold)
    raise DferError(f"unknown data set {name!r}: dfew, mafw or folder")


def summarize(dataset: Dataset, split: str) -> SplitSummary:
    samples = dataset.samples(split)
    counts = [0] * len(dataset.class_names)
    for sample in samples:
        counts[sample.label] += 1
    return SplitSummary(dataset.name, split, tuple(dataset.class_names), tuple(counts))


class DfewDataset:
    """DFEW, one fold (layout in the module docstring)."""

    class_names = DFEW_CLASSES
    splits = ("train", "test")

    def __init__(self, root: str | Path, fold: int = 1) -> None:
        self.root = _existing_root(root, "DFEW")
        self.fold = _checked_fold(fold)
        self.name = f"DFEW fold {fold}"
        self.cache_name = "dfew"
        self._frames_root = self._find_frames_root()
        self._videos: dict[str, Path] | None = None

    def split_file(self, split: str) -> Path:
        _check_split(self, split)
        expected = f"{self.root}/EmoLabel_DataSplit/{split}(single-labeled)/set_{self.fold}.csv"
        label_dir = _child_dir(self.root, lambda n: n == "emolabeldatasplit")
        split_dir = label_dir and _child_dir(label_dir, lambda n: n.startswith(split) and "single" in n)
        if split_dir is not None:
            for path in sorted(split_dir.iterdir()):
                if path.is_file() and norm_name(path.name).endswith(f"set{self.fold}csv"):
                    return path
        raise DferError(f"DFEW {split} split file for fold {self.fold} not found: expected {expected} "
                        f"(columns video_name,label)")

    def samples(self, split: str) -> list[Sample]:
        path = self.split_file(split)
        rows = read_dfew_csv(path)
        frame_dirs = {p.name for p in self._frames_root.iterdir() if p.is_dir()}
        missing = [key for key, _ in rows if key not in frame_dirs]
        if missing:
            raise DferError(f"{len(missing)} of the {len(rows)} clips in {path} have no face "
                            f"frames folder {self._frames_root}/<id>: {listed(missing)}")
        videos = self._original_videos()
        return [Sample(key, label, videos.get(key), self._frames_root / key, split) for key, label in rows]

    def _find_frames_root(self) -> Path:
        clip_dir = _child_dir(self.root, lambda n: n == "clip")
        for parent in (clip_dir, self.root):
            found = parent and _child_dir(parent, lambda n: n == "clip224x224")
            if found is not None:
                return found
        raise DferError(f"DFEW face frames not found: expected {self.root}/Clip/clip_224x224/<5-digit id>/"
                        f"*.jpg (the aligned 224x224 faces shipped with DFEW)")

    def _original_videos(self) -> dict[str, Path]:
        # Indexed once and only when asked: it walks ~16k files.
        if self._videos is None:
            clip_dir = _child_dir(self.root, lambda n: n == "clip") or self.root
            roots = [p for p in sorted(clip_dir.iterdir())
                     if p.is_dir() and norm_name(p.name).startswith("original")]
            self._videos = {dfew_id(p.stem): p for p in _video_files(roots)}
        return self._videos


class MafwDataset:
    """MAFW single-label set, one fold (layout in the module docstring)."""

    class_names = MAFW_CLASSES
    splits = ("train", "test")
    # Faces as the paper extracted them: the box around every face of the frame.
    face_policy = "union"
    # The official checkpoints read each clip's frames in the reference's file-name order (clips.py),
    # dfer's own training in time order: a prepared cache keeps the test-time picks of both.
    frame_orders = (TIME_ORDER, REFERENCE_ORDER)

    def __init__(self, root: str | Path, fold: int = 1) -> None:
        self.root = _existing_root(root, "MAFW")
        self.fold = _checked_fold(fold)
        self.name = f"MAFW fold {fold}"
        self.cache_name = "mafw"
        self._clips_dir = self._find_clips_dir()

    def split_file(self, split: str) -> Path:
        _check_split(self, split)
        levels = (("Train & Test Set", "traintestset"), ("single", "single"), ("no_caption", "nocaption"),
                  (f"set_{self.fold}", f"set{self.fold}"))
        expected = f"{self.root}/Train & Test Set/single/no_caption/set_{self.fold}/{split}.txt"
        folder = self.root
        for shown, wanted in levels:
            child = _child_dir(folder, lambda n, w=wanted: n == w)
            if child is None:
                raise DferError(f"MAFW {split} split file for fold {self.fold} not found: expected "
                                f"{expected} (no folder '{shown}' in {folder})")
            folder = child
        for path in sorted(folder.iterdir()):
            if path.is_file() and norm_name(path.name) == f"{split}txt":
                return path
        raise DferError(f"MAFW {split} split file for fold {self.fold} not found: expected {expected}")

    def samples(self, split: str) -> list[Sample]:
        path = self.split_file(split)
        clips = {p.stem: p for p in _video_files([self._clips_dir])}
        rows = read_mafw_list(path)
        missing = [key for key, _ in rows if key not in clips]
        if missing:
            raise DferError(f"{len(missing)} of the {len(rows)} clips in {path} are not in "
                            f"{self._clips_dir} (expected <clip>.mp4 there): {listed(missing)}")
        return [Sample(key, label, clips[key], None, split) for key, label in rows]

    def _find_clips_dir(self) -> Path:
        data_dir = _child_dir(self.root, lambda n: n == "data")
        clips_dir = data_dir and _child_dir(data_dir, lambda n: n == "clips")
        if clips_dir is None:
            raise DferError(f"MAFW clips not found: expected {self.root}/data/clips/<clip>.mp4")
        return clips_dir


class FolderDataset:
    """Videos sorted into one folder per class, or listed in a CSV (see the module docstring)."""

    def __init__(self, root: str | Path, val_fraction: float = 0.2, seed: int = 1,
                 labels_csv: str | Path | None = None) -> None:
        if not 0.0 <= val_fraction < 1.0:
            raise DferError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = _existing_root(root, "video")
        self.name = f"folder {self.root.name}"
        # One cache per folder: its name plus a short hash of where it is.
        self.cache_name = f"folder-{self.root.name}-{hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]}"
        if labels_csv is None:
            self.class_names, entries = _scan_class_folders(self.root)
        else:
            self.class_names, entries = read_labels_csv(Path(labels_csv), self.root)
        _check_classes(self.class_names, {label for _, label, _, _ in entries}, labels_csv or self.root)
        unsplit = [(key, label, video) for key, label, video, split in entries if split is None]
        assigned = [(key, label, video, split) for key, label, video, split in entries if split is not None]
        assigned += _stratified_split(unsplit, self.class_names, val_fraction, seed)
        self._by_split = {
            s: [Sample(k, lab, v, None, s) for k, lab, v, sp in assigned if sp == s] for s in SPLITS
        }
        self.splits = tuple(s for s in SPLITS if self._by_split[s])

    def samples(self, split: str) -> list[Sample]:
        _check_split(self, split)
        return list(self._by_split[split])


def _check_classes(class_names: Sequence[str], used: set[int], where: object) -> None:
    """Refuse a set a classifier cannot learn from (one class trains to loss 0); warn about class
    names that differ only in case, which are two classes."""
    if len(used) < 2:
        raise DferError(f"{where}: {len(used)} class{'es' if len(used) != 1 else ''} "
                        f"({', '.join(repr(class_names[i]) for i in sorted(used))}): training needs two at least")
    by_case: dict[str, list[str]] = {}
    for name in class_names:
        by_case.setdefault(name.casefold(), []).append(name)
    for names in (n for n in by_case.values() if len(n) > 1):
        warnings.warn(f"{where}: classes {', '.join(map(repr, names))} differ only in case: they are "
                      f"{len(names)} classes", DferWarning, stacklevel=3)


def _scan_class_folders(root: Path) -> tuple[tuple[str, ...], list[Entry]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DferError(f"{root}: no class folders; expected one sub-folder per class holding videos "
                        f"({_extensions()})")
    entries: list[Entry] = []
    for label, class_dir in enumerate(class_dirs):
        videos = _video_files([class_dir])
        if not videos:
            raise DferError(f"{class_dir}: class folder without videos ({_extensions()})")
        entries += [(v.relative_to(root).as_posix(), label, v, None) for v in videos]
    return tuple(p.name for p in class_dirs), entries


def _stratified_split(entries: Sequence[tuple[str, int, Path]], class_names: Sequence[str],
                      val_fraction: float, seed: int) -> list[Entry]:
    """Per class, a seeded shuffle then the first round(n * val_fraction) go to val.

    Each class gets its own generator seeded by (seed, class name), so adding a class or a video to one
    class does not reshuffle the others. A class with 2+ videos keeps at least one in each split.
    """
    out: list[Entry] = []
    for label, name in enumerate(class_names):
        members = sorted((e for e in entries if e[1] == label), key=lambda e: e[0])
        random.Random(f"{seed}:{name}").shuffle(members)
        n = len(members)
        n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
        out += [(k, lab, v, "val" if i < n_val else "train") for i, (k, lab, v) in enumerate(members)]
    return out


def _video_files(folders: Iterable[Path]) -> list[Path]:
    return sorted(
        p for folder in folders for p in folder.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _child_dir(parent: Path, accept: Callable[[str], bool]) -> Path | None:
    """The first sub-folder (sorted) whose normalised name `accept` takes."""
    if not parent.is_dir():
        return None
    return next((p for p in sorted(parent.iterdir()) if p.is_dir() and accept(norm_name(p.name))), None)


def _existing_root(root: str | Path, what: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DferError(f"{path}: {what} data set folder not found")
    return path


def _checked_fold(fold: int) -> int:
    if not 1 <= fold <= NUM_FOLDS:
        raise DferError(f"fold must be 1..{NUM_FOLDS}, got {fold}")
    return fold


def _check_split(dataset: Dataset, split: str) -> None:
    if split not in dataset.splits:
        raise DferError(f"{dataset.name} has no '{split}' split (available: {', '.join(dataset.splits)})")


def _extensions() -> str:
    return " ".join(sorted(e.lstrip(".") for e in VIDEO_EXTENSIONS))
