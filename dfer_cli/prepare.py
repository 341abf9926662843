"""`dfer prepare`: decode, crop faces and compute fbanks once, into a clip cache (see cache.py).

DFEW ships aligned face frames: they are resized, and the audio comes from the original clip.
MAFW and folder data sets are decoded from video with dfer's face detector: MAFW with the union-of-
faces box its authors used (a central square where no face is found), folders with the main face.
Audio is the clip's track from its start, cut or padded to the model's 5.12-s window.
"""

from __future__ import annotations

import math
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from PIL import Image

from . import audio, faces, media
from .cache import ClipCache
from .clips import segment_indices
from .commands_train import DatasetName, FoldOpt, LabelsOpt, ValFractionOpt, _adapter, _default_cache
from .datasets import Dataset, Sample
from .errors import DferError


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 160
    # Frames kept per clip: enough that train-time sampling (a random frame of each of 16 segments)
    # still has 3 choices per segment, few enough to keep a DFEW fold's cache in tens of GB.
    max_frames: int = 48
    workers: int = 0
    progress: bool = True


@dataclass
class PrepareSummary:
    done: int = 0
    skipped: list[str] = field(default_factory=list)
    already: int = 0


def _dfew_frames(folder: Path, config: PrepareConfig) -> np.ndarray:
    files = sorted(folder.glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DferError(f"{folder}: no .jpg face frames")
    keep = segment_indices(len(files), config.max_frames) if len(files) > config.max_frames else range(len(files))
    size = (config.size, config.size)
    return np.stack([np.asarray(Image.open(files[i]).convert("RGB").resize(size, Image.BILINEAR)) for i in keep])


def _video_faces(path: Path, policy: str, detector: faces.FaceDetector, config: PrepareConfig) -> np.ndarray | None:
    info = media.probe(path)
    count = max(1, min(config.max_frames, math.ceil(info.duration * (info.frame_rate or 25))))
    times = info.start_time + (np.arange(count) + 0.5) * info.duration / count
    frames, _ = media.read_frames(path, times)
    face_config = faces.FaceConfig(policy=policy, margin=0.0 if policy == "union" else faces.FaceConfig.margin)
    track = faces.faces_for_clip(frames, detector, face_config, config.size)
    if track.crops is None and policy == "union":  # MAFW's fallback: a central square
        h, w = frames.shape[1:3]
        return faces.crop_faces(frames, [faces.union_box([], (w, h))] * len(frames), config.size)
    return track.crops


def prepare_sample(sample: Sample, policy: str, detector: faces.FaceDetector,
                   config: PrepareConfig) -> tuple[np.ndarray | None, np.ndarray, dict]:
    """(face frames or None when no face, audio input, flags) for one sample."""
    if sample.frames_dir is not None:
        frames = _dfew_frames(sample.frames_dir, config)
    else:
        frames = _video_faces(sample.video, policy, detector, config)
    wave, rate = media.read_audio(sample.video) if sample.video is not None else (None, 0)
    flags = {"no_audio": wave is None, "silent_audio": bool(wave is not None and audio.is_silent(wave))}
    return frames, audio.model_input(wave, rate), flags


def _work(sample: Sample, policy: str, config: PrepareConfig):
    try:
        return sample, prepare_sample(sample, policy, faces.process_detector(faces.FaceConfig()), config), None
    except DferError as e:
        return sample, None, str(e)


def prepare(dataset: Dataset, split: str, out: Path, config: PrepareConfig) -> PrepareSummary:
    """Fills the split's cache in `out`, skipping clips already there."""
    cache = ClipCache(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = dataset.samples(split)
    todo = [s for s in samples if s.key not in cache.keys]
    summary = PrepareSummary(already=len(samples) - len(todo))
    policy = getattr(dataset, "face_policy", "main")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    show = config.progress and console.is_terminal
    with Progress(TextColumn(f"{dataset.name} {split}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=not show) as bar:
        task = bar.add_task("prepare", total=len(samples), completed=summary.already)
        if config.workers > 0:
            pool = ProcessPoolExecutor(config.workers, mp_context=get_context("spawn"))
            outputs = pool.map(_work, todo, [policy] * len(todo), [config] * len(todo), chunksize=4)
        else:
            pool, outputs = None, (_work(s, policy, config) for s in todo)
        try:
            for sample, prepared, error in outputs:
                if prepared is None or prepared[0] is None:
                    summary.skipped.append(f"{sample.key}: {error or 'no face found'}")
                else:
                    cache.add(sample.key, sample.label, prepared[0], prepared[1], prepared[2])
                    summary.done += 1
                bar.advance(task)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return summary


def prepare_command(
    dataset: Annotated[DatasetName, typer.Option(help="dfew, mafw or folder")],
    data: Annotated[Path, typer.Option(help="the data set's root folder")],
    fold: FoldOpt = 1,
    split: Annotated[str, typer.Option(help="train, test, val or all")] = "all",
    size: Annotated[int, typer.Option(help="face size in px (112, 160 or 224)")] = 160,
    out: Annotated[Path | None, typer.Option(
        help="cache folder holding <split>/ (default: $DFER_HOME/cache/<dataset>-fold<k>)")] = None,
    workers: Annotated[int, typer.Option(help="decoding processes", min=0)] = 0,
    labels: LabelsOpt = None,
    val_fraction: ValFractionOpt = 0.2,
) -> None:
    """Cache face crops and fbanks so that training never decodes video (resumable).

    Examples:

      dfer prepare --dataset dfew --data ~/DFEW --fold 1

      dfer prepare --dataset folder --data my_clips/ --workers 4
    """
    adapter = _adapter(dataset, data, fold, labels, val_fraction)
    root = out or _default_cache(dataset, data, fold)
    splits = list(adapter.splits) if split == "all" else [split]
    config = PrepareConfig(size=size, workers=workers)
    for s in splits:
        summary = prepare(adapter, s, root / s, config)
        print(f"{adapter.name} {s}: {summary.done} prepared, {summary.already} already cached, "
              f"{len(summary.skipped)} skipped -> {root / s}", file=sys.stderr)
        for line in summary.skipped[:10]:
            print(f"  skipped {line}", file=sys.stderr)
