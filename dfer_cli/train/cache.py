"""The prepared clip cache that training and evaluation read instead of video (`dfer prepare` fills it):
one folder per data set and face size, shared by every fold, written so that a killed run loses nothing."""

# One folder per data set and face size, shared by all its folds and splits (a DFEW fold's train and
# test sets are the whole data set again, so per-fold caches would hold every clip five times):
#     meta.json              what it holds: data set, face size, frame cap
#     index.jsonl            one line per finished clip: key, file name, its frame count and the
#                            numbers of the frames kept, flags, each file's size and sha256 (checked
#                            when a writer opens the cache: the sizes always, the digests with verify)
#     skipped.jsonl          clips left out (no face, unreadable media), with the reason
#     frames/<name>.npy      uint8 (n, S, S, 3) RGB face crops of the kept frames, in time order
#     audio/<name>.npy       float32 (512, 128): the audio model input, exactly as the model takes it
#
# A split is a view (`ClipSet`): the keys and labels the data-set adapter gives for it, looked up here.
# Labels are never cached, so a changed label file or fold never reads stale ones.
#
# Why plain .npy files: they are read memory-mapped, so a loader taking 16 of a clip's n frames copies
# only those 16 (no decoding at all, where per-clip JPEG folders cost 16 file opens and 16 decodes),
# and they store pixels losslessly, so the test-time input is bit-identical to the reference's.
# Why one file per clip and an append-only index: every file is written atomically and a clip's index
# line is appended only after both its files are in place, so a killed run leaves at worst some
# unindexed files (redone and overwritten on resume) and, rarely, a cut last index line (ignored).

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from dfer_cli.atomic import atomic_path, atomic_write_text
from dfer_cli.errors import DferError
from dfer_cli.locks import FileLock
from dfer_cli.train.datasets import Dataset
from dfer_cli.weights.digest import sha256

# 1: one cache per fold and split. 2: frames at 1/6, 1/2 and 5/6 of each segment, where the 2-clip
# view wants 1/4 and 3/4. 3: the frames every test-time view picks (clips.kept_frames), numbered.
FORMAT = 3
META = "meta.json"
INDEX = "index.jsonl"
SKIPPED = "skipped.jsonl"
_LOCK = ".lock"
_KINDS = ("frames", "audio")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class CacheSpec:
    """What a cache was prepared for; resuming or reusing it with another spec is refused."""

    dataset: str  # the adapter's cache name (e.g. "dfew"), the same for every fold
    size: int
    max_frames: int
    format: int = FORMAT


@dataclass(frozen=True)
class CachedClip:
    key: str
    label: int
    frames: np.ndarray  # (n, S, S, 3) uint8, memory-mapped: indexing reads only the frames taken
    audio: np.ndarray  # (512, 128) float32
    numbers: np.ndarray  # (n,) each kept frame's number in the clip (0: its first frame), increasing
    source_frames: int  # the clip's own frame count


def file_name(key: str) -> str:
    """A file name for a clip key: the key itself when it is a plain name (DFEW ids, MAFW clips),
    else a readable version of it plus a hash (folder keys are relative paths)."""
    if _SAFE_NAME.fullmatch(key):
        return key
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", key).lstrip("._-")[-80:]
    return f"{readable}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def write_clip_files(root: Path, key: str, frames: np.ndarray, audio: np.ndarray) -> tuple[str, dict]:
    """Write one clip's arrays atomically (any process may call this); returns their file name and
    each file's [size, sha256] by kind, which the index keeps to check them. The clip joins the cache
    only when the writer commits it."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"{key}: frames must be uint8 (n, S, S, 3), got {frames.dtype} {frames.shape}")
    name = file_name(key)
    checks = {}
    for kind, array in zip(_KINDS, (frames, audio.astype(np.float32)), strict=True):
        path = root / kind / f"{name}.npy"
        with atomic_path(path) as tmp, open(tmp, "xb") as f:
            np.save(f, np.ascontiguousarray(array))
        checks[kind] = [path.stat().st_size, sha256(path)]
    return name, checks


def _read_meta(root: Path) -> dict | None:
    path = root / META
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DferError(f"{path}: not a dfer cache description (unreadable JSON)") from None


def _read_lines(path: Path) -> dict[str, dict]:
    """key -> record of an append-only JSONL file; a later line for a key replaces an earlier one."""
    records: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # the line a kill cut short: that clip is simply redone
                continue
            records[record["key"]] = record
    return records


def _write_lines(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _spec_mismatch(meta: dict, spec: CacheSpec) -> str | None:
    held = {k: meta.get(k) for k in asdict(spec)}
    wanted = asdict(spec)
    if held == wanted:
        return None
    diff = ", ".join(f"{k} {held[k]!r} (asked {wanted[k]!r})" for k in wanted if held[k] != wanted[k])
    return f"prepared with {diff}"


class ClipStore:
    """Read side of a cache: every clip prepared so far, and those left out."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta = _read_meta(self.root)
        if meta is None:
            raise DferError(f"{self.root}: not a prepared clip cache (no {META}); run `dfer prepare`")
        if meta.get("format") != FORMAT:
            raise DferError(f"{self.root / META}: cache format {meta.get('format')}, this dfer reads {FORMAT}; "
                            f"delete the folder and run `dfer prepare` again")
        self.spec = CacheSpec(**{f.name: meta[f.name] for f in fields(CacheSpec)})
        self.entries = _read_lines(self.root / INDEX)
        self.skipped = {k: r["reason"] for k, r in _read_lines(self.root / SKIPPED).items()
                        if k not in self.entries}

    def split(self, labels: dict[str, int]) -> ClipSet:
        """The view of one split, given as key -> label by the data-set adapter."""
        return ClipSet(self, labels)

    def read(self, key: str, label: int) -> CachedClip:
        e = self.entries[key]
        try:
            frames = np.load(self.root / "frames" / f"{e['file']}.npy", mmap_mode="r")
            audio = np.load(self.root / "audio" / f"{e['file']}.npy")
        except (OSError, ValueError) as err:
            raise DferError(f"{self.root}: clip {key} is unreadable ({err}); rerun `dfer prepare --verify` "
                            "to rebuild the damaged clips") from None
        # An entry without frame numbers holds every frame of its clip.
        numbers = np.asarray(e.get("frame_numbers", range(len(frames))), dtype=np.int64)
        return CachedClip(key, label, frames, audio, numbers, int(e.get("source_frames", len(frames))))


def read_split(root: Path, dataset: Dataset, split: str) -> ClipSet:
    """A split's clips as the cache holds them now. Only a read: what the cache lacks is listed in
    `missing` (`prepare.prepare_missing` adds it)."""
    return ClipStore(root).split({s.key: s.label for s in dataset.samples(split)})


class ClipSet:
    """One split's clips in a store, in key order (a clip's position seeds its training draws, so it
    must not depend on the order in which parallel workers finished)."""

    def __init__(self, store: ClipStore, labels: dict[str, int]) -> None:
        self.store, self.root, self.spec = store, store.root, store.spec
        self.keys = sorted(k for k in labels if k in store.entries)
        self.labels = np.array([labels[k] for k in self.keys], dtype=np.int64)
        self.skipped = [store.skipped[k] for k in sorted(labels) if k in store.skipped]
        self.missing = sorted(k for k in labels if k not in store.entries and k not in store.skipped)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def no_audio(self) -> list[str]:
        """The clips prepared without an audio track: the model hears its no-audio input for them."""
        return [k for k in self.keys if self.store.entries[k].get("no_audio")]

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, i: int) -> CachedClip:
        return self.store.read(self.keys[i], int(self.labels[i]))


class CacheWriter:
    """The one writer of a cache (`dfer prepare`). Opening it takes a lock, clears what a killed run
    left (temporary files, a cut index line, entries whose files are gone) and checks that the cache
    was prepared for the same spec; `commit` records finished clips, `skip` those left out."""

    def __init__(self, root: str | Path, spec: CacheSpec, verify: bool = False) -> None:
        self.root = Path(root)
        self.spec, self.verify = spec, verify
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.root / _LOCK, f"{self.root}: another `dfer prepare` is writing this cache")
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self._lock.acquire()
        meta = _read_meta(self.root)
        if meta is not None and (reason := _spec_mismatch(meta, self.spec)):
            raise DferError(f"{self.root}: this cache was {reason}; use another --cache / --out, or delete it")
        for stale in self.root.rglob(".*.tmp-*"):  # safe: the lock keeps every other writer out
            stale.unlink()
        indexed = _read_lines(self.root / INDEX)
        self.entries = {k: e for k, e in sorted(indexed.items()) if self._intact(e)}
        self.dropped = set(indexed) - set(self.entries)  # cut or damaged: to be prepared again
        skipped = [r for k, r in sorted(_read_lines(self.root / SKIPPED).items()) if k not in self.entries]
        _write_lines(self.root / INDEX, list(self.entries.values()))
        _write_lines(self.root / SKIPPED, skipped)
        if meta is None:
            atomic_write_text(self.root / META, json.dumps(asdict(self.spec), indent=1))

    def _intact(self, entry: dict) -> bool:
        """Whether an indexed clip's files are there and whole: the sizes the index recorded (a cut
        file), and with `verify` their sha256, or for entries indexed without them a full read."""
        for kind in _KINDS:
            path = self.root / kind / f"{entry['file']}.npy"
            size, digest = entry.get("files", {}).get(kind, (None, None))
            if not path.is_file() or size is not None and path.stat().st_size != size:
                return False
            if self.verify and not (sha256(path) == digest if digest else _loads(path)):
                return False
        return True

    def commit(self, key: str, name: str, flags: dict) -> None:
        """Record a clip whose files `write_clip_files` has written."""
        entry = {"key": key, "file": name, **flags}
        self._append(INDEX, entry)
        self.entries[key] = entry

    def skip(self, key: str, reason: str) -> None:
        """Record a clip left out, so that opening a split does not try it again."""
        self._append(SKIPPED, {"key": key, "reason": reason})

    def _append(self, name: str, record: dict) -> None:
        with open(self.root / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _loads(path: Path) -> bool:
    try:
        np.load(path)
    except (OSError, ValueError):
        return False
    return True


def no_audio_note(name: str, clips: ClipSet) -> str | None:
    """The line that tells how many of a split's clips have no audio track; None when all have one."""
    count = len(clips.no_audio)
    if not count:
        return None
    return (f"{name}: {count} of {len(clips)} clips have no audio track: the model gets its no-audio "
            f"input for them")
