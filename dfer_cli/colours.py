"""The emotions' colours, one palette for every picture dfer draws and for the report."""

from __future__ import annotations

# Okabe, M. and Ito, K. (2002), "Color Universal Design": eight colours safe for the common colour-blindnesses,
# and a grey for the neutral face; the same emotion has the same colour in every picture and in the report.
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


def class_colour(name: str, index: int) -> str:
    """The colour of a class (#RRGGBB): its own for the seven DFEW emotions and contempt, else the palette
    in turn by its index."""
    return _BY_NAME.get(name.lower(), OKABE_ITO[index % len(OKABE_ITO)])
