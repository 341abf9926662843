"""The prepared clip cache that training and evaluation read instead of video (`dfer prepare` fills it).

One folder per data set and face size, shared by all its folds and splits (a DFEW fold's train and
test sets are the whole data set again, so per-fold caches would hold every clip five times):
    meta.json              what it holds: data set, face size, frame cap
    index.jsonl            one line per finished clip: key, file name, frame counts, flags
    skipped.jsonl          clips left out (no face, unreadable media), with the reason
    frames/<name>.npy      uint8 (n, S, S, 3) RGB face crops, n <= max_frames
    audio/<name>.npy       float32 (512, 128): the audio model input, exactly as the model takes it

A split is a view (`ClipSet`): the keys and labels the data-set adapter gives for it, looked up here.
Labels are never cached, so a changed label file or fold never reads stale ones.

Why plain .npy files: they are read memory-mapped, so a loader taking 16 of a clip's n frames copies
only those 16 (no decoding at all, where per-clip JPEG folders cost 16 file opens and 16 decodes),
and they store pixels losslessly, so the test-time input is bit-identical to the reference's.
Why one file per clip and an append-only index: every file is written atomically and a clip's index
line is appended only after both its files are in place, so a killed run leaves at worst some
unindexed files (redone and overwritten on resume) and, rarely, a cut last index line (ignored).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_path, atomic_write_text
from .clips import random_segment_indices, segment_indices
from .errors import DferError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two concurrent writers are then the user's business
    fcntl = None

FORMAT = 2  # 1: one cache per fold and split
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


def file_name(key: str) -> str:
    """A file name for a clip key: the key itself when it is a plain name (DFEW ids, MAFW clips),
    else a readable version of it plus a hash (folder keys are relative paths)."""
    if _SAFE_NAME.fullmatch(key):
        return key
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", key).lstrip("._-")[-80:]
    return f"{readable}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def write_clip_files(root: Path, key: str, frames: np.ndarray, audio: np.ndarray) -> str:
    """Write one clip's arrays atomically (any process may call this); returns their file name.
    The clip joins the cache only when the writer commits it."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"{key}: frames must be uint8 (n, S, S, 3), got {frames.dtype} {frames.shape}")
    name = file_name(key)
    for kind, array in zip(_KINDS, (frames, audio.astype(np.float32)), strict=True):
        with atomic_path(root / kind / f"{name}.npy") as tmp, open(tmp, "xb") as f:
            np.save(f, np.ascontiguousarray(array))
    return name


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
            raise DferError(f"{self.root}: clip {key} is unreadable ({err}); "
                            f"rerun `dfer prepare` to repair the cache") from None
        return CachedClip(key, label, frames, audio)


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

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, i: int) -> CachedClip:
        return self.store.read(self.keys[i], int(self.labels[i]))


class CacheWriter:
    """The one writer of a cache (`dfer prepare`). Opening it takes a lock, clears what a killed run
    left (temporary files, a cut index line, entries whose files are gone) and checks that the cache
    was prepared for the same spec; `commit` records finished clips, `skip` those left out."""

    def __init__(self, root: str | Path, spec: CacheSpec) -> None:
        self.root = Path(root)
        self.spec = spec
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / _LOCK, "a")  # noqa: SIM115 - held until close()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        if fcntl is not None:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DferError(f"{self.root}: another `dfer prepare` is writing this cache") from None
        meta = _read_meta(self.root)
        if meta is not None and (reason := _spec_mismatch(meta, self.spec)):
            raise DferError(f"{self.root}: this cache was {reason}; use another --cache / --out, or delete it")
        for stale in self.root.rglob(".*.tmp-*"):  # safe: the lock keeps every other writer out
            stale.unlink()
        self.entries = {k: e for k, e in sorted(_read_lines(self.root / INDEX).items()) if all(
            (self.root / kind / f"{e['file']}.npy").is_file() for kind in _KINDS)}
        skipped = [r for k, r in sorted(_read_lines(self.root / SKIPPED).items()) if k not in self.entries]
        _write_lines(self.root / INDEX, list(self.entries.values()))
        _write_lines(self.root / SKIPPED, skipped)
        if meta is None:
            atomic_write_text(self.root / META, json.dumps(asdict(self.spec), indent=1))

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
        self._lock.close()  # closing releases the lock

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CacheDataset(torch.utils.data.Dataset):
    """(video (16, 3, S, S) uint8 pixels, audio (1, 512, 128) float32, label) from a cache.

    The video stays uint8 all the way to the model, which scales it to [0, 1] on its device: a loader
    worker then copies, the main process pins and the GPU receives 4 times fewer bytes than floats.

    Test time: the frame at `position` of each of 16 segments (0.5: the reference's middle frame,
    which `dfer prepare` always keeps), resized to S when the cache is larger (bilinear, antialiased).
    Train time (spec section 5): a random frame per segment, then one draw shared by all 16 frames:
    brightness x U[0.5, 1.5], the reference's random sized crop (area 0.08-1, aspect U[3/4, 4/3],
    sides swapped with p = 0.5; the whole frame after 10 misses) resized to S x S, horizontal flip
    with p = 0.5. Draws are seeded by (seed, epoch, index): runs repeat whatever the worker count.
    """

    def __init__(self, cache: ClipSet, train: bool, frames: int = 16, size: int = 160, seed: int = 1,
                 position: float = 0.5) -> None:
        if not cache.complete:
            raise DferError(f"{cache.root}: {len(cache.missing)} clips of the split are not "
                            f"prepared yet (e.g. {cache.missing[0]}); run `dfer prepare` to finish it")
        if not len(cache):
            raise DferError(f"{cache.root}: the cache holds no clips of this split")
        if cache.spec.size < size:
            raise DferError(f"{cache.root}: faces cached at {cache.spec.size} px, the model takes {size}; "
                            f"prepare a cache with --size {size}")
        self.cache, self.train, self.frames, self.size = cache, train, frames, size
        self.seed, self.position, self.epoch = seed, position, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        clip = self.cache.read(i)
        n = len(clip.frames)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            video = _augment(_frames(clip, random_segment_indices(n, self.frames, rng)), self.size, rng)
        else:
            video = _pixels(_resize(_frames(clip, segment_indices(n, self.frames, self.position)), self.size))
        return video, torch.from_numpy(clip.audio)[None], clip.label


def _frames(clip: CachedClip, picks: np.ndarray) -> torch.Tensor:
    """The picked frames, uint8 (T, 3, H, W) over (T, H, W, 3) memory: the layout on which torch's
    uint8 resize is fastest (it matches PIL's bilinear filter, the reference's, to within 1 level)."""
    return torch.from_numpy(np.ascontiguousarray(clip.frames[picks])).permute(0, 3, 1, 2)


def _augment(video: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    brightness = rng.uniform(0.5, 1.5)
    box = _crop_box(*video.shape[-2:], rng)
    if box is not None:
        top, left, ch, cw = box
        video = video[..., top:top + ch, left:left + cw]
    return _pixels(_resize(video, size), brightness, flip=rng.random() < 0.5)


def _resize(video: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, 3, h, w) -> (T, 3, size, size), bilinear, antialiased when shrinking as PIL does."""
    if video.shape[-2:] == (size, size):
        return video
    return F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _pixels(video: torch.Tensor, brightness: float = 1.0, flip: bool = False) -> torch.Tensor:
    """uint8 (T, 3, S, S) of any layout -> contiguous uint8 (T, 3, S, S). The layout change and the
    flip are one numpy copy. Brightness scales each level and rounds it, as the reference's 8-bit
    image library does; it is applied here, after the resize, where the reference applied it first:
    the two orders differ by about one level."""
    pixels = video.permute(0, 2, 3, 1).numpy()
    if flip:
        pixels = pixels[:, :, ::-1]
    video = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
    if brightness != 1.0:
        video = video.float().mul_(brightness).round_().clamp_(0, 255).to(torch.uint8)
    return video


def _crop_box(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """The reference's GroupRandomSizedCrop draw: (top, left, height, width), or None after 10 misses."""
    for _ in range(10):
        area = rng.uniform(0.08, 1.0) * h * w
        aspect = rng.uniform(3 / 4, 4 / 3)
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if rng.random() < 0.5:
            cw, ch = ch, cw
        if cw <= w and ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    return None
