"""The prepared clip cache that training and evaluation read instead of video.

One folder per data-set split:
    index.jsonl            one line per finished clip: key, label, frame count, flags
    frames/<key>.npy       uint8 (n, S, S, 3) face crops, n <= max_frames
    audio/<key>.npy        float16 (512, 128) normalised fbank (the model input; |error| < 1e-3)

Plain .npy files are read memory-mapped, so a loader that takes 16 of n frames touches only those
(no JPEG decoding); each file is written atomically and the index line is appended only after both,
so an interrupted `dfer prepare` leaves no half entry and a rerun continues where it stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_path, atomic_write_text
from .clips import random_segment_indices, segment_indices
from .errors import DferError

INDEX = "index.jsonl"


@dataclass(frozen=True)
class CachedClip:
    key: str
    label: int
    frames: np.ndarray  # (n, S, S, 3) uint8, memory-mapped
    audio: np.ndarray  # (512, 128) float16


def _file_key(key: str) -> str:
    return key.replace("/", "__")


class ClipCache:
    """Read side of one split's cache; `add` is the write side used by `prepare`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.entries: list[dict] = []
        index = self.root / INDEX
        if index.is_file():
            text = index.read_text()
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: its clip is redone
                    continue
                if (self._path("frames", entry["key"])).is_file():
                    self.entries.append(entry)
            if text and not text.endswith("\n"):  # drop the cut line, or the next append would join it
                atomic_write_text(index, "".join(json.dumps(e) + "\n" for e in self.entries))
        self.keys = {e["key"] for e in self.entries}

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{_file_key(key)}.npy"

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> np.ndarray:
        return np.array([e["label"] for e in self.entries], dtype=np.int64)

    def read(self, i: int) -> CachedClip:
        e = self.entries[i]
        return CachedClip(e["key"], e["label"], np.load(self._path("frames", e["key"]), mmap_mode="r"),
                          np.load(self._path("audio", e["key"])))

    def add(self, key: str, label: int, frames: np.ndarray, audio: np.ndarray, flags: dict) -> None:
        for kind, array in (("audio", audio.astype(np.float16)), ("frames", frames)):
            with atomic_path(self._path(kind, key)) as tmp, open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array))
        with open(self.root / INDEX, "a") as f:
            f.write(json.dumps({"key": key, "label": int(label), "frames": len(frames), **flags}) + "\n")
        self.entries.append({"key": key, "label": int(label), "frames": len(frames), **flags})
        self.keys.add(key)


class CacheDataset(torch.utils.data.Dataset):
    """(video (16, 3, S, S) float in [0, 1], audio (1, 512, 128) float, label) from a cache.

    Test time: the frame at `position` of each of 16 segments (0.5: the reference's middle frame).
    Train time: a random frame per segment, then one augmentation draw shared by all 16 frames
    (spec section 6): brightness x U[0.5, 1.5], random resized crop (area 0.08-1, aspect 3/4-4/3)
    back to S x S, horizontal flip with p = 0.5. Draws are seeded by (seed, epoch, index), so runs
    repeat exactly whatever the number of loader workers.
    """

    def __init__(self, cache: ClipCache, train: bool, frames: int = 16, size: int = 160, seed: int = 1,
                 position: float = 0.5) -> None:
        if not len(cache):
            raise DferError(f"{cache.root}: the cache holds no clips (run `dfer prepare`)")
        self.cache, self.train, self.frames, self.size = cache, train, frames, size
        self.seed, self.position, self.epoch = seed, position, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        clip = self.cache.read(i)
        n = len(clip.frames)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        idx = random_segment_indices(n, self.frames, rng) if self.train else \
            segment_indices(n, self.frames, self.position)
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames[idx])).permute(0, 3, 1, 2)
        video = _augment(frames, self.size, rng) if self.train else _resize(frames.float(), self.size)
        return video.div_(255), torch.from_numpy(clip.audio.astype(np.float32))[None], clip.label


def _resize(video: torch.Tensor, size: int) -> torch.Tensor:
    h, w = video.shape[-2:]
    if (h, w) == (size, size):
        return video
    # Antialiasing matters only when shrinking, and costs several times a plain bilinear pass.
    return F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=h > size or w > size)


def _augment(frames: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> float (T, 3, size, size) in [0, 255]; the crop is cut before the
    conversion to float, which is most of the work."""
    brightness = rng.uniform(0.5, 1.5)
    h, w = frames.shape[-2:]
    top, left, ch, cw = 0, 0, h, w
    for _ in range(10):  # torchvision's RandomResizedCrop sampling
        area = h * w * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        tw, th = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < tw <= w and 0 < th <= h:
            top, left, ch, cw = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1)), th, tw
            break
    video = _resize(frames[..., top:top + ch, left:left + cw].float(), size)
    video = video.mul_(brightness).clamp_(0, 255)
    return video.flip(-1) if rng.random() < 0.5 else video
