"""Face crops: each frame's square region cut out and resized as the reference's test transform does."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from dfer_cli.faces.box import Box


def crop_faces(frames: np.ndarray, boxes: Sequence[Box], size: int) -> np.ndarray:
    """Each frame's box (square, in pixels) cut out, black where it reaches past the frame, resized to
    size x size: (N, size, size, 3) uint8. The resize is PIL's bilinear, the reference's test transform
    (it averages when shrinking, where cv2's INTER_LINEAR would alias)."""
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for k, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        h, w = frame.shape[:2]
        x0, y0 = round(box.x0), round(box.y0)
        side = max(1, round(box.x1 - box.x0))
        patch = np.zeros((side, side, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
        out[k] = np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))
    return out
