"""The clips as training and evaluation read them from the cache: the split made ready, a torch Dataset
with the test-time view and the train-time augmentations, and the loader's worker count."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dfer_cli.clips.plan import frame_picks, random_segment_indices
from dfer_cli.errors import DferError
from dfer_cli.labels import TIME_ORDER
from dfer_cli.runtime.pool import worker_count
from dfer_cli.train import prepare
from dfer_cli.train.cache import CachedClip, ClipSet, no_audio_note, read_split
from dfer_cli.train.datasets import Dataset


def prepare_and_read(dataset: Dataset, split: str, root: Path, size: int,
                     log: Callable[[str], None]) -> ClipSet:
    """A split's clips for training or evaluation: what the cache in `root` lacks is prepared first (at
    `size` for a new cache), then the split is read; `log` hears how many clips have no audio track."""
    prepare.prepare_missing(dataset, split, root, size)
    clips = read_split(root, dataset, split)
    if note := no_audio_note(f"{dataset.name} {split}", clips):
        log(note)
    return clips


def loader_workers() -> int:
    """Default data-loading processes: one core stays with the process that runs the model, at most 4
    (dfer's fixed count before the default followed the cores), and with 1 or 2 cores none: the clips
    are read in the main process, as one worker beside a model that uses every core only moves work."""
    return worker_count(cap=4, least=2)


class CacheDataset(torch.utils.data.Dataset):
    """(video (16, 3, S, S) uint8 pixels, audio (1, 512, 128) float32, label) from a cache.

    The video stays uint8 all the way to the model, which scales it to [0, 1] on its device: a loader
    worker then copies, the main process pins and the GPU receives 4 times fewer bytes than floats.

    Test time: the frames `clips.frame_picks` gives for the clip's own frame count (the frame at
    `position` of each of 16 segments, 0.5 being the reference's middle frame), fed in `frame_order`,
    found among those the cache kept; resized to S when the cache is larger (bilinear, antialiased).
    Train time (the reference's augmentations): a random frame per segment, then one draw shared by all 16 frames:
    brightness x U[0.5, 1.5], the reference's random sized crop (area 0.08-1, aspect U[3/4, 4/3],
    sides swapped with p = 0.5; the whole frame after 10 misses) resized to S x S, horizontal flip
    with p = 0.5. Draws are seeded by (seed, epoch, index): runs repeat whatever the worker count.
    """

    def __init__(self, cache: ClipSet, train: bool, frames: int = 16, size: int = 160, seed: int = 1,
                 position: float = 0.5, frame_order: str = TIME_ORDER) -> None:
        if not cache.complete:
            raise DferError(f"{cache.root}: {len(cache.missing)} clips of the split are not "
                            f"prepared yet (e.g. {cache.missing[0]}); run `dfer prepare` to finish it")
        if not len(cache):
            raise DferError(f"{cache.root}: the cache holds no clips of this split")
        if cache.spec.size < size:
            raise DferError(f"{cache.root}: faces cached at {cache.spec.size} px, the model takes {size}; "
                            f"prepare a cache with --size {size}")
        self.cache, self.train, self.frames, self.size = cache, train, frames, size
        self.seed, self.position, self.epoch, self.frame_order = seed, position, 0, frame_order

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
            video = _pixels(_resize(_frames(clip, self._test_picks(clip)), self.size))
        return video, torch.from_numpy(clip.audio)[None], clip.label

    def _test_picks(self, clip: CachedClip) -> np.ndarray:
        """Where the test-time frames of `clip` sit among its kept frames, in the order fed."""
        wanted = frame_picks(clip.source_frames, self.position, self.frames, self.frame_order)
        at = np.minimum(np.searchsorted(clip.numbers, wanted), len(clip.numbers) - 1)
        if not np.array_equal(clip.numbers[at], wanted):
            raise DferError(f"{self.cache.root}: clip {clip.key} keeps no frames for {self.frame_order}-order "
                            f"picks at position {self.position}: its data set is not prepared for that order")
        return at


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
