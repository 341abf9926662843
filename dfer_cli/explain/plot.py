"""One PNG per file that shows an `explanation` record (explain.py): the voice and face shares, then per
clip its 16 face crops under their patch saliency, the importance of each frame at its time, and the
fbank under its time saliency.

Same conventions as plots.py: matplotlib's object API on the Agg canvas, a fixed width, atomic writes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from dfer_cli.figures import DPI, save_figure

WIDTH_IN = 16.0
SHARES_IN = 1.0
CLIP_IN = (0.95, 0.75, 1.3)  # heights of a clip's three panels: crops, frame importance, fbank
MAX_CLIPS = 6  # a long --window timeline would make a figure metres tall; the record keeps them all
VOICE_COLOUR, FACE_COLOUR = "#3b6fb6", "#e07b24"
HEAT = colormaps["inferno"]


def plot_explanation(explanation: dict, videos: np.ndarray, audios: np.ndarray, path: str | os.PathLike[str],
                     name: str, note: str = "") -> None:
    """The explanation of one file: `videos` (K, T, S, S, 3) uint8 and `audios` (K, frames, mels) are the
    clips it explains, in its order; `name` (the file) and `note` (e.g. "untrained weights") go in the
    title beside the label and its probability."""
    shown = min(len(videos), MAX_CLIPS)
    heights = [SHARES_IN, *CLIP_IN * shown]
    fig = Figure(figsize=(WIDTH_IN, sum(heights) + 0.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(heights), 1, gridspec_kw={"height_ratios": heights})
    title = f"{name}: {explanation['target']} {explanation['probability']:.0%}"
    more = f" (first {shown} of {len(videos)} clips shown)" if shown < len(videos) else ""
    fig.suptitle(f"{title}{more}" + (f"\n{note}" if note else ""), fontsize=13)
    _shares(axes[0], explanation)
    for k in range(shown):
        crops, frames, voice = axes[1 + 3 * k: 4 + 3 * k]
        clip = explanation["clips"][k]
        _crops(crops, videos[k], np.asarray(clip["face_regions"]), k)
        _frames(frames, clip, videos.shape[2])
        _voice(voice, audios[k], clip)
    save_figure(fig, path)


def _shares(ax, e: dict) -> None:
    target = e["target"]
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
    voice, face = e["voice_share"], e["face_share"]
    if voice is None:
        ax.barh(0, face, color=FACE_COLOUR)
        ax.text(0.5, 0, "face 100%  (no audio track: the voice was not measured)", ha="center", va="center",
                color="white", fontsize=11)
    else:
        # Undetermined: a faded, hatched 50/50 that cannot pass for a measured split.
        style = {"hatch": "//", "alpha": 0.45} if e["undetermined"] else {}
        ink = "black" if e["undetermined"] else "white"
        ax.barh(0, voice, color=VOICE_COLOUR, **style)
        ax.barh(0, face, left=voice, color=FACE_COLOUR, **style)
        for x, width, text in ((voice / 2, voice, "voice"), (voice + face / 2, face, "face")):
            if width >= 0.1:  # a narrower bar has no room for its name; the title gives both numbers
                ax.text(x, 0, f"{text} {width:.0%}", ha="center", va="center", color=ink, fontsize=11)
    shares = "voice not measured" if voice is None else f"voice {voice:.0%}, face {face:.0%}"
    parts = [f"p({target}) = {e['probability']:.2f}"]
    if e["without_voice"] is not None:
        parts.append(f"without the voice {e['without_voice'][target]:.2f}")
    parts.append(f"without the face {e['without_face'][target]:.2f}")
    caption = ", ".join(parts)
    if e["undetermined"]:
        caption += ": neither removal lowers it, so the split is undetermined"
    ax.set_title(f"who carries the call: {shares}  ({caption})", fontsize=10, loc="left")


def _crops(ax, video: np.ndarray, regions: np.ndarray, k: int) -> None:
    """The crops side by side under the clip's patch saliency, drawn as blocks: the map has one value per
    patch, and smoothing it would suggest a finer resolution than was measured."""
    t, s = video.shape[:2]
    montage = np.concatenate(list(video), axis=1)
    heat = np.kron(regions / max(regions.max(), 1e-12), np.ones((s // regions.shape[0],) * 2))
    overlay = HEAT(np.tile(heat, (1, t)))
    overlay[..., 3] = 0.65 * np.tile(heat, (1, t))  # transparent where nothing mattered
    ax.imshow(montage, extent=(0, t * s, s, 0), aspect="auto", interpolation="nearest")
    ax.imshow(overlay, extent=(0, t * s, s, 0), aspect="auto", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(f"clip {k + 1}\nfaces", fontsize=9)
    if not regions.any():
        _nothing(ax, "no face region of this clip supports the call")


def _frames(ax, clip: dict, s: int) -> None:
    importance = np.asarray(clip["frame_importance"])
    centres = s * (np.arange(len(importance)) + 0.5)
    ax.bar(centres, importance, width=0.8 * s, color=HEAT(0.55))
    ax.set_xlim(0, s * len(importance))
    ax.set_xticks(centres, [f"{t:.2f}s" for t in clip["frame_times"]], fontsize=8)
    ax.set_ylabel("frame\nimportance", fontsize=9)
    if not importance.any():
        _nothing(ax, "no frame of this clip supports the call")
    ax.grid(axis="y", alpha=0.3)


def _voice(ax, fbank: np.ndarray, clip: dict) -> None:
    times = clip["voice_times"]
    if times is None:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no audio track", ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    step = times[1] - times[0] if len(times) > 1 else 5.12
    start, end = times[0] - step / 2, times[-1] + step / 2
    ax.imshow(fbank.T, origin="lower", aspect="auto", extent=(start, end, 0, fbank.shape[1]), cmap="gray")
    ax.set_ylabel("fbank\n(mel bin)", fontsize=9)
    ax.set_xlabel("time in the video (s)", fontsize=9)
    twin = ax.twinx()
    importance = np.asarray(clip["voice_importance"])
    twin.step(times, importance, where="mid", color=VOICE_COLOUR, linewidth=2)
    twin.fill_between(times, importance, step="mid", color=VOICE_COLOUR, alpha=0.35)
    twin.set_ylim(0, max(importance.max() * 1.15, 1e-6))
    twin.set_ylabel("voice\nimportance", fontsize=9, color=VOICE_COLOUR)
    if not importance.any():
        _nothing(ax, "no moment of this clip's sound supports the call")
    ax.set_xlim(start, end)


def _nothing(ax, text: str) -> None:
    """An all-zero map is a finding (nothing there argues for the call), not a missing panel."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})


def picture_paths(folder: Path, paths: Sequence[str]) -> list[Path]:
    """folder/<file stem>.png for each path; a stem met again gets -2, -3... Named over all of a
    run's paths at once, so that processes sharing the files never draw over each other."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem = Path(path).stem or "video"
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}-{k}"
        used.add(name)
        names.append(folder / f"{name}.png")
    return names
