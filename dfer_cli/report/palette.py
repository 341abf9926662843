"""The report's colours: the emotions' (colours.class_colour: Okabe and Ito's palette, safe for the common
colour-blindnesses) and the speech lanes'. Every colour is also given as text (a legend, a label, a
tooltip), so none has to be told by colour alone."""

from __future__ import annotations

# Speech in greys, so that no speech bar reads as an emotion's colour.
SPEECH = "#333333"  # speech a person on screen made
OFF_SCREEN = "#B0B0B0"  # speech nobody on screen made


def text_colour(background: str) -> str:
    """Black or white, whichever reads better on `background` (#RRGGBB), by its luminance."""
    r, g, b = (int(background[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "#FFFFFF"
