"""Class names of the benchmarks, in the 0-based label order the reference model was trained with.

A checkpoint stores only a class count, so these lists are how its outputs get names back.
"""

from __future__ import annotations

from dfer_cli.errors import UsageError

# DFEW split files number these 1..7 in this same order.
DFEW_CLASSES: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")

# The reference model's MAFW order: the first seven follow DFEW's order, not MAFW's own listing.
MAFW_CLASSES: tuple[str, ...] = (
    "happiness",
    "sadness",
    "neutral",
    "anger",
    "surprise",
    "disgust",
    "fear",
    "contempt",
    "anxiety",
    "helplessness",
    "disappointment",
)


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """Names for a model with `num_classes` outputs: DFEW for 7, MAFW for 11, else `class_0`, `class_1`..."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if num_classes == len(DFEW_CLASSES):
        return DFEW_CLASSES
    if num_classes == len(MAFW_CLASSES):
        return MAFW_CLASSES
    return tuple(f"class_{i}" for i in range(num_classes))


TIME_ORDER = "time"
REFERENCE_ORDER = "reference-lexicographic"
FRAME_ORDERS = (TIME_ORDER, REFERENCE_ORDER)


def parse_frame_order(name: str) -> str:
    """"time", "reference" or "reference-lexicographic" -> one of FRAME_ORDERS."""
    order = REFERENCE_ORDER if name == "reference" else name
    if order not in FRAME_ORDERS:
        raise UsageError(f"frame order {name!r}: choose time or reference")
    return order
