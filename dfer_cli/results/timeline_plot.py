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
                  path: str | os.PathLike[str], title: str, voice: np.ndarray | None = None,
                  speech: Sequence[tuple[float, float, int | None]] | None = None) -> None:
    """Stacked emotion probabilities over time: times (T,) in seconds, probs (T, C), rows summing to 1.
    With `voice` (T,), the voice's share of each window's call (NaN where not measured) is drawn in a
    strip below, over the face's share; with `speech` ((start, end, person or None), ...), who speaks when."""
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
    ratios = [4] + [1] * ((voice is not None) + bool(speech))
    axes = list(np.atleast_1d(fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})))
    ax = axes.pop(0)
    shares = axes.pop(0) if voice is not None else None
    speakers = axes.pop(0) if speech else None
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
    if speakers is not None:
        _who_speaks(speakers, speech)
    (speakers or shares or ax).set_xlabel("time (s)")
    # Reversed so the legend reads top-down in the same order as the stack.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="outside right upper", frameon=False)
    save_figure(fig, path)


def _who_speaks(ax, speech: Sequence[tuple[float, float, int | None]]) -> None:
    """A row per visible person and one for nobody visible (a voice from off screen), a bar per turn."""
    people = sorted({p for _, _, p in speech if p is not None})
    rows = [*people, None]
    for row, person in enumerate(rows):
        spans = [(start, end - start) for start, end, p in speech if p == person]
        ax.broken_barh(spans, (row - 0.4, 0.8), color="#3b6fb6" if person is not None else "#9a9a9a")
    ax.set_yticks(range(len(rows)), [f"person {p}" for p in people] + ["nobody seen"], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_ylabel("speaks")


def timeline_arrays(result: FileResult, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each window as a flat step from its start to its end, so that the plot spans the whole video
    and shows what was measured where (no interpolation between windows): times (2W,), probabilities
    (2W, C), NaN where a window had no face."""
    times = np.array([t for c in result.clips for t in (c.start, c.end)])
    probs = np.array([[c.probabilities[n] for n in class_names] if c.probabilities else
                      [np.nan] * len(class_names) for c in result.clips])
    return times, np.repeat(probs, 2, axis=0)
