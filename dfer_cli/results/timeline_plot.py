"""The emotion timeline of one video as a PNG (`dfer predict --window --plot`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from dfer_cli.errors import DferError
from dfer_cli.figures import DPI, class_colours, save_figure
from dfer_cli.results.records import FileResult

TIMELINE_SIZE_IN = (12.0, 4.5)


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
    colours = class_colours(names)
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


def timeline_arrays(result: FileResult, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each window as a flat step from its start to its end, so that the plot spans the whole video
    and shows what was measured where (no interpolation between windows): times (2W,), probabilities
    (2W, C), NaN where a window had no face."""
    times = np.array([t for c in result.clips for t in (c.start, c.end)])
    probs = np.array([[c.probabilities[n] for n in class_names] if c.probabilities else
                      [np.nan] * len(class_names) for c in result.clips])
    return times, np.repeat(probs, 2, axis=0)
