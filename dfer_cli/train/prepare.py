"""`dfer prepare`: decode, crop faces and compute the audio input once, into the clip cache."""

# DFEW ships aligned 224 px face frames: they are resized to S with PIL's bilinear filter, the
# reference's own test transform, so the cached pixels are exactly what its loader produced.
# MAFW and folder data sets are decoded from video (only the frames kept, found by their timestamps),
# and cropped by dfer's face detector: MAFW with the union-of-faces box its authors used (a central
# square where no face is found), folders with the main face (a clip without one is skipped).
# The audio input is the clip's track from its start, as the model hears it (5.12 s).
# A clip longer than `max_frames` keeps the frames that the test-time views pick (clips.kept_frames),
# in each frame order its data set is evaluated in: time, and for MAFW the reference's file-name order.

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from dfer_cli import paths
from dfer_cli.clips.flags import file_flags
from dfer_cli.clips.load import load_clips, read_audio
from dfer_cli.clips.plan import ClipPlan, kept_frames
from dfer_cli.errors import DferError, MediaError, UsageError
from dfer_cli.faces import box, crop, detect
from dfer_cli.faces.config import FaceConfig
from dfer_cli.labels import TIME_ORDER
from dfer_cli.media import decode, fbank
from dfer_cli.progress import progress_bar
from dfer_cli.runtime.distributed import world_size
from dfer_cli.runtime.pool import bounded_map, clamp_workers, worker_count
from dfer_cli.train.cache import META, CacheSpec, CacheWriter, read_split, write_clip_files
from dfer_cli.train.datasets import Dataset, Sample

_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# A worker process takes 2-3 s to start (torch imports), the time of about 8 clips with
# face detection: with fewer clips per worker, fewer workers (or this process) finish sooner.
_CLIPS_PER_WORKER = 8


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 160
    # Frames kept per clip (clips.kept_frames): all of a clip up to this many, else the 48 that the
    # test-time views pick (1/4, 1/2 and 3/4 of each segment), among which train-time sampling picks
    # one per segment; few enough that a DFEW fold (11,697 clips) at 160 px is 45 GB. An odd multiple
    # of 16: above 48, the middles of that many equal spans are kept too.
    max_frames: int = 48
    # 0: in this process; every core may take a worker, as this process only writes what they return.
    workers: int = field(default_factory=lambda: worker_count(reserve=0))
    frame_orders: tuple[str, ...] = (TIME_ORDER,)  # the orders whose test-time picks are kept
    verify: bool = False  # read every cached file to check its sha256 (else its size), and rebuild bad ones

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 16:
            raise DferError(f"face size must be a multiple of 16 px (112, 160 or 224), got {self.size}")
        if self.max_frames % 32 != 16:
            raise DferError(f"max frames must be an odd multiple of 16 (16, 48, 80...), got {self.max_frames}")
        if self.workers < 0:
            raise DferError(f"workers must be 0 or more, got {self.workers}")


@dataclass(frozen=True)
class PrepareSummary:
    root: Path
    prepared: int  # clips added by this run
    cached: int  # clips found already done
    skipped: tuple[str, ...]  # why each left-out clip was (no face, unreadable media), naming its file
    audio_errors: tuple[str, ...]  # clips kept with the no-audio input as their sound was unreadable
    repaired: int = 0  # clips whose cached files were cut or damaged, prepared again (among `prepared`)


def _frame_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise MediaError(folder, "face frame folder not found")
    files = [p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise MediaError(folder, "no face frames (.jpg or .png) in it")
    # In frame order: 9.jpg before 10.jpg; DFEW's zero-padded names sort the same either way.
    return sorted(files, key=lambda p: (len(p.stem), p.stem))


def _load_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError) as e:
        raise MediaError(path, f"unreadable image ({e})") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb)


def _aligned_faces(folder: Path, config: PrepareConfig) -> tuple[np.ndarray, dict]:
    files = _frame_files(folder)
    keep = kept_frames(len(files), config.max_frames, config.frame_orders)
    frames = np.stack([_load_image(files[i], config.size) for i in keep])
    return frames, {"source_frames": len(files), "frame_numbers": keep.tolist()}


def _detected_faces(video: Path, policy: str, config: PrepareConfig,
                    audio_errors: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    info = decode.probe(video, list_frames_up_to=math.inf)
    times = info.frame_times
    if times is None:  # packets without timestamps: frames assumed evenly spaced at the frame rate
        source = max(1, round(info.duration * info.frame_rate)) if info.frame_rate > 0 else config.max_frames
        times = info.start_time + info.duration / source * (np.arange(source) + 0.5)
    keep = kept_frames(len(times), config.max_frames, config.frame_orders)
    # The audio the model hears: the track from its start, as in training.
    clip_plan = ClipPlan(0, info.start_time, info.start_time + info.duration, times[keep], 0.0, fbank.HEARD_S)
    union = policy == "union"
    # MAFW's rule keeps every frame, with or without a face, so presence is not required there.
    face_config = FaceConfig(policy="union", min_presence=0.0) if union else FaceConfig()
    detector = detect.process_detector(FaceConfig())
    frames: list[np.ndarray] = []
    (clip,) = load_clips(str(video), info, [clip_plan], face_config, config.size, detector, audio_errors,
                         keep_frames=frames.append)
    crops = clip.track.crops
    if crops is None and not union:
        raise MediaError(video, f"no face found (seen in {clip.track.found} of {clip.track.total} sampled frames)")
    if crops is None:  # no face in any frame: MAFW's central square throughout
        h, w = frames[0].shape[1:3]
        crops = crop.crop_faces(frames[0], [box.union_box([], (w, h))] * len(frames[0]), config.size)
    flags = file_flags(info, [clip], audio_errors) | {"source_frames": len(times), "frame_numbers": keep.tolist()}
    return crops, clip.fbank, flags


def prepare_clip(sample: Sample, policy: str, config: PrepareConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """One sample's face frames (n, S, S, 3) uint8, its audio model input (512, 128) float32, and
    flags for the index (the front end's vocabulary). MediaError when its media are unreadable or
    (folder data sets) faceless; an unreadable sound keeps the clip, with the no-audio input."""
    audio_errors: list[str] = []
    if sample.frames_dir is None:
        return _detected_faces(sample.video, policy, config, audio_errors)
    frames, flags = _aligned_faces(sample.frames_dir, config)
    wave, rate = None, 0
    if sample.video is not None:
        wave, rate = read_audio(sample.video, 0.0, fbank.HEARD_S, audio_errors)
    flags |= {"no_audio": wave is None, "silent_audio": wave is not None and fbank.is_silent(wave)}
    if audio_errors:
        flags["audio_error"] = audio_errors[0]
    return frames, fbank.model_input(wave, rate), flags


_Result = tuple[Sample, str | None, dict, str | None]  # sample, file name, flags, why it was skipped


def _prepare_one(sample: Sample, root: Path, policy: str, config: PrepareConfig) -> _Result:
    """Runs in a worker: the arrays are written there, only the index line travels back."""
    try:
        frames, model_audio, flags = prepare_clip(sample, policy, config)
    except DferError as e:
        return sample, None, {}, str(e)
    name, checks = write_clip_files(root, sample.key, frames, model_audio)
    return sample, name, flags | {"files": checks}, None


def _lost(sample: Sample, reason: str) -> _Result:
    return sample, None, {}, reason


def _results(todo: Sequence[Sample], root: Path, policy: str, config: PrepareConfig) -> Iterator[_Result]:
    workers = min(clamp_workers(config.workers), len(todo) // _CLIPS_PER_WORKER)
    try:
        yield from bounded_map(partial(_prepare_one, root=root, policy=policy, config=config), todo, workers,
                               ahead=4, ordered=False, lost=_lost)
    except BrokenProcessPool:
        raise DferError(f"{root}: a worker process died (out of memory?); run again to continue, "
                        f"finished clips are kept") from None


def default_cache(dataset: Dataset, size: int) -> Path:
    """Where train and evaluate look for a data set's clips at a face size: one cache for all folds."""
    return paths.cache_dir() / f"{dataset.cache_name}-{size}"


def prepare(dataset: Dataset, split: str, out: Path, config: PrepareConfig | None = None,
            progress: bool = True) -> PrepareSummary:
    """Add one split's clips to the cache in `out`, continuing where an earlier run stopped; clips
    that earlier runs left out are tried again."""
    config = replace(config or PrepareConfig(), frame_orders=getattr(dataset, "frame_orders", (TIME_ORDER,)))
    samples = dataset.samples(split)
    spec = CacheSpec(dataset.cache_name, config.size, config.max_frames)
    policy = getattr(dataset, "face_policy", "main")
    with CacheWriter(out, spec, config.verify) as writer:
        todo = [s for s in samples if s.key not in writer.entries]
        skipped: list[str] = []
        audio_errors: list[str] = []
        label = f"{dataset.name} {split}"
        with progress_bar(label, len(samples), len(samples) - len(todo), progress) as advance, \
                closing(_results(todo, out, policy, config)) as results:
            for sample, name, flags, reason in results:
                if name is None:
                    writer.skip(sample.key, reason)
                    skipped.append(reason)
                else:
                    writer.commit(sample.key, name, flags)
                    if "audio_error" in flags:
                        audio_errors.append(flags["audio_error"])
                advance()
    return PrepareSummary(out, len(todo) - len(skipped), len(samples) - len(todo), tuple(skipped),
                          tuple(audio_errors), len(writer.dropped & {s.key for s in samples}))


def prepare_missing(dataset: Dataset, split: str, root: Path, size: int) -> PrepareSummary | None:
    """Prepare what the cache in `root` lacks of a split, at the size the cache was started with (or
    `size` for a new one); None when it lacks nothing. Clips left out before are not tried again.
    Under torchrun a missing clip is an error: one process alone must write the cache."""
    clips = read_split(root, dataset, split) if (root / META).is_file() else None
    if clips is not None and clips.complete:
        return None
    if world_size() > 1:
        raise UsageError(f"{root}: the cache lacks clips of {dataset.name} {split}: prepare it before "
                         f"launching torchrun (dfer prepare, or one single-process run)")
    config = PrepareConfig(clips.spec.size, clips.spec.max_frames) if clips else PrepareConfig(size)
    return prepare(dataset, split, root, config)
