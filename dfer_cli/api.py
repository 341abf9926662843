"""dfer from Python: `load_model()`, then `predict()`.

    import dfer_cli as dfer
    model = dfer.load_model("dfew-160")          # an entry, a path, an http(s) URL, or "untrained"
    for r in model.predict(["talk.mp4", "clips/"]):
        print(r.path, r.label, r.confidence)
    df = dfer.to_dataframe(model.predict("clips/"))   # with pandas installed

`predict` runs media -> faces -> clips -> model -> records: worker processes (the front end, one face
detector each) decode files and crop faces while this process runs the model on batches of clips
gathered across files. A file that fails becomes an error record; the batch goes on. A timeline
goes through in parts of windows joined back into one record, so memory stays flat however long.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import faces, media
from .clips import (
    TIME_ORDER,
    ClipConfig,
    FilePart,
    file_flags,
    file_tasks,
    load_clips,
    merge_flags,
    parse_frame_order,
    plan_file,
)
from .errors import DferError, UsageError
from .results import ClipResult, FileResult
from .runtime import Ranks, bounded_map, default_workers, gather, pick_device, resolve_precision, softmax_batches

UNTRAINED = "untrained"


@dataclass(frozen=True)
class PredictConfig:
    clips: ClipConfig = field(default_factory=ClipConfig)
    face: faces.FaceConfig = field(default_factory=faces.FaceConfig)
    window: float | None = None  # seconds per timeline window; None: `clips.clips` clips per file
    batch_size: int = 8
    workers: int | None = 0  # 0: decode in the main process; None: by the number of files
    explain: bool = False  # add an explanation of each file's label (explain.py): about 5x the model's time
    explain_dir: Path | None = None  # with explain: one PNG per file there


def display_path(path: str | os.PathLike) -> str:
    """A printable name even for file names that are not valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "replace")


def collect_inputs(args: Iterable[str | os.PathLike], recursive: bool = True,
                   extensions: tuple[str, ...] = media.VIDEO_EXTENSIONS) -> list[str]:
    """Files as given, and the video files found under folders. Entries named like videos that are
    not regular files (folders, dangling links) are kept so that they get an error record."""
    found: list[str] = []
    args = [os.fspath(a) for a in args]
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
    frame_times: np.ndarray | None = None  # (K, T) s: the crops' own times in the video
    audio_starts: np.ndarray | None = None  # (K,) s: where each clip's audio window starts
    has_audio: bool = False  # a track was heard (the explanation measures the voice only then)
    picture: Path | None = None  # with explain_dir: where its explanation is drawn
    part: FilePart | None = None  # the task it came from (clips.FilePart); None: a whole file
    seen_times: np.ndarray | None = None  # a timeline part's decoded frame times (merge_flags)


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(self.timings.get(stage, 0.0) + now - self.last, 4)
        self.last = now


def prepare_file(path: str, config: PredictConfig, size: int, detector: faces.FaceDetector,
                 part: FilePart | None = None) -> PreparedFile:
    """Probe (unless `part` brings the probe and the plans), then the front end: decode the clips'
    frames and audio spans, crop the face, fbank."""
    result = FileResult(path=display_path(path))
    clock = _Clock(result.timings)
    info = part.info if part and part.info else media.probe(
        path, list_frames_up_to=0.0 if config.window else config.clips.whole_up_to)
    result.media = {"duration": round(info.duration, 3), "width": info.width, "height": info.height,
                    "rotation": info.rotation, "frame_rate": round(info.frame_rate or 0.0, 3),
                    "audio_rate": info.audio_rate}
    clock.lap("probe")
    prepared = PreparedFile(result, part=part)
    plans = part.plans if part and part.info else plan_file(info, config.clips, config.window)
    audio_errors: list[str] = []  # an unreadable track is heard as none, and flagged
    clips = list(load_clips(path, info, plans, config.face, size, detector, audio_errors, lap=clock.lap))
    for c in clips:
        p = c.plan
        if c.track.crops is not None:
            prepared.clip_ids.append(len(result.clips))
        result.clips.append(ClipResult(p.index, round(p.start, 3), round(p.end, 3), round(p.audio_start, 3),
                                       round(p.audio_end, 3), c.track.found, c.track.total,
                                       faces_seen=c.track.faces_seen))
    result.flags = file_flags(info, clips, audio_errors)
    if part and part.count > 1:
        prepared.seen_times = np.unique(np.concatenate([c.frame_times for c in clips]))
    kept = [c for c in clips if c.track.crops is not None]
    if kept:
        prepared.videos = np.stack([c.track.crops for c in kept])
        prepared.audios = np.stack([c.fbank for c in kept])
        prepared.frame_times = np.stack([c.frame_times for c in kept])
        prepared.audio_starts = np.array([c.plan.audio_start for c in kept])
        prepared.has_audio = not result.flags["no_audio"]
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


def _guarded_prepare(part: FilePart, config: PredictConfig, size: int) -> PreparedFile:
    try:
        return prepare_file(part.path, config, size, faces.process_detector(config.face), part)
    except DferError as e:
        return PreparedFile(FileResult.failed(display_path(part.path), getattr(e, "reason", str(e))), part=part)
    except Exception as e:  # one bad file never sinks the batch; its record carries the reason
        return PreparedFile(FileResult.failed(display_path(part.path), f"{type(e).__name__}: {e}"), part=part)


class _Joiner:
    """Joins the parts of a timeline, classified in turn, back into one file's record; the parts'
    model inputs are dropped as they come, so a long video never holds more than a part of them."""

    def __init__(self) -> None:
        self.file: PreparedFile | None = None
        self.flags: list[dict] = []
        self.seen: list[np.ndarray] = []

    def add(self, p: PreparedFile) -> PreparedFile | None:
        """The whole file once its last part is in, else None."""
        if p.part is None or p.part.count == 1:
            return p
        p.videos = p.audios = None
        if p.part.index == 0:
            self.file, self.flags, self.seen = p, [], []
        whole = self.file.result
        if p.result.status == "error":  # a part that fails fails the file, with its reason
            if whole.status != "error":
                self.file.result = FileResult.failed(whole.path, p.result.error)
        else:
            self.flags.append(p.result.flags)
            self.seen.append(p.seen_times)
            if p is not self.file:
                whole.clips += p.result.clips
                whole.timings = {k: round(whole.timings.get(k, 0) + p.result.timings.get(k, 0), 4)
                                 for k in whole.timings | p.result.timings}
        if p.part.index < p.part.count - 1:
            return None
        if self.file.result.status != "error":
            self.file.result.flags = merge_flags(self.flags, self.seen)
        return self.file


def iter_predict(paths: list[str], classifier: Classifier, class_names: list[str], config: PredictConfig,
                 size: int, note: str = "", pictures: Sequence[Path] | None = None) -> Iterator[FileResult]:
    """Every file through the pipeline, each finished record yielded in input order. `note` goes on
    the explanation pictures (e.g. that the weights are untrained); `pictures` names them, one per
    path (by default `picture_paths`)."""
    waiting: list[PreparedFile] = []
    if pictures is None and config.explain_dir is not None:
        from .explain_plot import picture_paths

        pictures = picture_paths(config.explain_dir, paths)
    joiner, names = _Joiner(), iter(pictures or [])

    def flush() -> list[FileResult]:
        _classify([p for p in waiting if p.videos is not None], classifier, class_names)
        done = []
        for p in filter(None, map(joiner.add, waiting)):
            if p.result.status != "error":
                p.result.finish(class_names)
            if p.result.label is not None and (config.explain or config.explain_dir):
                _explain(p, classifier, class_names, note)
            p.result.timings["total"] = round(sum(p.result.timings.values()), 4)
            done.append(p.result)
        waiting.clear()
        return done

    # Workers pay a start-up of a few seconds (imports, the face detector): worth it from 3 files.
    workers = default_workers(len(paths), 3, 4) if config.workers is None else config.workers
    # With workers, up to 2 files per worker are decoded ahead of the model.
    # A timeline goes in parts, unless it is explained: an explanation needs all of a file's clips.
    tasks = file_tasks(paths, config.clips, None if config.explain else config.window)
    for prepared in bounded_map(partial(_guarded_prepare, config=config, size=size), tasks, workers):
        if prepared.part.index == 0:
            prepared.picture = next(names, None)
        waiting.append(prepared)
        if sum(len(p.clip_ids) for p in waiting) >= config.batch_size:
            yield from flush()
    yield from flush()


def _classify(batch: list[PreparedFile], classifier: Classifier, class_names: list[str]) -> None:
    if not batch:
        return
    start = time.perf_counter()
    probs = classifier(np.concatenate([p.videos for p in batch]), np.concatenate([p.audios for p in batch]))
    share = (time.perf_counter() - start) / len(probs)
    row = 0
    for p in batch:
        for clip_id in p.clip_ids:
            p.result.clips[clip_id].probabilities = {
                n: round(float(v), 6) for n, v in zip(class_names, probs[row], strict=True)}
            row += 1
        p.result.timings["model"] = round(share * len(p.clip_ids), 4)


def _explain(p: PreparedFile, classifier: Classifier, class_names: list[str], note: str) -> None:
    """The explanation of the file's label; each clip (a timeline's window) gets its own shares."""
    from .explain import FileClips, explain

    start = time.perf_counter()
    clips = FileClips(p.videos, p.audios, p.frame_times, p.audio_starts, p.has_audio)
    record = explain(classifier.model, clips, class_names.index(p.result.label), class_names, classifier.device,
                     classifier.precision)
    p.result.explanation = record
    for clip_id, clip in zip(p.clip_ids, record["clips"], strict=True):
        p.result.clips[clip_id].voice_share = clip["voice_share"]
        p.result.clips[clip_id].face_share = clip["face_share"]
    if p.picture is not None:
        from .explain_plot import plot_explanation

        plot_explanation(record, p.videos, p.audios, p.picture, p.result.path, note)
    p.result.timings["explain"] = round(time.perf_counter() - start, 4)


class UntrainedWeightsWarning(UserWarning):
    """Random weights: the pipeline runs, the emotions are meaningless."""


@dataclass
class Model:
    """A loaded MMA-DFER model ready to analyse videos (made by `load_model`)."""

    network: torch.nn.Module
    class_names: list[str]
    weights: str  # what classified the records: entry name, path or URL, or the untrained notice
    device: torch.device
    precision: str  # "fp32" or "bf16" (autocast)
    untrained: bool = False
    frame_order: str = TIME_ORDER  # the order of the frames the weights were trained with (clips.py)

    @property
    def image_size(self) -> int:
        return self.network.dims.image_size

    def stream(self, inputs: str | os.PathLike | Iterable[str | os.PathLike], *, window: float | None = None,
               clips: int = 2, batch_size: int = 8, workers: int | None = None, recursive: bool = True,
               extensions: Iterable[str] | None = None, explain: bool = False,
               explain_dir: str | os.PathLike | None = None, frame_order: str | None = None) -> Iterator[FileResult]:
        """Like `predict`, one record at a time as each file finishes (in input order)."""
        paths = collect_inputs([inputs] if isinstance(inputs, str | os.PathLike) else inputs, recursive,
                               video_extensions(extensions))
        order = parse_frame_order(frame_order) if frame_order else None
        config = PredictConfig(clips=ClipConfig(clips=clips, frame_order=order), window=window,
                               batch_size=batch_size, workers=workers, explain=explain or explain_dir is not None,
                               explain_dir=Path(explain_dir) if explain_dir is not None else None)
        return self.analyse(paths, config)

    def analyse(self, paths: list[str], config: PredictConfig,
                pictures: Sequence[Path] | None = None) -> Iterator[FileResult]:
        """Records for files already collected (see `collect_inputs`), under a full config; frames
        go in the weights' order unless `config.clips.frame_order` says otherwise. `pictures`: see
        `iter_predict`."""
        if config.clips.frame_order is None:
            config = replace(config, clips=replace(config.clips, frame_order=self.frame_order))
        classifier = Classifier(self.network, self.device, config.batch_size, self.precision)
        note = self.weights if self.untrained else ""
        for result in iter_predict(paths, classifier, self.class_names, config, self.image_size, note, pictures):
            result.weights = self.weights
            yield result

    def analyse_sharded(self, paths: list[str], config: PredictConfig, ranks: Ranks) -> list[FileResult]:
        """Under torchrun: this process analyses every `world`-th file, then every process gets all
        the records, in input order (a file that failed on any rank keeps its error record)."""
        pictures = None
        if config.explain_dir is not None:
            from .explain_plot import picture_paths

            pictures = picture_paths(config.explain_dir, paths)
        mine = list(self.analyse(paths[ranks.rank::ranks.world], config,
                                 pictures[ranks.rank::ranks.world] if pictures else None))
        shards = gather(mine, ranks)
        return [shards[i % ranks.world][i // ranks.world] for i in range(len(paths))]

    def predict(self, inputs: str | os.PathLike | Iterable[str | os.PathLike], *, window: float | None = None,
                clips: int = 2, batch_size: int = 8, workers: int | None = None, recursive: bool = True,
                extensions: Iterable[str] | None = None, explain: bool = False,
                explain_dir: str | os.PathLike | None = None, frame_order: str | None = None) -> list[FileResult]:
        """The emotion of each video (files, or folders searched for videos): one record per file,
        in input order; with `window` (seconds) a timeline of one clip per window. A file that
        cannot be analysed gets a record with status "error" and the reason. `explain` adds why
        (voice or face, which moments and face regions); `explain_dir` also draws it, a PNG per file.
        `frame_order` ("time" or "reference") overrides the order of frames the weights were trained with."""
        return list(self.stream(inputs, window=window, clips=clips, batch_size=batch_size, workers=workers,
                                recursive=recursive, extensions=extensions, explain=explain,
                                explain_dir=explain_dir, frame_order=frame_order))


def video_extensions(extensions: Iterable[str] | None) -> tuple[str, ...]:
    """"mp4", ".MOV" -> (".mp4", ".mov"); None: every video extension dfer looks for in folders."""
    if extensions is None:
        return media.VIDEO_EXTENSIONS
    return tuple("." + e.strip().lstrip(".").lower() for e in extensions if e.strip())


def load_model(weights: str | os.PathLike | None = None, device: str = "auto", precision: str = "auto") -> Model:
    """The model to analyse videos with.

    weights: an installed entry name (`dfer weights list`), a path to a dfer folder or an official
    MMA-DFER checkpoint, an http(s) URL (downloaded once, then converted), "untrained" (random weights
    to check the pipeline: a warning says the emotions mean nothing), or None for the default entry.
    device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    precision: "auto" (bf16 on CUDA and on CPUs with native bf16, else fp32), "fp32" or "bf16".
    """
    from . import checkpoints
    from .checkpoints import LoadedWeights, WeightsConfig
    from .labels import default_class_names
    from .model import MMADFER, ModelDims

    torch_device = pick_device(device)
    chosen = resolve_precision(precision, torch_device)
    if weights == UNTRAINED:
        dims = ModelDims()
        loaded = LoadedWeights(MMADFER(dims).eval(), WeightsConfig(
            dims, list(default_class_names(dims.num_classes)), provenance={"source": UNTRAINED}))
        warnings.warn("untrained random weights: the pipeline runs, the emotions are meaningless",
                      UntrainedWeightsWarning, stacklevel=2)
        label = "untrained (random weights: the emotions are meaningless)"
    else:
        spec = os.fspath(weights) if weights is not None else None
        loaded = checkpoints.resolve(spec)
        label = spec or checkpoints.default_name()
    network = loaded.model.to(torch_device).eval()
    return Model(network, list(loaded.config.class_names), label, torch_device, chosen, weights == UNTRAINED,
                 loaded.config.frame_order)
