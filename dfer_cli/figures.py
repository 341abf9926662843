"""How dfer draws a PNG: the Agg canvas, the resolution, one colour per emotion, atomic saves."""

from __future__ import annotations

import os
from collections.abc import Sequence

from matplotlib import font_manager, rc_context
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Text

from dfer_cli.atomic import atomic_path
from dfer_cli.colours import class_colour

DPI = 100


def class_colours(names: Sequence[str]) -> list[tuple[float, float, float, float]]:
    """The classes' colours as matplotlib RGBA."""
    return [to_rgba(class_colour(name, i)) for i, name in enumerate(names)]


# Fonts that draw CJK and other scripts DejaVu Sans lacks, where the system has one of them.
_WIDER_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Source Han Sans", "WenQuanYi Zen Hei",
                "Droid Sans Fallback", "Noto Sans", "Arial Unicode MS")


def text_fonts() -> tuple[str, ...]:
    """The font chain of every figure's text: matplotlib's DejaVu Sans, then the wider fonts installed,
    then matplotlib's Last Resort, which draws a placeholder for any character the others lack (a class
    name in an unknown script: no missing glyph, no warning per character)."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ("DejaVu Sans", *(f for f in _WIDER_FONTS if f in installed), *({_LAST_RESORT} & installed))


_LAST_RESORT = "Last Resort High-Efficiency"


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    """The figure as a PNG, written atomically, its text in `text_fonts`: those made so far, and the tick
    labels that drawing makes."""
    fonts = list(text_fonts())
    with rc_context({"font.family": fonts}), atomic_path(path) as tmp:
        for text in fig.findobj(Text):
            text.set_fontfamily(fonts)
        fig.savefig(tmp, format="png", dpi=DPI)
