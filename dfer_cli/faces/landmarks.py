"""Face landmarks as mediapipe 0.10.14's FaceMesh finds them: the crop around a face box that it feeds
the face mesh network (faces/face_mesh.py), and the network's points back in frame pixels."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfer_cli.errors import DferError
from dfer_cli.faces.face_mesh import POINTS, SIZE, FaceMesh, load
from dfer_cli.faces.mediapipe_ops import SUBPIXEL, axis_taps, blend, to_levels
from dfer_cli.runtime import registry

ROI_SCALE = 1.5  # mediapipe's face_detection_front_detection_to_roi: the square of the box's long side, x1.5
PRESENCE_THRESHOLD = 0.5  # FaceLandmarkCpu drops the landmarks of a crop scoring below this

OUTER_EYE_CORNERS = [33, 263]  # the eye line that mediapipe's tracking turns the next crop to


@dataclass(frozen=True)
class Roi:
    """The square crop the model sees, in frame pixels: centre, side, and rotation (radians; positive
    turns the crop's x axis from the frame's x towards its y, i.e. clockwise on screen)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0


def face_roi(box: Sequence[float], eyes: np.ndarray | None = None) -> Roi:
    """mediapipe's ROI for a face detection: the square on the box's longer side, scaled by 1.5, around
    the box's centre; turned so that the line from `eyes[0]` to `eyes[1]` (BlazeFace keypoints 0 and 1,
    in pixels) is horizontal, when they are given."""
    x0, y0, x1, y1 = (float(v) for v in box)
    angle = 0.0
    if eyes is not None:
        (ex0, ey0), (ex1, ey1) = np.asarray(eyes, np.float64)
        angle = -math.atan2(-(ey1 - ey0), ex1 - ex0)
        angle -= 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))  # into [-pi, pi)
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, ROI_SCALE * max(x1 - x0, y1 - y0), angle)


def roi_from_landmarks(points: np.ndarray) -> Roi:
    """mediapipe's ROI for the next video frame from one frame's 468 landmarks (FaceLandmarkLandmarksToRoi,
    how FaceMesh tracks a face without detecting it again): the landmarks' bounding box, as a detection box
    (square on its longer side, x1.5), turned so that the line from point 33 to point 263 (the outer eye
    corners) is horizontal."""
    xy = np.asarray(points, np.float64)[:, :2]
    low, high = xy.min(0), xy.max(0)
    return face_roi((low[0], low[1], high[0], high[1]), xy[OUTER_EYE_CORNERS])


def _axes(rois: Sequence[Roi]) -> tuple[np.ndarray, ...]:
    """Per ROI (as (N, 1, 1) arrays): centre x, y, side, cos and sin of the rotation."""
    cx, cy, side, angle = (np.array([getattr(r, f) for r in rois], np.float64)[:, None, None]
                           for f in ("cx", "cy", "side", "angle"))
    return cx, cy, side, np.cos(angle), np.sin(angle)


def crop(frames: torch.Tensor, rois: Sequence[Roi], sources: Sequence[int] | None = None) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames -> (N, 192, 192, 3) uint8, each frame's ROI as mediapipe's
    ImageToTensor makes it: OpenCV's warpPerspective of the ROI's corners onto the tensor's (tensor
    pixel d samples the frame at corner + d * side / 192, pixel indices rather than centres), bilinear
    with 1/32-pixel positions and integer weights, BORDER_REPLICATE, rounded back to uint8. With
    `sources`, ROI k is cut from frames[sources[k]]. The crops are cut on the frames' device."""
    sources = np.arange(len(rois)) if sources is None else np.asarray(sources, dtype=np.int64)
    if not rois:
        return torch.zeros((0, SIZE, SIZE, 3), dtype=torch.uint8, device=frames.device)
    if frames.device.type == "cpu" and all(r.angle == 0 for r in rois):
        return torch.stack([_crop_upright(frames[int(i)], r) for i, r in zip(sources, rois, strict=True)])
    if not np.array_equal(sources, np.arange(len(frames))):
        frames = frames[torch.from_numpy(sources).to(frames.device)]
    # 16 frames at a time on a CPU: the taps of more outgrow its caches.
    step = 16 if frames.device.type == "cpu" else len(rois)
    return torch.cat([_crop(frames[k:k + step], rois[k:k + step]) for k in range(0, len(rois), step)])


def _taps(centre: float, side: float, length: int) -> tuple[torch.Tensor, ...]:
    """Along one axis of an unturned ROI: each tensor pixel's two source pixels (clamped to the frame) and
    their integer weights, as _crop computes them (the same float64 sums, so the same rounding)."""
    step = torch.arange(SIZE, dtype=torch.float64) / SIZE - 0.5
    return axis_taps((centre * SUBPIXEL + (side * SUBPIXEL) * step).round_().long(), length)


def _crop_upright(frame: torch.Tensor, roi: Roi) -> torch.Tensor:
    """_crop of one unturned ROI, in two passes: a weight is then a row's times a column's, so rows are
    blended first (over the ROI's columns only), then columns. The same integer sums, so the same pixels,
    at about a third of the cost (measured, 192-px crops of 150-px faces)."""
    height, width = frame.shape[:2]
    y0, y1, wy0, wy1 = _taps(roi.cy, roi.side, height)
    x0, x1, wx0, wx1 = _taps(roi.cx, roi.side, width)
    left, right = int(x0[0]), int(x1[-1]) + 1
    region = frame[:, left:right]
    rows = blend(((region.index_select(0, y0).float(), wy0.view(-1, 1, 1)),
                  (region.index_select(0, y1).float(), wy1.view(-1, 1, 1))))
    total = blend(((rows.index_select(1, x0 - left), wx0.view(1, -1, 1)),
                   (rows.index_select(1, x1 - left), wx1.view(1, -1, 1))))
    return to_levels(total).to(torch.uint8)


def _crop(frames: torch.Tensor, rois: Sequence[Roi]) -> torch.Tensor:
    n, height, width = frames.shape[:3]
    device = frames.device
    cx, cy, side, cos, sin = (torch.from_numpy(a).to(device) for a in _axes(rois))
    step = torch.arange(SIZE, dtype=torch.float64, device=device) / SIZE - 0.5
    u, v = step.view(1, 1, SIZE), step.view(1, SIZE, 1)  # tensor column, row -> ROI offsets / side
    # Positions in 32nds of a pixel, rounded half to even as OpenCV's cvRound does; int32 from here on
    # (16 frames' pixel indices fit), which halves the memory traffic of int64.
    fixed_x = (cx * SUBPIXEL + (side * cos * SUBPIXEL) * u - (side * sin * SUBPIXEL) * v).round_().int()
    fixed_y = (cy * SUBPIXEL + (side * sin * SUBPIXEL) * u + (side * cos * SUBPIXEL) * v).round_().int()
    x0, x1, wx0, wx1 = axis_taps(fixed_x, width)  # BORDER_REPLICATE
    y0, y1, wy0, wy1 = axis_taps(fixed_y, height)
    base = torch.arange(n, dtype=torch.int32, device=device).view(n, 1, 1) * (height * width)
    row0, row1 = y0.mul_(width).add_(base), y1.mul_(width).add_(base)
    flat = frames.reshape(-1, 3)
    taps = ((flat.index_select(0, (row + col).view(-1)).view(n, SIZE, SIZE, 3), (wy * wx).unsqueeze_(-1))
            for row, wy in ((row0, wy0), (row1, wy1)) for col, wx in ((x0, wx0), (x1, wx1)))
    return to_levels(blend(taps)).to(torch.uint8)


def to_frame(points: np.ndarray, rois: Sequence[Roi]) -> np.ndarray:
    """(N, 468, 3) points in pixels of the 192x192 input -> frame pixels (mediapipe's
    LandmarkProjection; z scaled like x)."""
    cx, cy, side, cos, sin = _axes(rois)
    u, v = points[..., 0] / SIZE - 0.5, points[..., 1] / SIZE - 0.5
    x = cx[..., 0] + side[..., 0] * (cos[..., 0] * u - sin[..., 0] * v)
    y = cy[..., 0] + side[..., 0] * (sin[..., 0] * u + cos[..., 0] * v)
    z = points[..., 2] / SIZE * side[..., 0]
    return np.stack([x, y, z], -1).astype(np.float32)


class FaceLandmarker:
    """468 face landmarks per frame, given one face box per frame.

    The weights load on first use. `batch_size` frames are cropped and run at a time.
    """

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64, path: Path | None = None) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.path = path
        self._net: FaceMesh | None = None
        self._lock = threading.Lock()

    @property
    def net(self) -> FaceMesh:
        with self._lock:
            if self._net is None:
                self._net = load(self.path).to(self.device)
            return self._net

    def landmarks(self, frames: np.ndarray, boxes: Sequence[tuple[float, float, float, float]],
                  eyes: np.ndarray | None = None, sources: Sequence[int] | None = None) -> np.ndarray:
        """(N, 468, 3) float32 landmarks in frame pixels (x, y; z relative, in the same scale) of N RGB
        uint8 frames (N, H, W, 3), one face box (x0, y0, x1, y1, pixels; a BlazeFace detection box) per
        frame. `eyes`, optional (N, 2, 2): BlazeFace's keypoints 0 and 1 (x, y, pixels) per frame, to
        turn the crop upright as mediapipe does; without them the crop is not turned. `sources`: see run."""
        return self.landmarks_and_presence(frames, boxes, eyes, sources)[0]

    def landmarks_and_presence(self, frames: np.ndarray, boxes: Sequence[tuple[float, float, float, float]],
                               eyes: np.ndarray | None = None, sources: Sequence[int] | None = None,
                               ) -> tuple[np.ndarray, np.ndarray]:
        """`landmarks`, and the model's face-presence score (N,) in [0, 1]: mediapipe keeps the
        landmarks of crops scoring at least PRESENCE_THRESHOLD."""
        if eyes is not None and len(eyes) != len(boxes):
            raise DferError(f"{len(boxes)} boxes need as many eye pairs, not {len(eyes)}")
        rois = [face_roi(box, None if eyes is None else eyes[k]) for k, box in enumerate(boxes)]
        return self.run(frames, rois, sources)

    def run(self, frames: np.ndarray, rois: Sequence[Roi],
            sources: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, 468, 3, frame pixels) and face-presence scores (N,) for explicit crops, one per
        frame: face_roi's, or roi_from_landmarks' to track a face through a video as FaceMesh does. With
        `sources`, crop k is taken from frames[sources[k]] (several faces of one frame, never copied)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise DferError(f"frames must be (N, H, W, 3) uint8 RGB, not {frames.shape} {frames.dtype}")
        sources = np.arange(len(frames)) if sources is None else np.asarray(sources, dtype=np.int64)
        if len(rois) != len(sources) or (len(sources) and not 0 <= sources.min() <= sources.max() < len(frames)):
            raise DferError(f"{len(rois)} face boxes for {len(frames)} frames: one a frame, or one per source, "
                            f"each source a frame's index")
        points, scores = [], []
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        with torch.inference_mode():
            for start in range(0, len(rois), self.batch_size):
                part = rois[start:start + self.batch_size]
                crops = self._crops(pixels, sources[start:start + len(part)], part)
                # ImageToTensor's float range [0, 1]: the uint8 crop scaled by 1/255.
                x = crops.permute(0, 3, 1, 2).float().mul_(1 / 255)
                raw, logits = self.net(x)
                points.append(to_frame(raw.cpu().double().numpy(), part))
                scores.append(torch.sigmoid(logits).cpu().numpy())
        if not points:
            return np.zeros((0, POINTS, 3), np.float32), np.zeros(0, np.float32)
        return np.concatenate(points), np.concatenate(scores).astype(np.float32)

    def _crops(self, pixels: torch.Tensor, sources: np.ndarray, rois: Sequence[Roi]) -> torch.Tensor:
        """The batch's crops, cut on the model's device from the frames they need (each sent once)."""
        if self.device.type == "cpu":
            return crop(pixels, rois, sources)
        needed, where = np.unique(sources, return_inverse=True)
        return crop(pixels[torch.from_numpy(needed)].to(self.device), rois, where)


@registry.cached("face landmarker")
def process_landmarker(device: str) -> FaceLandmarker:
    """One landmark model per process and device, kept for its lifetime (as the face detector is)."""
    return FaceLandmarker(device)
