"""BlazeFace's output as mediapipe 0.10.14 reads it: the SSD anchors, the box decoding and the weighted
non-maximum suppression."""

# The options are those of mediapipe's FaceDetection subgraph and its short/full-range wrappers (read from
# the graphs compiled into the 0.10.14 wheel): SsdAnchors with fixed-size anchors offset by half a cell;
# TensorsToDetections with 16 values per anchor (box centre x, y, width, height, then 6 keypoints), x/y/w/h
# scaled by the input size, scores through a sigmoid clipped at +-100; NonMaxSuppression WEIGHTED at IoU 0.3.

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SUPPRESSION_IOU = 0.3


@dataclass(frozen=True)
class AnchorGrid:
    """The SSD anchor layout of one model: (grid side, anchors per cell) per feature map."""

    size: int
    grids: tuple[tuple[int, int], ...]

    def centres(self) -> torch.Tensor:
        """(A, 2) anchor centres (x, y) in [0, 1], in the model's output order (row, column, anchor)."""
        parts = []
        for side, per_cell in self.grids:
            ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
            cells = torch.stack([xs, ys], -1).reshape(-1, 1, 2).expand(-1, per_cell, 2)
            parts.append((cells.reshape(-1, 2).double() + 0.5) / side)
        return torch.cat(parts).float()


# Short range: strides 8, 16, 16, 16 with an interpolated-scale anchor each (layers of equal stride are
# merged): 16x16 cells x 2 and 8x8 cells x 6. Full range: stride 4, one anchor per cell.
SHORT_RANGE = AnchorGrid(128, ((16, 2), (8, 6)))
FULL_RANGE = AnchorGrid(192, ((48, 1),))


def decode(raw: torch.Tensor, logits: torch.Tensor, grid: AnchorGrid, centres: torch.Tensor,
           min_score: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame, the boxes (K, 4: x0, y0, x1, y1 in [0, 1] of the tensor) and scores (K,) of the
    anchors that pass `min_score`, before suppression. Only those cross to the CPU."""
    scores = torch.sigmoid(logits.float().clamp(-100, 100))
    keep = scores >= min_score
    frame, anchor = keep.nonzero(as_tuple=True)
    values = raw[frame, anchor, :4].float() / grid.size
    centre = values[:, :2] + centres.to(values.device)[anchor]
    half = values[:, 2:] / 2
    boxes = torch.cat([centre - half, centre + half], 1)
    frame, boxes, kept = frame.cpu().numpy(), boxes.cpu().numpy(), scores[keep].cpu().numpy()
    valid = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])  # mediapipe drops negative sizes
    return [(boxes[(frame == n) & valid], kept[(frame == n) & valid]) for n in range(raw.shape[0])]


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    union = _area(box) + _area(others) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray,
                 threshold: float = SUPPRESSION_IOU) -> list[tuple[np.ndarray, float]]:
    """mediapipe's WEIGHTED suppression: the best remaining box takes every box overlapping it by more
    than `threshold` (itself included) and becomes their score-weighted mean; it keeps its own score."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    out = []
    while len(boxes):
        taken = _iou(boxes[0], boxes) > threshold
        taken[0] = True
        weights = scores[taken][:, None]
        out.append(((boxes[taken] * weights).sum(0) / weights.sum(), float(scores[0])))
        boxes, scores = boxes[~taken], scores[~taken]
    return out
