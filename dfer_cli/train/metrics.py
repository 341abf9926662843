"""Classification metrics of the DFER benchmarks: WAR, UAR (in %) and the confusion matrix."""

# WAR (weighted average recall) is plain accuracy; UAR (unweighted average recall) is the mean of the
# per-class recalls, so a rare class (DFEW's disgust) weighs as much as a common one. Both are in %.
#
# A class with no samples in the evaluated set has no recall: it is NaN in `per_class_recall` and left out
# of the UAR mean (averaging in a 0 would punish the model for the data set's content). A class that has
# samples but is never predicted correctly has recall 0 and does count.

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dfer_cli.errors import DferError


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes), int64: row = true class, column = predicted class."""
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if true.shape != pred.shape:
        raise DferError(f"{true.size} true labels but {pred.size} predictions")
    for what, values in (("true label", true), ("prediction", pred)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise DferError(f"{what} {int(bad[0])} is outside 0..{num_classes - 1} ({num_classes} classes)")
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


@dataclass(frozen=True, eq=False)
class Report:
    """Evaluation of one set of predictions. Recalls, UAR and WAR are in %."""

    class_names: tuple[str, ...]
    confusion: np.ndarray  # (C, C) counts, row = true class
    counts: np.ndarray  # (C,) samples per true class
    per_class_recall: np.ndarray  # (C,) in %, NaN where the class has no samples
    uar: float
    war: float

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, class_names: Sequence[str]) -> Report:
        confusion = np.asarray(confusion, dtype=np.int64)
        names = tuple(class_names)
        if confusion.shape != (len(names), len(names)):
            raise DferError(f"confusion matrix of shape {confusion.shape} for {len(names)} class names")
        counts = confusion.sum(axis=1)
        total = int(counts.sum())
        if total == 0:
            raise DferError("no samples to evaluate")
        correct = np.diag(confusion).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(counts > 0, 100.0 * correct / counts, np.nan)
        return cls(
            class_names=names,
            confusion=confusion,
            counts=counts,
            per_class_recall=recall,
            uar=float(np.nanmean(recall)),
            war=float(100.0 * correct.sum() / total),
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; a NaN recall (class without samples) becomes None (JSON null)."""
        return {
            "uar": self.uar,
            "war": self.war,
            "num_samples": self.num_samples,
            "class_names": list(self.class_names),
            "per_class": [
                {"name": name, "samples": int(n), "recall": _none_if_nan(float(r))}
                for name, n, r in zip(self.class_names, self.counts, self.per_class_recall, strict=True)
            ],
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate_predictions(y_true: Sequence[int] | np.ndarray, scores: np.ndarray,
                         class_names: Sequence[str]) -> Report:
    """Report for true labels (N,) and scores (N, C): probabilities or logits (same argmax)."""
    scores = np.asarray(scores)
    names = tuple(class_names)
    if scores.ndim != 2 or scores.shape[1] != len(names):
        raise DferError(f"scores must have shape (N, {len(names)}) for {len(names)} classes, "
                        f"got {scores.shape}")
    pred = scores.argmax(axis=1)
    return Report.from_confusion(confusion_matrix(y_true, pred, len(names)), names)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value
