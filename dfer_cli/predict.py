"""`dfer predict`: media -> faces -> clips -> model -> results.

Worker processes (one face detector each) decode files and crop faces while the main process runs
the model on batches of clips gathered across files. A file that fails becomes an error record;
the batch goes on.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from . import audio, datasets, faces, media
from .clips import ClipConfig, ClipPlan, plan_clips, plan_windows
from .errors import DferError, UsageError
from .inference import softmax_batches
from .results import ClipResult, FileResult

VIDEO_EXTENSIONS = tuple(sorted(datasets.VIDEO_EXTENSIONS))


@dataclass(frozen=True)
class PredictConfig:
    clips: ClipConfig = field(default_factory=ClipConfig)
    face: faces.FaceConfig = field(default_factory=faces.FaceConfig)
    window: float | None = None  # seconds per timeline window; None: `clips.clips` clips per file
    batch_size: int = 8
    workers: int = 0  # 0: decode in the main process


def display_path(path: str | os.PathLike) -> str:
    """A printable name even for file names that are not valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "replace")


def collect_inputs(args: Iterable[str], recursive: bool = True,
                   extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[str]:
    """Files as given, and the video files found under folders. Entries named like videos that are
    not regular files (folders, dangling links) are kept so that they get an error record."""
    found: list[str] = []
    for arg in args:
        if not os.path.isdir(arg):
            found.append(arg)
            continue
        for root, dirs, files in os.walk(arg):
            dirs.sort()
            names = sorted(files) + [d for d in dirs if d.lower().endswith(extensions)]
            found.extend(os.path.join(root, n) for n in names if n.lower().endswith(extensions))
            if not recursive:
                break
            dirs[:] = [d for d in dirs if not d.lower().endswith(extensions) and not d.startswith(".")]
    if not found:
        raise UsageError(f"no video files found in {', '.join(map(display_path, args))} "
                         f"(extensions: {' '.join(extensions)})")
    return found


@dataclass
class PreparedFile:
    """A file after the CPU stages: its record so far and the model inputs of its face clips."""

    result: FileResult
    videos: np.ndarray | None = None  # (K, T, S, S, 3) uint8
    audios: np.ndarray | None = None  # (K, frames, mels) float32
    clip_ids: list[int] = field(default_factory=list)


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(self.timings.get(stage, 0.0) + now - self.last, 4)
        self.last = now


def plan(info: media.VideoInfo, config: PredictConfig) -> list[ClipPlan]:
    if config.window:
        return plan_windows(info.start_time, info.duration, config.window, config.clips)
    return plan_clips(info.start_time, info.duration, config.clips)


def read_clip_media(path: str, info: media.VideoInfo, plans: list[ClipPlan], frames_per_clip: int,
                    group: int = 8) -> Iterator[tuple[ClipPlan, np.ndarray, np.ndarray | None, int]]:
    """Each clip's frames and the audio of its window. Frames are decoded for `group` clips per pass,
    so that a long timeline never holds more than a few hundred full-size frames at once."""
    for g in range(0, len(plans), group):
        chunk = plans[g:g + group]
        frames, _ = media.read_frames(path, np.concatenate([p.frame_times for p in chunk]))
        for k, p in enumerate(chunk):
            wave, rate = media.read_audio(path, p.audio_start, p.audio_end) if info.has_audio else (None, 0)
            yield p, frames[k * frames_per_clip:(k + 1) * frames_per_clip], wave, rate


def prepare_file(path: str, config: PredictConfig, size: int, detector: faces.FaceDetector) -> PreparedFile:
    """Probe, decode the clips' frames and audio spans, find and crop the face, compute the fbank."""
    result = FileResult(path=display_path(path))
    clock = _Clock(result.timings)
    info = media.probe(path)
    result.media = {"duration": round(info.duration, 3), "width": info.width, "height": info.height,
                    "rotation": info.rotation, "frame_rate": round(info.frame_rate or 0.0, 3),
                    "audio_rate": info.audio_rate}
    clock.lap("probe")
    prepared = PreparedFile(result)
    videos, audios, silent = [], [], []
    for p, frames, wave, rate in read_clip_media(path, info, plan(info, config), config.clips.frames):
        clock.lap("decode")
        track = faces.faces_for_clip(frames, detector, config.face, size)
        clock.lap("faces")
        result.clips.append(ClipResult(p.index, round(p.start, 3), round(p.end, 3), round(p.audio_start, 3),
                                       round(p.audio_end, 3), track.found, track.total))
        if track.crops is None:
            continue
        silent.append(wave is not None and audio.is_silent(wave))
        audios.append(audio.model_input(wave, rate))
        videos.append(track.crops)
        prepared.clip_ids.append(p.index)
        clock.lap("fbank")
    found = sum(c.faces_found for c in result.clips)
    result.flags = {"no_audio": not info.has_audio, "silent_audio": bool(silent) and all(silent),
                    "no_face": not videos, "faces_found": found,
                    "frames": sum(c.frames for c in result.clips)}
    if videos:
        prepared.videos, prepared.audios = np.stack(videos), np.stack(audios)
    return prepared


class Classifier:
    """Softmax probabilities for batches of clips, on the chosen device."""

    def __init__(self, model: torch.nn.Module, device: torch.device, batch_size: int,
                 precision: str = "fp32") -> None:
        self.model, self.device, self.batch_size = model.to(device).eval(), device, batch_size
        self.precision = precision

    def __call__(self, videos: np.ndarray, audios: np.ndarray) -> np.ndarray:
        """videos (K, T, S, S, 3) uint8, audios (K, frames, mels) float32 -> (K, C)."""
        batches = ((torch.from_numpy(videos[i:i + self.batch_size]).permute(0, 1, 4, 2, 3),
                    torch.from_numpy(audios[i:i + self.batch_size]).unsqueeze(1))
                   for i in range(0, len(videos), self.batch_size))
        return softmax_batches(self.model, batches, self.device, self.precision)


def _worker_init() -> None:
    torch.set_num_threads(1)


def _worker_prepare(path: str, config: PredictConfig, size: int) -> PreparedFile:
    return _guarded_prepare(path, config, size, faces.process_detector(config.face))


def _guarded_prepare(path: str, config: PredictConfig, size: int, detector) -> PreparedFile:
    try:
        return prepare_file(path, config, size, detector)
    except DferError as e:
        return PreparedFile(FileResult.failed(display_path(path), getattr(e, "reason", str(e))))
    except Exception as e:  # one bad file never sinks the batch; its record carries the reason
        return PreparedFile(FileResult.failed(display_path(path), f"{type(e).__name__}: {e}"))


def _prepared_stream(paths: list[str], config: PredictConfig, size: int) -> Iterator[PreparedFile]:
    """Prepared files in input order; with workers, up to 2 per worker are decoded ahead."""
    if config.workers <= 0:
        for p in paths:
            yield _guarded_prepare(p, config, size, faces.process_detector(config.face))
        return
    ctx = get_context("spawn")
    with ProcessPoolExecutor(config.workers, mp_context=ctx, initializer=_worker_init) as pool:
        pending: deque[Future] = deque()
        todo = iter(paths)
        for p in todo:
            pending.append(pool.submit(_worker_prepare, p, config, size))
            if len(pending) >= 2 * config.workers:
                break
        while pending:
            yield pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_worker_prepare, nxt, config, size))


def predict(paths: list[str], classifier: Classifier, class_names: list[str], config: PredictConfig,
            size: int, emit: Callable[[FileResult], None]) -> list[FileResult]:
    """Runs every file through the pipeline; `emit` gets each finished record in input order."""
    results: list[FileResult] = []
    waiting: list[PreparedFile] = []

    def flush() -> None:
        batch = [p for p in waiting if p.videos is not None]
        if batch:
            start = time.perf_counter()
            probs = classifier(np.concatenate([p.videos for p in batch]),
                               np.concatenate([p.audios for p in batch]))
            share = (time.perf_counter() - start) / len(probs)
            row = 0
            for p in batch:
                for clip_id in p.clip_ids:
                    p.result.clips[clip_id].probabilities = {
                        n: round(float(v), 6) for n, v in zip(class_names, probs[row], strict=True)}
                    row += 1
                p.result.timings["model"] = round(share * len(p.clip_ids), 4)
        for p in waiting:
            if p.result.status != "error":
                p.result.finish(class_names)
            p.result.timings["total"] = round(sum(p.result.timings.values()), 4)
            results.append(p.result)
            emit(p.result)
        waiting.clear()

    for prepared in _prepared_stream(paths, config, size):
        waiting.append(prepared)
        if sum(len(p.clip_ids) for p in waiting) >= config.batch_size:
            flush()
    flush()
    return results


def timeline_arrays(result: FileResult, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each window as a flat step from its start to its end, so that the plot spans the whole video
    and shows what was measured where (no interpolation between windows): times (2W,), probabilities
    (2W, C), NaN where a window had no face."""
    times = np.array([t for c in result.clips for t in (c.start, c.end)])
    probs = np.array([[c.probabilities[n] for n in class_names] if c.probabilities else
                      [np.nan] * len(class_names) for c in result.clips])
    return times, np.repeat(probs, 2, axis=0)


def default_workers(n_files: int) -> int:
    """Worker processes pay a start-up cost (imports, detector): worth it only for several files."""
    return 0 if n_files < 3 else max(1, min(4, (os.cpu_count() or 2) - 1))


def ensure_writable_parent(path: Path) -> None:
    if not path.parent.exists():
        raise UsageError(f"{path}: folder {path.parent} does not exist")
