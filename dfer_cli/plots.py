"""PNG figures: confusion matrix, emotion timeline of one video, training curves.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so nothing needs a
display and no global figure state leaks between calls. Sizes are fixed (inches x DPI below) rather than
"tight", so the PNG's pixel size is predictable. Every file is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from dfer_cli.atomic import atomic_path
from dfer_cli.errors import DferError
from dfer_cli.metrics import Report

if TYPE_CHECKING:
    from dfer_cli.results import FileResult

DPI = 100
CONFUSION_SIZE_IN = (9.0, 7.5)
TIMELINE_SIZE_IN = (12.0, 4.5)
CURVES_SIZE_IN = (13.0, 4.0)

# Legend names of the training log's keys (train.py): the step records and the epoch records.
_CURVE_LABELS = {"loss": "train loss, per log interval", "train_loss": "train loss, epoch mean",
                 "val_uar": "val UAR", "val_war": "val WAR"}

# Conventional emotion colours make a timeline readable at a glance; unknown names fall back to tab20.
_EMOTION_COLOURS = {
    "happy": "#f2c318", "happiness": "#f2c318",
    "sad": "#3b6fb6", "sadness": "#3b6fb6",
    "neutral": "#a0a0a0",
    "angry": "#d62728", "anger": "#d62728",
    "surprise": "#ff7f0e",
    "disgust": "#2ca02c",
    "fear": "#8c4fbf",
    "contempt": "#8c564b",
    "anxiety": "#17becf",
    "helplessness": "#7f7f7f",
    "disappointment": "#1f3a5f",
}


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


def plot_timeline(times: Sequence[float] | np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                  path: str | os.PathLike[str], title: str, voice: np.ndarray | None = None) -> None:
    """Stacked emotion probabilities over time: times (T,) in seconds, probs (T, C), rows summing to 1.
    With `voice` (T,), the voice's share of each window's call (NaN where not measured) is drawn in a
    strip below, over the face's share."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    names = tuple(class_names)
    if t.size == 0:
        raise DferError("no time points to plot")
    if p.shape != (t.size, len(names)):
        raise DferError(f"probabilities of shape {p.shape} for {t.size} time points and {len(names)} classes")
    if t.size == 1:
        # A single window would stack into a zero-width area; draw it as a band one second wide.
        t = np.array([t[0] - 0.5, t[0] + 0.5])
        p = np.repeat(p, 2, axis=0)
        voice = None if voice is None else np.repeat(voice, 2)
    fig = Figure(figsize=TIMELINE_SIZE_IN, dpi=DPI, layout="constrained")
    ax, shares = (fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 1]}) if voice is not None
                  else (fig.add_subplot(), None))
    colours = _class_colours(names)
    ax.stackplot(t, p.T, labels=names, colors=colours, alpha=0.9, linewidth=0.3, edgecolor="white")
    ax.set_xlim(t[0], t[-1])
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if shares is not None:
        v = np.asarray(voice, dtype=np.float64)
        shares.fill_between(t, 0, v, color="#3b6fb6", label="voice")
        shares.fill_between(t, v, np.where(np.isnan(v), np.nan, 1.0), color="#e07b24", label="face")
        shares.set_ylim(0.0, 1.0)
        shares.set_ylabel("share")
        shares.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    (shares or ax).set_xlabel("time (s)")
    # Reversed so the legend reads top-down in the same order as the stack.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="outside right upper", frameon=False)
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


def _class_colours(names: Sequence[str]) -> list[tuple[float, float, float, float]]:
    fallback = colormaps["tab20"]
    return [
        to_rgba(_EMOTION_COLOURS[name.lower()]) if name.lower() in _EMOTION_COLOURS else fallback(i % 20)
        for i, name in enumerate(names)
    ]


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def timeline_arrays(result: FileResult, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each window as a flat step from its start to its end, so that the plot spans the whole video
    and shows what was measured where (no interpolation between windows): times (2W,), probabilities
    (2W, C), NaN where a window had no face."""
    times = np.array([t for c in result.clips for t in (c.start, c.end)])
    probs = np.array([[c.probabilities[n] for n in class_names] if c.probabilities else
                      [np.nan] * len(class_names) for c in result.clips])
    return times, np.repeat(probs, 2, axis=0)
