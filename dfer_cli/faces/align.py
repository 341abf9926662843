"""dlib's aligned face chip (get_face_chip_details and extract_image_chip: 150x150, padding 0.25), the
input of dfer_cli.faces.embedding, made from MediaPipe face-mesh points; and whether a face is frontal
enough to embed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dfer_cli.errors import DferError

SIZE = 150
PADDING = 0.25  # dlib's compute_face_descriptor default

# dlib's mean face shape, points 17-67 of its 68-point scheme, in [0, 1] (get_face_chip_details).
_MEAN_X = (0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
           0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
           0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
           0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
           0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
           0.42689)
_MEAN_Y = (0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
           0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
           0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
           0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
           0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
           0.831803, 0.824182)
# The 68-point scheme's points that dlib aligns on (nose, eyes, upper lip: no jaw, brows or lower lip), and
# the face-mesh point at each: the usual mesh-to-68 correspondence.
_DLIB_68 = (*range(27, 55), *range(60, 65))
_MESH_68 = (168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose bridge 27-30, nostrils 31-35
            33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47 (image-left eye first)
            61, 39, 37, 0, 267, 269, 291,  # outer upper lip 48-54
            78, 82, 13, 312, 308)  # inner upper lip 60-64
TEMPLATE_68 = np.array([[_MEAN_X[i - 17], _MEAN_Y[i - 17]] for i in _DLIB_68])
# dlib's 5-point template (shape_predictor_5_face_landmarks: the image-right eye's outer and inner corners,
# the image-left eye's outer and inner corners, the bottom of the nose) and the mesh points there.
TEMPLATE_5 = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                       [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                       [0.4901123135679, 0.6277975316475]])
_MESH_5 = (263, 362, 33, 133, 2)
MESH_POINTS = {68: _MESH_68, 5: _MESH_5}

# Frontal enough: the nose tip (mesh point 1) lies within this fraction of the outer eye corners' distance
# (points 33, 263) of their midpoint, along the eye line: about 20 degrees of yaw. A GRID speaker's mesh
# (its x and z), turned about the vertical axis, moves the offset by 0.09 at 10 degrees, 0.18 at 20 and
# 0.29 at 30 (about half the tangent; tests/test_face_align.py checks it). Roll needs no limit (the chip is
# turned upright); pitch is not judged.
MAX_NOSE_OFFSET = 0.18
NOSE_TIP, EYE_CORNERS = 1, (33, 263)


@dataclass(frozen=True)
class Chip:
    """Where dlib's chip lies in the frame: centre (pixels), side (pixels of the frame across the chip's
    SIZE pixels) and angle (radians, dlib's chip_details.angle: the chip's x axis turned from the frame's)."""

    cx: float
    cy: float
    side: float
    angle: float


def _similarity(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares similarity transform (Umeyama's, as dlib's find_similarity_transform) taking
    `source` points to `target`: (2x2 matrix, translation)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    variance = (s ** 2).sum() / len(s)
    cov = t.T @ s / len(s)
    u, d, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / variance
    return scale * rotation, mu_t - scale * rotation @ mu_s


def chip_location(points: np.ndarray, template: int = 68) -> Chip:
    """dlib's get_face_chip_details(size=150, padding=0.25) for one face's 468 mesh points (x, y in frame
    pixels; further columns ignored), aligning the mesh points at dlib's `template` (68 or 5) points."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[0] != 468 or points.shape[1] < 2:
        raise DferError(f"face-mesh points must be (468, 2 or 3), not {points.shape}")
    if template not in MESH_POINTS:
        raise DferError(f"dlib's face-chip templates have 68 or 5 points, not {template}")
    reference = TEMPLATE_68 if template == 68 else TEMPLATE_5
    chip_points = (PADDING + reference) / (2 * PADDING + 1) * SIZE
    matrix, shift = _similarity(chip_points, points[list(MESH_POINTS[template]), :2])
    x, y = matrix[:, 0]
    centre = matrix @ np.array([SIZE / 2, SIZE / 2]) + shift
    return Chip(float(centre[0]), float(centre[1]), SIZE * math.hypot(x, y), math.atan2(y, x))


def _sample_grid(chip: Chip) -> tuple[np.ndarray, np.ndarray]:
    """Frame positions x, y (150, 150) of the chip's pixels, as dlib's extract_image_chip maps the chip: its
    corners (0, 0), (149, 0) and (0, 149) onto the corners of dlib's rect of side `chip.side` (a drectangle:
    right - left = width - 1), turned by `chip.angle` about its centre."""
    step = (chip.side - 1) / (SIZE - 1)
    grid = (np.arange(SIZE) - (SIZE - 1) / 2) * step
    u, v = grid[None, :], grid[:, None]  # along the chip's x (columns) and y (rows)
    cos, sin = math.cos(chip.angle), math.sin(chip.angle)
    return chip.cx + cos * u - sin * v, chip.cy + sin * u + cos * v


def _shrunk(frame: np.ndarray, chip: Chip, factor: int) -> tuple[np.ndarray, Chip]:
    """The part of the frame under the chip, averaged over `factor` x `factor` blocks, and the chip's place
    in it: what the chip then samples at most 2x smaller."""
    reach = chip.side * 0.75  # past the turned square's half-diagonal (0.707 of its side)
    h, w = frame.shape[:2]
    x0, y0 = max(0, int(chip.cx - reach)), max(0, int(chip.cy - reach))
    x1 = x0 + (min(w, int(chip.cx + reach) + 1) - x0) // factor * factor
    y1 = y0 + (min(h, int(chip.cy + reach) + 1) - y0) // factor * factor
    part = frame[y0:y1, x0:x1].reshape((y1 - y0) // factor, factor, (x1 - x0) // factor, factor, 3)
    small = part.mean((1, 3), dtype=np.float64)
    # Pixel centres: frame pixel p's centre lies at (p - x0 + 0.5) / factor - 0.5 in the shrunk image.
    return small, Chip((chip.cx - x0 + 0.5) / factor - 0.5, (chip.cy - y0 + 0.5) / factor - 0.5,
                       (chip.side - 1) / factor + 1, chip.angle)


def extract_chip(frame: np.ndarray, chip: Chip) -> np.ndarray:
    """The (150, 150, 3) uint8 chip of an (H, W, 3) uint8 RGB frame: bilinear, black where the samples
    leave the frame, as dlib's extract_image_chip. Where the chip shrinks the face by more than 2x, dlib
    samples an image pyramid; here the frame is first averaged over n x n blocks (n the shrink factor,
    rounded down), which serves the same end: no aliasing, and a cost that does not grow with the face."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise DferError(f"a frame must be (H, W, 3) uint8 RGB, not {frame.shape} {frame.dtype}")
    shrink = chip.side / SIZE
    image = frame
    if shrink > 2:
        image, chip = _shrunk(frame, chip, int(shrink))
    x, y = _sample_grid(chip)
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    h, w = image.shape[:2]
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    left, top = np.where(inside, left, 0), np.where(inside, top, 0)
    fx, fy = (x - left)[..., None], (y - top)[..., None]
    flat = image.reshape(-1, 3)
    corner = (top * w + left).ravel()  # only the samples' pixels become floats, not the whole frame
    tl, tr, bl, br = (np.take(flat, corner + step, 0).reshape(SIZE, SIZE, 3).astype(np.float64)
                      for step in (0, 1, w, w + 1))
    # dlib's sum, (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br), in place.
    gx = 1 - fx
    tl *= gx
    tr *= fx
    tl += tr
    bl *= gx
    br *= fx
    bl += br
    tl *= 1 - fy
    bl *= fy
    tl += bl
    tl *= inside[..., None]
    return np.clip(tl, 0, 255, out=tl).astype(np.uint8)  # truncated, as dlib assigns a double to a uint8


def face_chip(frame: np.ndarray, points: np.ndarray, template: int = 68) -> np.ndarray:
    """dlib's 150x150 aligned chip of the face whose 468 mesh points are given (frame pixels)."""
    return extract_chip(frame, chip_location(points, template))


def nose_offset(points: np.ndarray) -> float:
    """How far the nose tip lies from the outer eye corners' midpoint, along the eye line, as a fraction of
    their distance: 0 on a frontal face, growing with yaw (signed: positive towards the image-right eye)."""
    points = np.asarray(points, np.float64)
    left, right, nose = points[EYE_CORNERS[0], :2], points[EYE_CORNERS[1], :2], points[NOSE_TIP, :2]
    line = right - left
    length = float(line @ line)
    if length == 0:
        return math.inf
    return float((nose - (left + right) / 2) @ line / length)


def is_frontal(points: np.ndarray) -> bool:
    """Frontal enough to embed: the nose tip within MAX_NOSE_OFFSET of the eyes' midpoint (nose_offset)."""
    return abs(nose_offset(points)) <= MAX_NOSE_OFFSET
