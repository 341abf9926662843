"""A face thumbnail per person, cut from the video at their largest box, as a small JPEG data URL for the page."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from dfer_cli.errors import DferError
from dfer_cli.media.decode import read_frames
from dfer_cli.report.spans import FileSpans, Mood

SIZE = 112  # pixels a side
_MARGIN = 0.25  # of the box's side, added around it: the whole head, not only the detector's box
_QUALITY = 80


def thumbnails(video: str, spans: FileSpans) -> dict[int, str]:
    """Person number -> data URL, for the persons with a box; {} when the video cannot be read (the page
    says so), since a report of a moved or deleted video is still a report."""
    chosen: dict[int, Mood] = {}
    for person in spans.persons:
        boxed = [m for m in person.moods if m.box is not None]
        if person.number is not None and boxed:
            chosen[person.number] = max(boxed, key=lambda m: (m.box[2] - m.box[0]) * (m.box[3] - m.box[1]))
    if not chosen:
        return {}
    try:  # frames as predict read them, so that the boxes fit them
        frames, _ = read_frames(video, [(m.start + m.end) / 2 for m in chosen.values()])
    except (DferError, OSError, ValueError):
        return {}
    return {number: _data_url(_crop(frame, mood.box)) for (number, mood), frame in zip(chosen.items(), frames,
                                                                                           strict=True)}


def _crop(frame: np.ndarray, box: tuple[float, float, float, float]) -> Image.Image:
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * _MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = frame.shape[:2]
    left, top = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    right, bottom = int(min(cx + side / 2, w)), int(min(cy + side / 2, h))
    image = Image.fromarray(frame[top:max(bottom, top + 1), left:max(right, left + 1)])
    image.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
    return image


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
