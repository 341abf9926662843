"""Why the model made its call on one file: the voice's and the face's shares (counterfactuals), and
which frames, face regions and audio moments mattered (integrated gradients)."""

# - Modality: a counterfactual. The target's log-odds fall by some amount when the audio is replaced by
#   the model's no-audio input (media.model_input(None, 0), what a video without a sound track gets), and
#   by some amount when the faces are replaced by mid-grey frames; the two falls, normalised, are the
#   voice and face shares (`shares` says why log-odds and what happens when neither falls). A
#   counterfactual answers the user's question ("would the call stand without the voice?") directly,
#   however non-linearly the fusion bottlenecks mix the branches. Mid-grey holds no
#   identity, colour, expression or motion. The clip's temporal-mean face was rejected: it keeps all that
#   is static (a smile held through the clip, skin tone, lighting), so it would remove only the motion
#   and under-report the face whenever an expression is held.
# - Moments, face regions, voice moments: integrated gradients of the target's log-odds, from the
#   baselines to the input, with one midpoint by default: one forward and backward pass per clip, where
#   occluding each of 16 frames, 100 patches and 32 audio bins would cost about 150 forward passes. Summed
#   per frame, per 16-px patch (the image encoder's own unit) and per 160-ms bin (one row of audio patches).
#   The face baseline is the same mid-grey. The voice baseline is the clip's own background (`background`),
#   not the no-audio input: the question there is which moments of sound, not whether there is sound.
#
# Importances are the positive parts of signed sums (`_support`), normalised to 1 per clip: a frame whose
# pixels push the call both ways counts for its net effect, not for the sum of its noise.

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from dfer_cli.errors import DferError, UsageError
from dfer_cli.media.fbank import NORM_STD, SHIFT_MS, TARGET_FRAMES, model_input
from dfer_cli.model import MMADFER
from dfer_cli.runtime.device import autocast

FACE_BASELINE = 0.5  # mid-grey, on the model's [0, 1] pixel scale


FBANK_SHIFT_S = SHIFT_MS / 1000  # one fbank frame per 10 ms


MIN_DROP = 1e-3  # log-odds: a removal that changes the odds by less than 0.1% took nothing away
METHOD = {
    "modality": "drop in the target's log-odds when the audio is replaced by the no-audio input or the "
                "faces by mid-grey frames, averaged over the clips; negative drops count as 0; shares "
                "normalised to sum to 1",
    "saliency": "integrated gradients of the target's log-odds from the baselines, summed per frame, per "
                "patch (over the clip's frames) or per time bin; positive part (evidence for the call), "
                "normalised to sum to 1 per clip (all 0 when nothing supports the call)",
    "face_baseline": "mid-grey frames",
    "voice_baseline": "the clip's background: mean spectrum of its quietest quarter of frames",
}


@dataclass(frozen=True)
class ExplainConfig:
    # 32 bins of 160 ms: the audio encoder's own time resolution (16 fbank frames per patch row).
    voice_bins: int = 32
    # Integration midpoints: each costs one forward and backward pass per clip.
    steps: int = 1
    # Clips per forward and backward pass. The backward pass keeps every activation of both ViT-Bs:
    # about 1.2 GB per clip in fp32 at 160 px.
    batch_size: int = 2
    decimals: int = 6

    def __post_init__(self) -> None:
        if self.voice_bins < 1 or TARGET_FRAMES % self.voice_bins:
            raise UsageError(f"explain: {self.voice_bins} voice bins do not split {TARGET_FRAMES} fbank frames")
        if self.steps < 1 or self.batch_size < 1:
            raise UsageError(f"explain: steps ({self.steps}) and batch size ({self.batch_size}) must be at least 1")


@dataclass(frozen=True)
class FileClips:
    """One file's classified clips, as predict feeds them to the model."""

    videos: np.ndarray  # (K, T, S, S, 3) uint8 face crops
    audios: np.ndarray  # (K, frames, mels) float32 model inputs (media.model_input)
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

    logits: np.ndarray  # (K, C) with the real inputs
    without_voice: np.ndarray | None  # (K, C) logits, None without an audio track
    without_face: np.ndarray  # (K, C) logits
    frames: np.ndarray  # (K, T) signed sums of the integrated gradients
    patches: np.ndarray  # (K, T, g, g) signed, per frame
    voice: np.ndarray | None  # (K, bins) signed


def explain(model: MMADFER, clips: FileClips, target: int, class_names: Sequence[str], device: torch.device,
            precision: str = "fp32", config: ExplainConfig | None = None) -> dict:
    """The `explanation` record of one file for class `target` (the file's top class): voice and face
    shares with both counterfactual probability vectors (means over the clips, as the file's own
    probabilities are), and per clip the frame, face-region and voice-moment importances."""
    config = config or ExplainConfig()
    if len(class_names) < 2 or not 0 <= target < len(class_names):
        raise DferError(f"explain: no class {target} among {len(class_names)} to explain (two or more needed)")
    if not len(clips.videos):
        raise DferError("explain: no clips with a face to explain")
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


def _slice(clips: FileClips, a: int, b: int) -> FileClips:
    return FileClips(clips.videos[a:b], clips.audios[a:b], np.asarray(clips.frame_times)[a:b],
                      np.asarray(clips.audio_starts)[a:b], clips.has_audio)


def _evidence(model: MMADFER, clips: FileClips, target: int, device: torch.device, precision: str,
              config: ExplainConfig) -> _Evidence:
    video = torch.from_numpy(clips.videos).to(device).permute(0, 1, 4, 2, 3).float().div_(255)
    fbank = torch.from_numpy(np.asarray(clips.audios, np.float32)).to(device).unsqueeze(1)
    silence = torch.from_numpy(model_input(None, 0)).to(device).expand_as(fbank)
    grey = torch.full_like(video, FACE_BASELINE)
    quiet = background(fbank[:, 0], silence[0, 0]).unsqueeze(1) if clips.has_audio else fbank
    # The real inputs and the counterfactuals in one batch. predict's probabilities cannot stand in for
    # the first: a confident call's probability rounds to 1, its log-odds do not.
    videos, fbanks = [video, grey], [fbank, fbank]
    if clips.has_audio:
        videos, fbanks = [*videos, video], [*fbanks, silence]
    with torch.no_grad(), autocast(device, precision):
        out = model(torch.cat(videos), torch.cat(fbanks)).float().cpu().numpy()
    parts = np.split(out, len(videos))
    face, voice = _integrated_gradients(model, (grey, video), (quiet, fbank), target, device, precision,
                                        config.steps, clips.has_audio)
    k, t, s, _ = face.shape
    g, p = s // model.dims.patch_size, model.dims.patch_size
    patches = face.view(k, t, g, p, g, p).sum((3, 5))
    if voice is not None:
        voice = voice.sum(-1).view(k, config.voice_bins, -1).sum(-1).cpu().numpy()
    return _Evidence(parts[0], parts[2] if clips.has_audio else None, parts[1],
                     patches.sum((2, 3)).cpu().numpy(), patches.cpu().numpy(), voice)


def _integrated_gradients(model: MMADFER, video: tuple[torch.Tensor, torch.Tensor],
                          fbank: tuple[torch.Tensor, torch.Tensor], target: int, device: torch.device,
                          precision: str, steps: int, has_audio: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Integrated gradients from (baseline, input) pairs, `steps` midpoints: the contribution of every
    face pixel (colours summed: (K, T, S, S)) and fbank cell ((K, frames, mels), None without audio)
    to the target's log-odds.

    The gradient at the input itself fails on a confident model: where the logit has saturated, a
    feature that decided the call can have a zero or even reversed local slope. Taken at the midpoint
    between baseline and input it sees the feature half present, and on the synthetic tests one
    midpoint agrees with 8-step integration to about 0.02 while costing one forward and backward pass.
    """
    (v0, v1), (a0, a1) = video, fbank
    grad_v, grad_a = torch.zeros_like(v1), torch.zeros_like(a1)
    for i in range(steps):
        alpha = (i + 0.5) / steps
        v = (v0 + alpha * (v1 - v0)).requires_grad_(True)
        a = (a0 + alpha * (a1 - a0)).requires_grad_(has_audio)
        with torch.enable_grad(), autocast(device, precision):
            score = log_odds(model(v, a).float(), target).sum()
        grads = torch.autograd.grad(score, (v, a) if has_audio else (v,))
        grad_v += grads[0] / steps
        if has_audio:
            grad_a += grads[1] / steps
    with torch.no_grad():
        face = (grad_v * (v1 - v0)).sum(2)
        voice = (grad_a * (a1 - a0))[:, 0] if has_audio else None
    return face, voice


def log_odds(logits: torch.Tensor, target: int) -> torch.Tensor:
    """log(p / (1 - p)) of the target, (K,) from logits (K, C): z_t - logsumexp of the other logits.

    What every part of the explanation measures. Unlike the probability it does not saturate: a call
    at 0.9999 still shows how much each modality, frame or region adds to it, and its gradient does not
    vanish there. Unlike a raw logit it ignores shifts common to all classes, which softmax ignores too.
    """
    others = torch.cat([logits[:, :target], logits[:, target + 1:]], dim=1)
    return logits[:, target] - torch.logsumexp(others, dim=1)


def background(fbank: torch.Tensor, silence: torch.Tensor) -> torch.Tensor:
    """Each clip's background, (K, frames, mels) from (K, frames, mels): the mean spectrum of the quietest
    quarter of its real frames (its pauses), and on zero-padded frames (rows equal to `silence`) the
    frame itself, so that padding gets no importance.

    The voice-moment baseline. Against the no-audio input every frame would differ, room tone and
    pauses too, by about as much as speech does, and since the model's gradient is dense over the
    spectrogram, the saliency would spread evenly over the window; against the background only what
    rises above it, the voice, remains to be credited.
    """
    padded = (fbank == silence).all(-1)
    # Loudness in the energy domain (log-sum-exp of the log-mel energies): a tone in a few bins
    # outweighs the noise in all the others, as it does to the ear.
    loud = torch.logsumexp(fbank.float() * (2 * NORM_STD), -1).masked_fill(padded, torch.inf)
    out = fbank.clone()
    for k in range(len(fbank)):
        real = int((~padded[k]).sum())
        if real:
            quietest = loud[k].argsort()[: max(1, real // 4)]
            out[k, ~padded[k]] = fbank[k, quietest].mean(0)
    return out


def shares(drop_voice: float | None, drop_face: float) -> tuple[float | None, float, bool]:
    """(voice share, face share, undetermined) from the drops in the target's log-odds when the voice
    and when the face are taken away.

    Log-odds, not probabilities: a call at 0.9999 that both modalities support would lose almost no
    probability to either removal, and its shares would be rounding noise. A negative drop means the
    call grew surer without that modality: it argued against the call, so it carries none of it. When
    neither drop reaches MIN_DROP (each modality alone makes the same call as surely, or the call rests
    on neither), no split can be read off: the shares are 0.5 each and flagged undetermined rather than
    made up. Without an audio track the voice share is None and the face carries the whole call.
    """
    if drop_voice is None:
        return None, 1.0, False
    v, f = (d if d >= MIN_DROP else 0.0 for d in (drop_voice, drop_face))
    if v + f == 0:
        return 0.5, 0.5, True
    return v / (v + f), f / (v + f), False


def _support(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The positive part of x, scaled to sum to 1 over `axes`; all zeros when nothing is positive.

    Importance is evidence for the call, as in Grad-CAM: a part that argues against it (a frame whose
    face looks like another emotion) is not what drove it, and counting |x| would show it as if it had.
    An all-zero map says that nothing in that clip's faces (or voice) supports the call.
    """
    a = np.maximum(x.astype(np.float64), 0.0)
    total = a.sum(axis=axes, keepdims=True)
    return np.divide(a, total, out=np.zeros_like(a), where=total > 0)


def _record(ev: _Evidence, clips: FileClips, target: int, class_names: Sequence[str],
            config: ExplainConfig) -> dict:
    def r(x: float) -> float:
        return round(float(x), config.decimals)

    def mean_probs(logits: np.ndarray | None) -> dict[str, float] | None:
        if logits is None:
            return None
        p = torch.from_numpy(logits).softmax(-1).mean(0)
        return {n: r(v) for n, v in zip(class_names, p, strict=True)}

    odds = [None if z is None else log_odds(torch.from_numpy(z), target).numpy()
            for z in (ev.logits, ev.without_voice, ev.without_face)]
    real, no_voice, no_face = odds
    drop_voice = None if no_voice is None else real - no_voice
    drop_face = real - no_face

    def modality(pick: slice | int) -> dict:
        v, f, undetermined = shares(None if drop_voice is None else float(np.mean(drop_voice[pick])),
                                    float(np.mean(drop_face[pick])))
        return {"voice_share": None if v is None else r(v), "face_share": r(f), "undetermined": undetermined}

    probs = mean_probs(ev.logits)
    return {"target": class_names[target], "probability": probs[class_names[target]], **modality(slice(None)),
            "no_audio": not clips.has_audio,
            "without_voice": mean_probs(ev.without_voice), "without_face": mean_probs(ev.without_face),
            "log_odds": {name: None if o is None else r(o.mean()) for name, o in
                         zip(("with_both", "without_voice", "without_face"), odds, strict=True)},
            "method": {**METHOD, "voice_bin_s": r(TARGET_FRAMES * FBANK_SHIFT_S / config.voice_bins),
                       "patch_px": clips.videos.shape[2] // ev.patches.shape[-1]},
            "clips": [{**_clip_maps(ev, clips, k, config), **modality(k)} for k in range(len(clips.videos))]}


def _clip_maps(ev: _Evidence, clips: FileClips, k: int, config: ExplainConfig) -> dict:
    def r(values) -> list:
        return [round(float(x), config.decimals) for x in values]

    regions = _support(ev.patches[k].sum(0), (0, 1))
    entry = {"frame_times": r(clips.frame_times[k]), "frame_importance": r(_support(ev.frames[k], (0,))),
             "face_regions": [r(row) for row in regions], "voice_times": None, "voice_importance": None}
    if ev.voice is not None:
        width = TARGET_FRAMES * FBANK_SHIFT_S / config.voice_bins
        entry["voice_times"] = r(clips.audio_starts[k] + width * (np.arange(config.voice_bins) + 0.5))
        entry["voice_importance"] = r(_support(ev.voice[k], (0,)))
    return entry
