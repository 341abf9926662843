"""PNG figures: confusion matrix, emotion timeline of one video, training curves.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so nothing needs a
display and no global figure state leaks between calls. Sizes are fixed (inches x DPI below) rather than
"tight", so the PNG's pixel size is predictable. Every file is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from dfer_cli.errors import DferError
from dfer_cli.figures import DPI, save_figure
from dfer_cli.train.metrics import Report

CONFUSION_SIZE_IN = (9.0, 7.5)


CURVES_SIZE_IN = (13.0, 4.0)

# Legend names of the training log's keys (train.py): the step records and the epoch records.
_CURVE_LABELS = {"loss": "train loss, per log interval", "train_loss": "train loss, epoch mean",
                 "val_uar": "val UAR", "val_war": "val WAR"}


def plot_confusion(report: Report, path: str | os.PathLike[str], title: str = "") -> None:
    """Row-normalised confusion matrix (%, each row sums to 100) with UAR and WAR under `title`."""
    names = report.class_names
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = 100.0 * report.confusion / report.counts[:, None]
    fig = Figure(figsize=CONFUSION_SIZE_IN, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["Blues"].with_extremes(bad="#e6e6e6")  # grey: a class without samples has no row
    image = ax.imshow(np.ma.masked_invalid(rows), cmap=cmap, vmin=0.0, vmax=100.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="% of the true class")
    font = 9 if len(names) <= 8 else 7
    for i in range(len(names)):
        for j in range(len(names)):
            value = rows[i, j]
            label = "–" if np.isnan(value) else f"{value:.1f}"
            colour = "white" if value > 55 else "black"
            ax.text(j, i, label, ha="center", va="center", fontsize=font, color=colour)
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=40, ha="right")
    ax.set_yticks(ticks, [f"{name} (n={int(n)})" for name, n in zip(names, report.counts, strict=True)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    scores = f"UAR {report.uar:.2f}%   WAR {report.war:.2f}%   ({report.num_samples} clips)"
    ax.set_title(f"{title}\n{scores}" if title else scores)
    save_figure(fig, path)


def plot_training_curves(log_records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Three panels over epochs: every `*loss` key, `lr`, and every `*uar` / `*war` key (in %).

    Each record is one epoch's log line, e.g. {"epoch": 3, "train_loss": 1.2, "lr": 9e-5, "val_uar": 41.0};
    a missing or None value (a metric not computed that epoch) is skipped. Without `epoch`, the
    record's position (1-based) is used.
    """
    if not log_records:
        raise DferError("no training records to plot")
    epochs = [float(r.get("epoch", i + 1)) for i, r in enumerate(log_records)]
    keys = sorted({k for r in log_records for k in r})
    panels = (
        ("loss", [k for k in keys if k.endswith("loss")]),
        ("learning rate", [k for k in keys if k == "lr"]),
        ("UAR / WAR (%)", [k for k in keys if k.endswith(("uar", "war"))]),
    )
    fig = Figure(figsize=CURVES_SIZE_IN, dpi=DPI, layout="constrained")
    for ax, (title, panel_keys) in zip(fig.subplots(1, len(panels)), panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        plotted = False
        for key in panel_keys:
            points = [(e, float(r[key])) for e, r in zip(epochs, log_records, strict=True)
                      if r.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3,
                        label=_CURVE_LABELS.get(key, key))
                plotted = True
        if not plotted:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        ax.legend(fontsize=8)
    save_figure(fig, path)
