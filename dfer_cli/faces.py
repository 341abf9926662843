"""Find, follow and crop the face.

Detection is BlazeFace, mediapipe's face detector, as dfer's own torch port (blazeface.py; weights
shipped in the package, so nothing is downloaded): the short-range model for close faces, the
full-range one for frames where it finds nothing, and for clips where both find too little, the
full-range model again over tiles of the frame, for faces too small to be seen whole-frame. The main
face is the largest and most central one over the clip; it is followed by overlap so that the crop
never jumps to another person, and frames where it was missed take a box interpolated from their
neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from . import blazeface
from .blazeface import FULL_RANGE, SHORT_RANGE, AnchorGrid, Letterbox, decode, letterbox, weighted_nms

__all__ = ["Box", "FaceConfig", "FaceDetector", "FaceTrack", "crop_faces", "faces_for_clip", "fill_missing",
           "process_detector", "square_box", "track_main_face", "union_box"]


@dataclass(frozen=True)
class FaceConfig:
    # Score thresholds of the short- and full-range models: mediapipe 0.10.14's own (its Python API
    # never passed min_detection_confidence on, so these are what dfer has always used).
    min_confidence: float = 0.5
    min_confidence_full: float = 0.6
    # A clip whose face is seen in fewer of its frames than this is treated as faceless: a detection in
    # one or two frames out of sixteen is far more often a false positive than a face.
    min_presence: float = 0.25
    # Growth of the square on every side, as a fraction of its side. BlazeFace's box runs from the
    # mid-forehead to just under the chin and stops at the cheeks; DFEW's aligned faces (what most
    # released checkpoints saw) show the whole face outline with some hair and background, which 0.1
    # (a square 1.2 times the box) resembles. 0 is the spec's rule for MAFW (square, nothing more).
    margin: float = 0.1
    # Overlap with a face's previous box needed to count as the same face.
    min_iou: float = 0.2
    # "main": the main face, followed through the clip. "union": MAFW's rule (the box around all faces
    # of each frame, no margin).
    policy: Literal["main", "union"] = "main"
    # Look again, over tiles of the frame, in clips where the whole-frame passes find a face in too few
    # frames (fewer than min_presence, or none): faces about 40 px wide in a 1280x720 frame.
    small_faces: bool = True


@dataclass(frozen=True)
class Box:
    """A box in pixels; x1, y1 are exclusive. `score` is the detector's confidence, 0 for a box that
    was not detected but filled in."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def iou(self, other: Box) -> float:
        inter = Box(max(self.x0, other.x0), max(self.y0, other.y0), min(self.x1, other.x1),
                    min(self.y1, other.y1)).area
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def _fit(start: float, side: float, limit: int) -> float:
    """Shift a span into [0, limit]; one longer than that is placed to cover it, as near as it can stay."""
    return float(np.clip(start, min(0.0, limit - side), max(0.0, limit - side)))


def square_box(box: Box, frame_size: tuple[int, int], margin: float = 0.0) -> Box:
    """The square crop for a face box (spec section 5): centred on it, the shorter side grown to the
    longer, then `margin` of the side added on every side; shifted to lie inside the frame (width,
    height) where it fits, since an off-centre face is closer to the training crops than black borders.
    Where it is larger than the frame, the crop will be padded with black."""
    w, h = frame_size
    side = max(box.x1 - box.x0, box.y1 - box.y0) * (1 + 2 * margin)
    cx, cy = box.center
    x0, y0 = _fit(cx - side / 2, side, w), _fit(cy - side / 2, side, h)
    return Box(x0, y0, x0 + side, y0 + side, box.score)


def union_box(boxes: Sequence[Box], frame_size: tuple[int, int]) -> Box:
    """MAFW's rule (spec section 5): the square around all faces of the frame, no margin; with no face,
    a central square whose side is half the frame's shorter side (score 0)."""
    w, h = frame_size
    if not boxes:
        half = min(w, h) / 4
        return Box(w / 2 - half, h / 2 - half, w / 2 + half, h / 2 + half, 0.0)
    union = Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes),
                max(b.y1 for b in boxes), max(b.score for b in boxes))
    return square_box(union, frame_size)


Track = dict[int, Box]  # frame index -> the face's box there


def _prominence(box: Box, frame_size: tuple[int, int]) -> float:
    """Side length (not area, so that being seen in more frames outweighs one huge box), discounted by
    up to half for the distance from the frame centre."""
    w, h = frame_size
    cx, cy = box.center
    off = np.hypot((cx - w / 2) / (w / 2), (cy - h / 2) / (h / 2)) / np.sqrt(2)
    return np.sqrt(box.area) * (1.0 - 0.5 * min(off, 1.0))


def track_faces(detections: Sequence[Sequence[Box]], min_iou: float = 0.2) -> list[Track]:
    """Every face of the clip as a track: each frame's boxes are linked to the tracks whose latest box
    they overlap by at least `min_iou` (best overlaps first, one box per track); the rest start tracks."""
    tracks: list[Track] = []
    for i, boxes in enumerate(detections):
        latest = [t[max(t)] for t in tracks]
        pairs = sorted(((b.iou(last), bi, ti) for bi, b in enumerate(boxes) for ti, last in enumerate(latest)),
                       reverse=True)
        linked_boxes: set[int] = set()
        linked_tracks: set[int] = set()
        for overlap, bi, ti in pairs:
            if overlap < min_iou:
                break
            if bi not in linked_boxes and ti not in linked_tracks:
                tracks[ti][i] = boxes[bi]
                linked_boxes.add(bi)
                linked_tracks.add(ti)
        tracks.extend({i: b} for bi, b in enumerate(boxes) if bi not in linked_boxes)
    return tracks


def main_track(tracks: Sequence[Track], frame_size: tuple[int, int]) -> Track | None:
    """The track with the most prominence summed over the clip (seen often, large, central)."""
    if not tracks:
        return None
    return max(tracks, key=lambda t: sum(_prominence(b, frame_size) for b in t.values()))


def track_main_face(detections: Sequence[Sequence[Box]], frame_size: tuple[int, int],
                    min_iou: float = 0.2) -> list[Box | None]:
    """The main face in each frame, or None where it was not seen. `frame_size` is (width, height).

    Someone passing close to the camera for a frame does not take the crop over, and a frame where
    only that someone is seen gets None rather than their box.
    """
    main = main_track(track_faces(detections, min_iou), frame_size) or {}
    return [main.get(i) for i in range(len(detections))]


def fill_missing(boxes: Sequence[Box | None]) -> list[Box] | None:
    """Frames without a box get one interpolated linearly between their neighbours' (copied from the
    nearest at the ends), with score 0. None when no frame has a box."""
    seen = [i for i, b in enumerate(boxes) if b is not None]
    if not seen:
        return None
    coords = np.array([[boxes[i].x0, boxes[i].y0, boxes[i].x1, boxes[i].y1] for i in seen])
    filled = np.stack([np.interp(np.arange(len(boxes)), seen, coords[:, k]) for k in range(4)], axis=1)
    return [b if b is not None else Box(*map(float, filled[i]), score=0.0) for i, b in enumerate(boxes)]


# A list of (x0, y0, x1, y1) pixel boxes with their scores, best first, per frame.
Found = list[tuple[np.ndarray, float]]

# Tiles: squares of 0.6 of the frame's shorter side (8 tiles on a 16:9 frame), overlapping by a quarter
# of their side so that a face narrower than the overlap lies whole in some tile. The full-range model
# then sees faces 3x larger than whole-frame: measured on GRID faces pasted into 1280x720 frames, it
# finds 44-px faces in 72/72 frames, 27-px ones in 72/72, 22-px ones in 66/72 (tiles of the whole
# shorter side: 72, 62 and 24 of 72). Below _MIN_TILE px, tiles see no more than the whole frame.
_TILE_FRACTION, _TILE_OVERLAP, _MIN_TILE = 0.6, 0.25, 96


def tiles(width: int, height: int) -> list[tuple[int, int, int]]:
    """(x0, y0, side) of the tiles covering a frame; [] for a frame too small to gain from them."""
    side = int(min(width, height) * _TILE_FRACTION)
    if side < _MIN_TILE:
        return []
    step = side * (1 - _TILE_OVERLAP)

    def starts(length: int) -> np.ndarray:
        count = math.ceil((length - side) / step) + 1
        return np.linspace(0, length - side, count).round().astype(int)

    return [(int(x), int(y), side) for y in starts(height) for x in starts(width)]


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """The networks' tensors are small: on a CPU, splitting each op over threads costs more in
    synchronisation than it saves (measured on 2 busy cores: 3-30x slower wall time with 2 threads)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class BlazeFace:
    """Faces in batches of RGB frames (N, H, W, 3) uint8 of one size, on `device`, with mediapipe's
    pre- and post-processing. Frames stay on the CPU; only the models' small input tensors cross to
    the device, and only the anchors that pass the score threshold come back."""

    def __init__(self, short_score: float = 0.5, full_score: float = 0.6, device: str | torch.device = "cpu",
                 batch_size: int | None = None) -> None:
        self.device = torch.device(device)
        # Frames per network call on a CPU, measured: 16 for short range (its large maps are split into
        # 8-frame chunks inside; larger calls save per-op overhead), 4 for full range (beats 1, 8 and 16).
        short, full = (16, 4) if self.device.type == "cpu" else (256, 256)
        self.batch_size = {SHORT_RANGE: batch_size or short, FULL_RANGE: batch_size or full}
        self.min_score = {SHORT_RANGE: short_score, FULL_RANGE: full_score}
        # Channels-last: oneDNN's depthwise convolutions run 2-3x faster in it on a CPU.
        self.models = {grid: blazeface.load(net).to(self.device, memory_format=torch.channels_last)
                       for grid, net in ((SHORT_RANGE, blazeface.ShortRange), (FULL_RANGE, blazeface.FullRange))}
        self.centres = {grid: grid.centres().to(self.device) for grid in self.models}

    def _run(self, grid: AnchorGrid, frames: torch.Tensor, region: tuple[int, int, int] | None = None) -> list[Found]:
        """One model over whole frames, or over one square (x0, y0, side) of each: boxes in pixels."""
        x0, y0, side = region or (0, 0, 0)
        box = Letterbox(side or frames.shape[2], side or frames.shape[1], grid.size, x0, y0)
        out: list[Found] = []
        step = self.batch_size[grid]
        for i in range(0, len(frames), step):
            x = letterbox(frames[i:i + step], box).to(self.device)
            with torch.inference_mode():
                raw, logits = self.models[grid](x)
            for boxes, scores in decode(raw, logits, grid, self.centres[grid], self.min_score[grid]):
                out.append([(box.to_pixels(b[None])[0], s) for b, s in weighted_nms(boxes, scores)])
        return out

    def detect(self, frames: np.ndarray) -> list[Found]:
        """Short range on every frame, full range where it found nothing."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        with _one_cpu_thread(self.device):
            found = self._run(SHORT_RANGE, pixels)
            missed = [i for i, f in enumerate(found) if not f]
            if missed:
                for i, f in zip(missed, self._run(FULL_RANGE, pixels[missed]), strict=True):
                    found[i] = f
        return found

    def detect_tiles(self, frames: np.ndarray) -> list[Found]:
        """The full-range model over each frame's tiles; a face seen in overlapping tiles is merged
        (weighted, as mediapipe merges anchors)."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        with _one_cpu_thread(self.device):
            per_tile = [self._run(FULL_RANGE, pixels, tile) for tile in tiles(pixels.shape[2], pixels.shape[1])]
        out = []
        for n in range(len(frames)):
            hits = [hit for found in per_tile for hit in found[n]]
            out.append(weighted_nms(np.array([b for b, _ in hits]), np.array([s for _, s in hits])) if hits else [])
        return out


class FaceDetector:
    """BlazeFace short and full range, batched over frames, on `device`.

    The networks (about 0.6 M parameters) are loaded on first use and never pickled: a copy sent to a
    worker process loads its own there. Keep one detector per process and reuse it.
    """

    def __init__(self, config: FaceConfig | None = None, device: str = "cpu") -> None:
        self.config, self.device = config or FaceConfig(), device
        self._model = None

    def __reduce__(self) -> tuple:
        return FaceDetector, (self.config, self.device)

    def _blazeface(self):
        if self._model is None:
            self._model = BlazeFace(self.config.min_confidence, self.config.min_confidence_full, self.device)
        return self._model

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Faces in one RGB frame (H, W, 3) uint8, in pixels, best first; [] when there is none."""
        return self.detect_batch(frame[None])[0]

    def detect_batch(self, frames: np.ndarray) -> list[list[Box]]:
        """Faces in each of N RGB frames of one size (N, H, W, 3) uint8: the whole-frame passes."""
        return [_boxes(f) for f in self._blazeface().detect(frames)]

    def detect_small(self, frames: np.ndarray) -> list[list[Box]]:
        """Faces in each frame found over tiles of it: slower, for faces too small for detect_batch."""
        return [_boxes(f) for f in self._blazeface().detect_tiles(frames)]

    def close(self) -> None:
        self._model = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _boxes(found) -> list[Box]:
    return [Box(*map(float, b), score=s) for b, s in found]


_process_detectors: dict[FaceConfig, FaceDetector] = {}


def process_detector(config: FaceConfig) -> FaceDetector:
    """One detector per configuration for this process, kept for its lifetime: worker pools call
    this per task instead of reloading the networks."""
    if config not in _process_detectors:
        _process_detectors[config] = FaceDetector(config)
    return _process_detectors[config]


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


@dataclass(frozen=True)
class FaceTrack:
    crops: np.ndarray | None  # (N, S, S, 3) uint8; None when the clip has no face
    boxes: list[Box] | None  # the square region cropped from each frame, in pixels
    found: int  # frames where the face was detected (the rest were filled in)
    total: int
    faces_seen: int = 0  # distinct faces (tracks) seen in the clip


def _detect_clip(frames: np.ndarray, detector: FaceDetector, config: FaceConfig) -> list[list[Box]]:
    """Whole-frame detection, then the small-face pass on the frames without a face where too few
    frames have one (so a clip with a visible face never pays for it). That pass first probes every
    4th such frame and goes on only if it finds something there: a faceless clip pays a quarter."""
    detections = detector.detect_batch(frames)
    found = sum(bool(d) for d in detections)
    if config.small_faces and (found == 0 or found < config.min_presence * len(frames)):
        missed = [i for i, d in enumerate(detections) if not d]
        for part in (missed[::4], [i for k, i in enumerate(missed) if k % 4]):
            for i, boxes in zip(part, detector.detect_small(frames[part]), strict=True):
                detections[i] = boxes
            if not any(detections[i] for i in part):
                break
    return detections


def faces_for_clip(frames: np.ndarray, detector: FaceDetector, config: FaceConfig, size: int) -> FaceTrack:
    """The face of a clip's RGB frames (N, H, W, 3) uint8, cropped square to size x size.

    crops is None when the face was seen in fewer than `config.min_presence` of the frames: the caller
    reports "no face" rather than classify whatever else the frames hold.
    """
    h, w = frames.shape[1:3]
    detections = _detect_clip(frames, detector, config)
    tracks = track_faces(detections, config.min_iou)
    if config.policy == "union":
        found = sum(bool(d) for d in detections)
        squares = [union_box(d, (w, h)) for d in detections]
    else:
        main = main_track(tracks, (w, h)) or {}
        found = len(main)
        filled = fill_missing([main.get(i) for i in range(len(frames))]) or []
        squares = [square_box(b, (w, h), config.margin) for b in filled]
    if found == 0 or found < config.min_presence * len(frames):
        return FaceTrack(None, None, found, len(frames), len(tracks))
    return FaceTrack(crop_faces(frames, squares, size), squares, found, len(frames), len(tracks))
