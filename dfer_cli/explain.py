"""Why the model made its call on one file: how much of it the voice and the face carry, which of the
16 frames of each clip, which face regions and which moments of the 5.12-s audio window mattered.

Two kinds of evidence, both measured against the same "nothing there" inputs (the baselines):
- modality: a counterfactual. The target's probability falls by some amount when the audio is replaced
  by the model's no-audio input, and by some amount when the faces are replaced by mid-grey frames; the
  two falls, normalised, are the voice and face shares. A counterfactual answers the user's question
  ("would the call stand without the voice?") directly, and it stays valid however non-linearly the
  fusion bottlenecks mix the branches, which a gradient would not.
- moments, face regions, voice moments: gradient x (input - baseline) of the target's centred logit,
  from one forward and backward pass per clip. It is the first-order share of each frame, patch and
  fbank frame in the same counterfactual (greying out or silencing exactly that part), so the three maps
  and the two shares measure one thing at two resolutions. It costs one backward pass, where occluding
  each of 16 frames, 100 patches and 32 audio bins would cost about 150 forward passes per clip.

Baselines: the audio one is what the model sees for a video without an audio track (audio.model_input
(None, 0)), which the released checkpoints met in training (DFEW has silent clips), so "no voice" is an
input the model knows. The face one is a uniform mid-grey frame: it holds no identity, no colour, no
expression and no motion. The clip's temporal-mean face was rejected: it keeps everything static in the
face (a smile held through the clip, skin tone, lighting), so it would remove only the motion and
under-report the face whenever the expression is held. Zero-padded fbank frames (an audio window longer
than the file) equal the baseline, so they get exactly zero importance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from . import audio
from .errors import DferError
from .model import MMADFER
from .runtime import autocast

FACE_BASELINE = 0.5  # mid-grey, on the model's [0, 1] pixel scale
FBANK_SHIFT_S = 0.01  # one fbank frame per 10 ms (audio.py)
METHOD = {
    "modality": "drop in the target's probability when the audio is replaced by the no-audio input or the "
                "faces by mid-grey frames; negative drops count as 0; shares normalised to sum to 1",
    "saliency": "gradient x (input - baseline) of the target's centred logit, summed per frame, patch or "
                "time bin, absolute value, normalised to sum to 1 per clip",
    "face_baseline": "mid-grey frames",
    "voice_baseline": "the no-audio input (all-zero fbank)",
}


@dataclass(frozen=True)
class ExplainConfig:
    # 32 bins of 160 ms: the audio encoder's own time resolution (16 fbank frames per patch row).
    voice_bins: int = 32
    # Clips per forward and backward pass. The backward pass keeps every activation of both ViT-Bs:
    # about 1.2 GB per clip in fp32 at 160 px.
    batch_size: int = 2
    decimals: int = 6


@dataclass(frozen=True)
class ClipInputs:
    """One file's classified clips, as predict feeds them to the model."""

    videos: np.ndarray  # (K, T, S, S, 3) uint8 face crops
    audios: np.ndarray  # (K, frames, mels) float32 model inputs (audio.model_input)
    frame_times: np.ndarray  # (K, T) seconds in the video of each face frame
    audio_starts: np.ndarray  # (K,) seconds in the video where each clip's audio window starts
    has_audio: bool  # False: the file has no audio track; its audios are all the no-audio input

    def __post_init__(self) -> None:
        k, t = self.videos.shape[:2]
        if self.audios.shape[0] != k or np.shape(self.frame_times) != (k, t) or len(self.audio_starts) != k:
            raise DferError(f"explain: inputs for {k} clips of {t} frames do not line up: audios "
                            f"{self.audios.shape}, frame times {np.shape(self.frame_times)}, "
                            f"{len(self.audio_starts)} audio starts")


@dataclass
class _Evidence:
    """Per-clip raw results, before rounding into the record."""

    probs: np.ndarray  # (K, C) with the real inputs
    without_voice: np.ndarray | None  # (K, C), None without an audio track
    without_face: np.ndarray  # (K, C)
    frames: np.ndarray  # (K, T) signed sums of gradient x (input - baseline)
    patches: np.ndarray  # (K, T, g, g) signed, per frame
    voice: np.ndarray | None  # (K, bins) signed


def explain(model: MMADFER, clips: ClipInputs, target: int, class_names: Sequence[str], device: torch.device,
            precision: str = "fp32", config: ExplainConfig | None = None) -> dict:
    """The `explanation` record of one file for class `target` (the file's top class): voice and face
    shares with both counterfactual probability vectors (means over the clips, as the file's own
    probabilities are), and per clip the frame, face-region and voice-moment importances."""
    config = config or ExplainConfig()
    if clips.has_audio and audio.TARGET_FRAMES % config.voice_bins:
        raise DferError(f"explain: {config.voice_bins} voice bins do not split {audio.TARGET_FRAMES} fbank frames")
    model.eval()  # no drop-path: two runs must give the same record
    # predict classifies under inference_mode; tensors made there could not be saved for backward.
    with torch.inference_mode(False):
        parts = [_evidence(model, _slice(clips, i, i + config.batch_size), target, device, precision, config)
                 for i in range(0, len(clips.videos), config.batch_size)]
    return _record(_concat(parts), clips, target, class_names, config)


def _concat(parts: list[_Evidence]) -> _Evidence:
    def joined(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    return _Evidence(*(joined(f.name) for f in fields(_Evidence)))


def _slice(clips: ClipInputs, a: int, b: int) -> ClipInputs:
    return ClipInputs(clips.videos[a:b], clips.audios[a:b], np.asarray(clips.frame_times)[a:b],
                      np.asarray(clips.audio_starts)[a:b], clips.has_audio)


def _evidence(model: MMADFER, clips: ClipInputs, target: int, device: torch.device, precision: str,
              config: ExplainConfig) -> _Evidence:
    video = torch.from_numpy(clips.videos).to(device).permute(0, 1, 4, 2, 3).float().div_(255)
    fbank = torch.from_numpy(clips.audios).to(device).unsqueeze(1)
    silence = torch.from_numpy(audio.model_input(None, 0)).to(device).expand_as(fbank)
    grey = torch.full_like(video, FACE_BASELINE)
    with torch.enable_grad():
        video.requires_grad_(True)
        fbank.requires_grad_(clips.has_audio)
        with autocast(device, precision):
            logits = model(video, fbank).float()
        # Centred: softmax ignores a shift common to all logits, so only evidence that moves the
        # target against the other classes counts. A logit, not a probability: no saturation near 1.
        score = (logits[:, target] - logits.mean(-1)).sum()
        wanted = (video, fbank) if clips.has_audio else (video,)
        grads = torch.autograd.grad(score, wanted)
    with torch.no_grad():
        face = (grads[0] * (video - grey)).sum(2)  # (K, T, S, S): colour channels summed
        k, t, s, _ = face.shape
        g, p = s // model.dims.patch_size, model.dims.patch_size
        patches = face.view(k, t, g, p, g, p).sum((3, 5))
        voice = None
        if clips.has_audio:
            per_frame = (grads[1] * (fbank - silence)).sum(-1).view(k, -1)
            voice = per_frame.view(k, config.voice_bins, -1).sum(-1).cpu().numpy()
        return _Evidence(logits.softmax(-1).cpu().numpy(),
                         _probs(model, video, silence, device, precision) if clips.has_audio else None,
                         _probs(model, grey, fbank, device, precision),
                         patches.sum((2, 3)).cpu().numpy(), patches.cpu().numpy(), voice)


def _probs(model: MMADFER, video: torch.Tensor, fbank: torch.Tensor, device: torch.device,
           precision: str) -> np.ndarray:
    with torch.no_grad(), autocast(device, precision):
        return model(video.detach(), fbank.detach()).float().softmax(-1).cpu().numpy()


def shares(drop_voice: float | None, drop_face: float) -> tuple[float | None, float, bool]:
    """(voice share, face share, undetermined) from the two drops in the target's probability.

    A negative drop means the call grew more likely without that modality: it argued against the call,
    so it carries none of it (0). When neither drop is positive (each modality alone would make the
    same call at least as surely, or the call rests on neither), no split can be read off the drops:
    the shares are 0.5 each and flagged undetermined rather than made up. Without an audio track the
    voice share is None and the face carries the whole call.
    """
    if drop_voice is None:
        return None, 1.0, False
    v, f = max(drop_voice, 0.0), max(drop_face, 0.0)
    if v + f <= 1e-9:
        return 0.5, 0.5, True
    return v / (v + f), f / (v + f), False


def _normalised(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """|x| scaled to sum to 1 over `axes`; all-zero stays zero (nothing to attribute, no NaN)."""
    a = np.abs(x.astype(np.float64))
    total = a.sum(axis=axes, keepdims=True)
    return np.divide(a, total, out=np.zeros_like(a), where=total > 0)


def _record(ev: _Evidence, clips: ClipInputs, target: int, class_names: Sequence[str],
            config: ExplainConfig) -> dict:
    def r(x: float) -> float:
        return round(float(x), config.decimals)

    def vector(p: np.ndarray | None) -> dict[str, float] | None:
        return None if p is None else {n: r(v) for n, v in zip(class_names, p, strict=True)}

    def modality(probs: np.ndarray, no_voice: np.ndarray | None, no_face: np.ndarray) -> dict:
        v, f, undetermined = shares(None if no_voice is None else probs[target] - no_voice[target],
                                    probs[target] - no_face[target])
        return {"voice_share": None if v is None else r(v), "face_share": r(f), "undetermined": undetermined}

    mean = {k: None if x is None else x.mean(0) for k, x in
            (("p", ev.probs), ("v", ev.without_voice), ("f", ev.without_face))}
    record = {"target": class_names[target], "probability": r(mean["p"][target]),
              **modality(mean["p"], mean["v"], mean["f"]), "no_audio": not clips.has_audio,
              "without_voice": vector(mean["v"]), "without_face": vector(mean["f"]),
              "method": {**METHOD, "voice_bin_s": r(audio.TARGET_FRAMES * FBANK_SHIFT_S / config.voice_bins),
                         "patch_px": clips.videos.shape[2] // ev.patches.shape[-1]},
              "clips": []}
    frames = _normalised(ev.frames, (1,))
    regions = _normalised(np.abs(ev.patches).sum(1), (1, 2))  # |per frame| first: +/- frames never cancel
    voice = None if ev.voice is None else _normalised(ev.voice, (1,))
    width = audio.TARGET_FRAMES * FBANK_SHIFT_S / config.voice_bins
    for k in range(len(clips.videos)):
        entry = {"frame_times": [r(t) for t in clips.frame_times[k]], "frame_importance": [r(x) for x in frames[k]],
                 "face_regions": [[r(x) for x in row] for row in regions[k]],
                 "voice_times": None, "voice_importance": None,
                 **modality(ev.probs[k], None if ev.without_voice is None else ev.without_voice[k],
                            ev.without_face[k])}
        if voice is not None:
            start = float(clips.audio_starts[k])
            entry["voice_times"] = [r(start + width * (i + 0.5)) for i in range(config.voice_bins)]
            entry["voice_importance"] = [r(x) for x in voice[k]]
        record["clips"].append(entry)
    return record
