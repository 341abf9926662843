"""`dfer prepare`: decode, crop faces and compute the audio input once, into a clip cache (cache.py).

DFEW ships aligned 224 px face frames: they are resized to S with PIL's bilinear filter, the
reference's own test transform, so the cached pixels are exactly what its loader produced.
MAFW and folder data sets are decoded from video at up to `max_frames` times spread over the clip,
and cropped by dfer's face detector: MAFW with the union-of-faces box its authors used (a central
square where no face is found), folders with the main face (a clip without one is skipped).
The audio input is the clip's track from its start, as the model hears it (5.12 s).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from . import audio, faces, media, store
from .cache import META, CacheSpec, CacheWriter, ClipSet, ClipStore, write_clip_files
from .clips import segment_indices, segment_times
from .datasets import Dataset, Sample
from .errors import DferError, MediaError, UsageError
from .progress import progress_bar

# The model hears 512 fbank frames of 25 ms every 10 ms, the first 5.135 s: decoding further is waste
# (the fbank removes each frame's own mean, so the rest of the track cannot change those frames).
_AUDIO_SPAN_S = 5.2
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# A worker process takes 2-3 s to start (torch imports), the time of about 8 clips with
# face detection: with fewer clips per worker, fewer workers (or this process) finish sooner.
_CLIPS_PER_WORKER = 8


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 160
    # Frames kept per clip: an odd multiple of 16, so that each of the 16 segments keeps its middle
    # frame (the test-time pick, exactly the reference's) and train-time sampling (a random frame per
    # segment) still has 3 to choose from; few enough that a DFEW fold (11,697 clips) at 160 px is 45 GB.
    max_frames: int = 48
    workers: int = field(default_factory=_default_workers)  # 0: in this process

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
    # With max_frames = 16 * odd k, every k-th kept frame from the (k // 2)-th is exactly one of the
    # reference's 16 test-time frames.
    keep = range(len(files)) if len(files) <= config.max_frames else segment_indices(len(files), config.max_frames)
    frames = np.stack([_load_image(files[i], config.size) for i in keep])
    return frames, {"source_frames": len(files)}


def _detected_faces(video: Path, policy: str, config: PrepareConfig) -> tuple[np.ndarray, dict]:
    info = media.probe(video)
    source = round(info.duration * info.frame_rate) if info.frame_rate > 0 else config.max_frames
    count = max(1, min(config.max_frames, source))
    times = segment_times(info.start_time, info.start_time + info.duration, count)
    frames, _ = media.read_frames(video, times)
    union = policy == "union"
    # MAFW's rule keeps every frame, with or without a face, so presence is not required there.
    face_config = faces.FaceConfig(policy="union", min_presence=0.0) if union else faces.FaceConfig()
    track = faces.faces_for_clip(frames, faces.process_detector(faces.FaceConfig()), face_config, config.size)
    crops = track.crops
    if crops is None and not union:
        raise MediaError(video, f"no face found (seen in {track.found} of {track.total} sampled frames)")
    if crops is None:  # no face in any frame: MAFW's central square throughout
        h, w = frames.shape[1:3]
        crops = faces.crop_faces(frames, [faces.union_box([], (w, h))] * len(frames), config.size)
    return crops, {"source_frames": source, "faces_found": track.found, "faces_total": track.total}


def prepare_clip(sample: Sample, policy: str, config: PrepareConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """One sample's face frames (n, S, S, 3) uint8, its audio model input (512, 128) float32, and
    flags for the index. MediaError when its media are unreadable or (folder data sets) faceless."""
    if sample.frames_dir is not None:
        frames, flags = _aligned_faces(sample.frames_dir, config)
    else:
        frames, flags = _detected_faces(sample.video, policy, config)
    wave, rate = None, 0
    if sample.video is not None:
        try:
            wave, rate = media.read_audio(sample.video, 0.0, _AUDIO_SPAN_S)
        except MediaError as e:  # the faces are fine: keep the clip, as a clip without sound
            flags["audio_error"] = str(e)
    flags |= {"no_audio": wave is None, "silent": wave is not None and audio.is_silent(wave)}
    return frames, audio.model_input(wave, rate), flags


_Result = tuple[Sample, str | None, dict, str | None]  # sample, file name, flags, why it was skipped


def _prepare_one(sample: Sample, root: Path, policy: str, config: PrepareConfig) -> _Result:
    """Runs in a worker: the arrays are written there, only the index line travels back."""
    try:
        frames, model_audio, flags = prepare_clip(sample, policy, config)
    except DferError as e:
        return sample, None, {}, str(e)
    return sample, write_clip_files(root, sample.key, frames, model_audio), flags, None


def _results(todo: Sequence[Sample], root: Path, policy: str, config: PrepareConfig) -> Iterator[_Result]:
    workers = min(config.workers, len(todo) // _CLIPS_PER_WORKER)
    if workers == 0:
        yield from (_prepare_one(s, root, policy, config) for s in todo)
        return
    # spawn: torch holds threads that a forked child would inherit in a broken state.
    with _one_thread_each(), ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        queue, pending = iter(todo), set()
        try:
            while True:
                # A bounded window (not pool.map) keeps memory flat whatever the split's size.
                for s in itertools.islice(queue, 4 * workers - len(pending)):
                    pending.add(pool.submit(_prepare_one, s, root, policy, config))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BrokenProcessPool:
            raise DferError(f"{root}: a worker process died (out of memory?); run again to continue, "
                            f"finished clips are kept") from None
        finally:
            for future in pending:
                future.cancel()


@contextmanager
def _one_thread_each() -> Iterator[None]:
    """Worker processes inherit these while the pool lives: a BLAS pool of one thread per process,
    as each worker is one of `workers` parallel jobs (measured: 20% faster with 2 workers on 2 cores,
    and oversubscription only grows with the core count)."""
    names = [n for n in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if n not in os.environ]
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)


def default_cache(dataset: Dataset, size: int) -> Path:
    """Where train and evaluate look for a data set's clips at a face size: one cache for all folds."""
    return store.home() / "cache" / f"{dataset.cache_name}-{size}"


def prepare(dataset: Dataset, split: str, out: Path, config: PrepareConfig | None = None,
            progress: bool = True) -> PrepareSummary:
    """Add one split's clips to the cache in `out`, continuing where an earlier run stopped; clips
    that earlier runs left out are tried again."""
    config = config or PrepareConfig()
    samples = dataset.samples(split)
    spec = CacheSpec(dataset.cache_name, config.size, config.max_frames)
    policy = getattr(dataset, "face_policy", "main")
    with CacheWriter(out, spec) as writer:
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
                          tuple(audio_errors))


def open_split(dataset: Dataset, split: str, root: Path, size: int) -> ClipSet:
    """A split's prepared clips, preparing first what the cache lacks (at the size the cache was
    started with, or `size` for a new one). Clips left out before are not tried again here."""
    labels = {s.key: s.label for s in dataset.samples(split)}
    clips = ClipStore(root).split(labels) if (root / META).is_file() else None
    if clips is None or not clips.complete:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError(f"{root}: the cache lacks clips of {dataset.name} {split}: prepare it before "
                             f"launching torchrun (dfer prepare, or one single-process run)")
        config = PrepareConfig(clips.spec.size, clips.spec.max_frames) if clips else PrepareConfig(size)
        prepare(dataset, split, root, config)
        clips = ClipStore(root).split(labels)
    return clips
