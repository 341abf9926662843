"""Evaluation on a labelled split: UAR, WAR and per-class recall under the paper's two test protocols.

1 clip: each video's 16 frames are the middle frames of 16 equal segments (segment position 0.5, the
reference's test-time sampling, spec section 5).
2 clips: two clips per video whose frames sit at positions 0.25 and 0.75 of each segment, i.e. half a
segment apart and covering the video evenly; their softmax probabilities are averaged. Both clips get
the same audio input (the clip's whole track from its start, as in training). The paper samples "two
clips uniformly" and reports no significant difference from 1 clip (DFEW: 66.51 vs 66.61 UAR).

A video shorter than 16 frames gives the same frames at every position, so both protocols agree on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .atomic import atomic_write_text
from .errors import DferError
from .inference import softmax_batches
from .metrics import Report, evaluate_predictions
from .plots import plot_confusion

ONE_CLIP = (0.5,)
TWO_CLIPS = (0.25, 0.75)

# A data set of (video, audio, label) whose frames sit at the given segment position (0 < p < 1).
ViewFactory = Callable[[float], Dataset]


@dataclass(frozen=True, eq=False)
class Evaluation:
    name: str  # what was evaluated, e.g. "DFEW fold 1, test"
    one_clip: Report
    two_clips: Report | None

    def protocols(self) -> dict[str, Report]:
        return {"1-clip": self.one_clip, **({"2-clip": self.two_clips} if self.two_clips else {})}

    def to_dict(self) -> dict:
        return {"name": self.name, **{k: r.to_dict() for k, r in self.protocols().items()}}


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
             workers: int = 0) -> Evaluation:
    """Runs the 1-clip protocol, and the 2-clip one unless `two_clips` is False."""
    def report(positions: tuple[float, ...]) -> Report:
        runs = [predict_probs(model, view(p), device, batch_size, workers) for p in positions]
        labels = runs[0][1]
        if any(not np.array_equal(other, labels) for _, other in runs):
            raise DferError("the clip views list their videos in different orders")
        return evaluate_predictions(labels, np.mean([probs for probs, _ in runs], axis=0), class_names)

    return Evaluation(name, report(ONE_CLIP), report(TWO_CLIPS) if two_clips else None)


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
    return {"weights": list(weights), "folds": [e.to_dict() for e in evaluations],
            "mean": mean_over_folds(evaluations)}


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
