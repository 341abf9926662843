"""Evaluation on a labelled split: UAR, WAR and per-class recall under the paper's two test protocols
(1 clip, and 2 clips averaged), in fp32 by default so that a reproduction is exact."""

# 1 clip: each video's 16 frames are the middle frames of 16 equal segments (segment position 0.5, the
# reference's test-time sampling).
# 2 clips: two clips per video whose frames sit at positions 0.25 and 0.75 of each segment, i.e. half a
# segment apart and covering the video evenly; their softmax probabilities are averaged. Both clips get
# the same audio input (the clip's whole track from its start, as in training). The paper samples "two
# clips uniformly" and reports no significant difference from 1 clip (DFEW: 66.51 vs 66.61 UAR).
#
# A video shorter than 16 frames gives the same frames at every position, so both protocols agree on it.
# The frames reach the model in the order the weights were trained with (clips.py): time, or for the
# official MAFW checkpoints the reference's file-name order; `frame_order` overrides it.
#
# `evaluate_run` is `dfer evaluate`: one fold or several (their means), in fp32 unless asked otherwise, so
# that a reproduction is exact; the report states the precision used.

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from dfer_cli.atomic import atomic_write_text
from dfer_cli.clips.plan import clip_positions
from dfer_cli.errors import DferError, UsageError
from dfer_cli.runtime.device import pick_device, resolve_precision
from dfer_cli.runtime.inference import softmax_batches
from dfer_cli.train import loader as clip_loader
from dfer_cli.train import prepare
from dfer_cli.train.datasets import open_dataset
from dfer_cli.train.loader import loader_workers
from dfer_cli.train.metrics import Report, evaluate_predictions
from dfer_cli.train.plots import plot_confusion
from dfer_cli.weights import store

ONE_CLIP = clip_positions(1)  # (1/2,): `dfer predict --clips 1` samples a short video alike
TWO_CLIPS = clip_positions(2)  # (1/4, 3/4)

# A data set of (video, audio, label) whose frames sit at the given segment position (0 < p < 1).
ViewFactory = Callable[[float], Dataset]


@dataclass(frozen=True, eq=False)
class Evaluation:
    name: str  # what was evaluated, e.g. "DFEW fold 1, test"
    one_clip: Report
    two_clips: Report | None
    precision: str = "fp32"  # the model's arithmetic: fp32, or bf16 autocast

    def protocols(self) -> dict[str, Report]:
        return {"1-clip": self.one_clip, **({"2-clip": self.two_clips} if self.two_clips else {})}

    def to_dict(self) -> dict:
        return {"name": self.name, "precision": self.precision,
                **{k: r.to_dict() for k, r in self.protocols().items()}}


@dataclass(frozen=True)
class EvalConfig:
    """What `dfer evaluate` scores, on what, and how."""

    dataset: str  # dfew, mafw or folder
    data: Path
    weights: str | None = None  # entry name or path (None: the default entry); several folds: holds {fold}
    folds: tuple[int, ...] = (1,)
    split: str | None = None  # None: test; val for a folder data set
    two_clips: bool = True  # the 2-clip protocol too
    cache: Path | None = None  # None: the default cache for the model's face size
    labels: Path | None = None  # folder data set: a labels CSV
    val_fraction: float = 0.2  # folder data set
    device: str = "auto"
    precision: str = "fp32"  # auto, fp32 or bf16 (runtime.PRECISIONS)
    batch_size: int = 16
    workers: int = field(default_factory=loader_workers)
    frame_order: str | None = None  # clips.FRAME_ORDERS; None: the order the weights record


@dataclass(frozen=True)
class EvalResult:
    evaluations: list[Evaluation]  # one per fold
    report: dict  # the JSON report (report_dict)


def predict_probs(model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 16,
                  workers: int = 0, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, C) and labels (N,) over `dataset`, in its order (model left in eval mode)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        generator=torch.Generator())  # not the global stream: evaluating draws nothing
    labels: list[torch.Tensor] = []

    def batches():
        for video, audio, label in loader:
            labels.append(label)
            yield video, audio

    probs = softmax_batches(model, batches(), device, precision)
    return probs, torch.cat(labels).numpy()


def evaluate(model: torch.nn.Module, view: ViewFactory, class_names: Sequence[str], name: str,
             device: torch.device, two_clips: bool = True, batch_size: int = 16,
             workers: int = 0, precision: str = "fp32") -> Evaluation:
    """Runs the 1-clip protocol, and the 2-clip one unless `two_clips` is False."""
    precision = resolve_precision(precision, device)

    def report(positions: tuple[float, ...]) -> Report:
        runs = [predict_probs(model, view(p), device, batch_size, workers, precision) for p in positions]
        labels = runs[0][1]
        if any(not np.array_equal(other, labels) for _, other in runs):
            raise DferError("the clip views list their videos in different orders")
        return evaluate_predictions(labels, np.mean([probs for probs, _ in runs], axis=0), class_names)

    return Evaluation(name, report(ONE_CLIP), report(TWO_CLIPS) if two_clips else None, precision)


def evaluate_run(config: EvalConfig, log: Callable[[str], None] | None = None) -> EvalResult:
    """Score trained weights on a labelled split of each fold in `config.folds`. Clips the cache lacks
    are prepared first; `log` gets the progress lines (default: stderr)."""
    several = len(config.folds) > 1
    if several and config.dataset == "folder":
        raise UsageError("--all-folds is for DFEW and MAFW; a folder data set has no folds")
    if several and (config.weights is None or "{fold}" not in config.weights):
        raise UsageError("--all-folds needs one model per fold: --weights with {fold} in it, "
                         "e.g. 'dfew-160-f{fold}' or 'runs/dfew-fold{fold}/last'")
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)
    say = log or functools.partial(print, file=sys.stderr)
    evaluations, sources = [], []
    for fold in config.folds:
        spec = config.weights.format(fold=fold) if several else config.weights
        loaded = store.resolve(spec)
        adapter = open_dataset(config.dataset, config.data, fold, config.labels, config.val_fraction)
        if loaded.config.dims.num_classes != len(adapter.class_names):
            raise DferError(f"{spec or 'the default weights'} has {loaded.config.dims.num_classes} classes, "
                            f"{adapter.name} has {len(adapter.class_names)}")
        size = loaded.config.dims.image_size
        split = config.split or ("val" if config.dataset == "folder" else "test")
        root = Path(config.cache) if config.cache else prepare.default_cache(adapter, size)
        clips = clip_loader.prepare_and_read(adapter, split, root, size, say)
        name = spec or store.default_name()
        order = config.frame_order or loaded.config.frame_order
        say(f"evaluating {name} on {adapter.name}, {split} ({precision}, frames in {order} order)")

        def view(position: float, c=clips, s=size, o=order) -> Dataset:
            return clip_loader.CacheDataset(c, train=False, size=s, position=position, frame_order=o)

        evaluations.append(evaluate(loaded.model, view, adapter.class_names, f"{adapter.name}, {split}", device,
                                    config.two_clips, config.batch_size, config.workers, precision))
        sources.append({"weights": name, "frame_order": order, **loaded.config.provenance})
    return EvalResult(evaluations, report_dict(evaluations, sources))


def mean_over_folds(evaluations: Sequence[Evaluation]) -> dict:
    """Mean and per-fold UAR / WAR for each protocol (the paper's tables average the 5 folds)."""
    if not evaluations:
        raise DferError("no folds evaluated")
    out: dict = {}
    for protocol in evaluations[0].protocols():
        reports = [e.protocols()[protocol] for e in evaluations]
        out[protocol] = {"uar": float(np.mean([r.uar for r in reports])),
                         "war": float(np.mean([r.war for r in reports])),
                         "folds": [{"name": e.name, "uar": r.uar, "war": r.war}
                                   for e, r in zip(evaluations, reports, strict=True)]}
    return out


def report_dict(evaluations: Sequence[Evaluation], weights: Sequence[dict]) -> dict:
    """The JSON report: one evaluation as it is, several (folds) with their means; `weights`
    describes the model of each."""
    if len(evaluations) == 1:
        return {"weights": weights[0], **evaluations[0].to_dict()}
    return {"weights": list(weights), "precision": evaluations[0].precision,
            "folds": [e.to_dict() for e in evaluations], "mean": mean_over_folds(evaluations)}


def write_outputs(evaluations: Sequence[Evaluation], report: dict, out: Path) -> list[Path]:
    """report.json and one confusion PNG per fold and protocol: confusion.png is the 1-clip matrix,
    confusion_2clip.png the 2-clip one (prefixed fold<k>_ when there are several folds)."""
    if out.exists() and not out.is_dir():
        raise DferError(f"--out {out}: exists and is not a folder")
    written = [out / "report.json"]
    atomic_write_text(written[0], json.dumps(report, indent=2) + "\n")
    for i, evaluation in enumerate(evaluations, start=1):
        prefix = "" if len(evaluations) == 1 else f"fold{i}_"
        for protocol, rep in evaluation.protocols().items():
            path = out / f"{prefix}confusion{'' if protocol == '1-clip' else '_2clip'}.png"
            plot_confusion(rep, path, title=f"{evaluation.name}, {protocol}")
            written.append(path)
    return written


def results_table(evaluations: Sequence[Evaluation], report: dict) -> Table:
    """Per-class recall with UAR and WAR for one evaluation; UAR and WAR per fold and their mean for
    several. The caption states the precision."""
    protocols = list(evaluations[0].protocols())
    caption = f"precision {evaluations[0].precision}"
    if len(evaluations) > 1:
        table = Table("fold", *(f"{p} {m}" for p in protocols for m in ("UAR", "WAR")), caption=caption)
        for e in evaluations:
            scores = [f"{getattr(r, m):.2f}" for r in e.protocols().values() for m in ("uar", "war")]
            table.add_row(e.name, *scores)
        mean = report["mean"]
        table.add_row("mean", *(f"{mean[p][m]:.2f}" for p in protocols for m in ("uar", "war")), style="bold")
        return table
    e = evaluations[0]
    table = Table("class", "clips", *(f"recall {p}" for p in protocols), title=e.name, caption=caption)
    reports = list(e.protocols().values())
    for i, name in enumerate(e.one_clip.class_names):
        recalls = [float(r.per_class_recall[i]) for r in reports]
        shown = ["-" if math.isnan(x) else f"{x:.2f}" for x in recalls]  # "-": no clips of the class
        table.add_row(name, str(int(e.one_clip.counts[i])), *shown)
    table.add_row("UAR", "", *(f"{r.uar:.2f}" for r in reports), style="bold")
    table.add_row("WAR", str(e.one_clip.num_samples), *(f"{r.war:.2f}" for r in reports), style="bold")
    return table
