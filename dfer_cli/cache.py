"""The prepared clip cache that training and evaluation read instead of video (`dfer prepare` fills it).

One folder per data-set split:
    meta.json              what it holds (data set, split, face size, frame cap), whether it is complete
    index.jsonl            one line per finished clip: key, label, file name, frame counts, flags
    frames/<name>.npy      uint8 (n, S, S, 3) RGB face crops, n <= max_frames
    audio/<name>.npy       float32 (512, 128): the audio model input, exactly as the model takes it

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

FORMAT = 1
META = "meta.json"
INDEX = "index.jsonl"
_LOCK = ".lock"
_KINDS = ("frames", "audio")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class CacheSpec:
    """What a cache was prepared for; resuming or reusing it with another spec is refused."""

    dataset: str  # the adapter's name, e.g. "DFEW fold 1": another fold must not land in this cache
    split: str
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


def _read_index(root: Path) -> list[dict]:
    """The committed entries, sorted by key so that a clip's position (which seeds its training
    draws) does not depend on the order in which parallel workers finished."""
    path = root / INDEX
    entries: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # the line a kill cut short: that clip is simply redone
                continue
            entries[entry["key"]] = entry
    return [entries[k] for k in sorted(entries)]


def _spec_mismatch(meta: dict, spec: CacheSpec) -> str | None:
    held = {k: meta.get(k) for k in asdict(spec)}
    wanted = asdict(spec)
    if held == wanted:
        return None
    diff = ", ".join(f"{k} {held[k]!r} (asked {wanted[k]!r})" for k in wanted if held[k] != wanted[k])
    return f"prepared with {diff}"


class ClipCache:
    """Read side of one split's cache."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta = _read_meta(self.root)
        if meta is None:
            raise DferError(f"{self.root}: not a prepared clip cache (no {META}); run `dfer prepare`")
        if meta.get("format") != FORMAT:
            raise DferError(f"{self.root / META}: cache format {meta.get('format')}, this dfer reads {FORMAT}; "
                            f"delete the folder and run `dfer prepare` again")
        self.spec = CacheSpec(**{f.name: meta[f.name] for f in fields(CacheSpec)})
        self.complete: bool = meta.get("complete", False)
        self.skipped: list[str] = meta.get("skipped", [])
        self.entries = _read_index(self.root)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def keys(self) -> list[str]:
        return [e["key"] for e in self.entries]

    @property
    def labels(self) -> np.ndarray:
        return np.array([e["label"] for e in self.entries], dtype=np.int64)

    def read(self, i: int) -> CachedClip:
        e = self.entries[i]
        try:
            frames = np.load(self.root / "frames" / f"{e['file']}.npy", mmap_mode="r")
            audio = np.load(self.root / "audio" / f"{e['file']}.npy")
        except (OSError, ValueError) as err:
            raise DferError(f"{self.root}: clip {e['key']} is unreadable ({err}); "
                            f"rerun `dfer prepare` to repair the cache") from None
        return CachedClip(e["key"], e["label"], frames, audio)


class CacheWriter:
    """The one writer of a split's cache (`dfer prepare`). Opening it takes a lock, clears what a
    killed run left (temporary files, a cut index line, entries whose files are gone) and checks that
    the cache was prepared for the same spec; `commit` records finished clips; `finish` marks it
    complete, drops entries that are no longer in the split and deletes unreferenced files."""

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
            raise DferError(f"{self.root}: this cache was {reason}; use another --out or delete it")
        for stale in self.root.rglob(".*.tmp-*"):  # safe: the lock keeps every other writer out
            stale.unlink()
        entries = [e for e in _read_index(self.root) if all(
            (self.root / kind / f"{e['file']}.npy").is_file() for kind in _KINDS)]
        self._rewrite(entries, complete=False, skipped=[])

    def _rewrite(self, entries: list[dict], complete: bool, skipped: list[str]) -> None:
        self.entries = {e["key"]: e for e in entries}
        atomic_write_text(self.root / INDEX, "".join(json.dumps(e) + "\n" for e in entries))
        atomic_write_text(self.root / META, json.dumps(
            {**asdict(self.spec), "complete": complete, "clips": len(entries), "skipped": skipped}, indent=1))

    def commit(self, key: str, label: int, name: str, flags: dict) -> None:
        """Record a clip whose files `write_clip_files` has written."""
        entry = {"key": key, "label": int(label), "file": name, **flags}
        with open(self.root / INDEX, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.entries[key] = entry

    def finish(self, labels: dict[str, int], skipped: list[str]) -> None:
        """Mark the cache complete for a split holding exactly `labels` (key -> label): entries of
        clips no longer in it are dropped (a changed split must not leak clips), labels refreshed."""
        kept = [{**e, "label": labels[k]} for k, e in sorted(self.entries.items()) if k in labels]
        self._rewrite(kept, complete=True, skipped=skipped)
        names = {f"{e['file']}.npy" for e in kept}
        for kind in _KINDS:
            for path in (self.root / kind).glob("*.npy"):
                if path.name not in names:
                    path.unlink()

    def close(self) -> None:
        self._lock.close()  # closing releases the lock

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CacheDataset(torch.utils.data.Dataset):
    """(video (16, 3, S, S) float32 in [0, 1], audio (1, 512, 128) float32, label) from a cache.

    Test time: the frame at `position` of each of 16 segments (0.5: the reference's middle frame,
    which `dfer prepare` always keeps), resized to S when the cache is larger (bilinear, antialiased).
    Train time (spec section 5): a random frame per segment, then one draw shared by all 16 frames:
    brightness x U[0.5, 1.5], the reference's random sized crop (area 0.08-1, aspect U[3/4, 4/3],
    sides swapped with p = 0.5; the whole frame after 10 misses) resized to S x S, horizontal flip
    with p = 0.5. Draws are seeded by (seed, epoch, index): runs repeat whatever the worker count.
    """

    def __init__(self, cache: ClipCache, train: bool, frames: int = 16, size: int = 160, seed: int = 1,
                 position: float = 0.5) -> None:
        if not cache.complete:
            raise DferError(f"{cache.root}: the cache is incomplete (an interrupted `dfer prepare`?); "
                            f"run `dfer prepare` again to finish it")
        if not len(cache):
            raise DferError(f"{cache.root}: the cache holds no clips")
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
            video = _to_model_input(_resize(_frames(clip, segment_indices(n, self.frames, self.position)), self.size))
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
    return _to_model_input(_resize(video, size), brightness, flip=rng.random() < 0.5)


def _resize(video: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, 3, h, w) -> (T, 3, size, size), bilinear, antialiased when shrinking as PIL does."""
    if video.shape[-2:] == (size, size):
        return video
    return F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _to_model_input(video: torch.Tensor, brightness: float = 1.0, flip: bool = False) -> torch.Tensor:
    """uint8 (T, 3, S, S) of any layout -> contiguous float (T, 3, S, S) in [0, 1]. The layout change
    and the flip are one numpy copy of the uint8 pixels, 4 times less memory than floats. Brightness
    is applied here, after the resize, where the reference applied it first: the two differ only
    where a pixel is pushed past 255."""
    pixels = video.permute(0, 2, 3, 1).numpy()
    if flip:
        pixels = pixels[:, :, ::-1]
    video = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).float()
    return video.mul_(brightness / 255).clamp_(0, 1) if brightness != 1.0 else video.div_(255)


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
