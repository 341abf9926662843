"""How dfer draws a PNG: the Agg canvas, the resolution, one colour per emotion, atomic saves."""

from __future__ import annotations

import os
from collections.abc import Sequence

from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from dfer_cli.atomic import atomic_path

DPI = 100


# Conventional emotion colours make a timeline readable at a glance; unknown names fall back to tab20.
EMOTION_COLOURS = {
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


def class_colours(names: Sequence[str]) -> list[tuple[float, float, float, float]]:
    fallback = colormaps["tab20"]
    return [
        to_rgba(EMOTION_COLOURS[name.lower()]) if name.lower() in EMOTION_COLOURS else fallback(i % 20)
        for i, name in enumerate(names)
    ]


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
