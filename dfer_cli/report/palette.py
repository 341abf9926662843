"""The report's colours: Okabe and Ito's palette, safe for the common colour-blindnesses, one per emotion;
every colour is also given as text (a legend, a label, a tooltip), so none has to be told by colour alone."""

from __future__ import annotations

# Okabe, M. and Ito, K. (2002), "Color Universal Design": the eight colours, and a grey for the neutral face.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
_BY_NAME = {
    "happy": "#F0E442", "happiness": "#F0E442",
    "sad": "#0072B2", "sadness": "#0072B2",
    "neutral": "#999999",
    "angry": "#D55E00", "anger": "#D55E00",
    "surprise": "#E69F00",
    "disgust": "#009E73",
    "fear": "#CC79A7",
    "contempt": "#56B4E9",
}
# Speech in greys, so that no speech bar reads as an emotion's colour.
SPEECH = "#333333"  # speech a person on screen made
OFF_SCREEN = "#B0B0B0"  # speech nobody on screen made


def class_colour(name: str, index: int) -> str:
    """The colour of a class: its own for the seven DFEW emotions and contempt, else the palette in turn."""
    return _BY_NAME.get(name.lower(), OKABE_ITO[index % len(OKABE_ITO)])


def text_colour(background: str) -> str:
    """Black or white, whichever reads better on `background` (#RRGGBB), by its luminance."""
    r, g, b = (int(background[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "#FFFFFF"
