"""Where speech is in a sound track: silero-vad (its TorchScript model from the wheel) over every channel.

``speech_segments`` answers (start, end) seconds from the wave's start. The wave is resampled to 16 kHz in numpy.
"""

from __future__ import annotations

import importlib.util
import math
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfer_cli.runtime import registry
from dfer_cli.runtime.pool import single_thread

VAD_RATE = 16000
_WINDOW = 512  # samples per silero-vad decision at 16 kHz (32 ms)


@dataclass(frozen=True)
class VadConfig:
    """silero-vad's own defaults (get_speech_timestamps), kept so that its published behaviour holds."""

    threshold: float = 0.5
    neg_threshold: float = 0.35  # silero's default: threshold - 0.15 ends a segment (hysteresis)
    min_speech_s: float = 0.25
    min_silence_s: float = 0.1
    pad_s: float = 0.03
    # Channels this alike (correlation of the 16 kHz signals) are one channel: plain stereo costs one run.
    same_channel_r: float = 0.995


_lock = threading.Lock()


def _model_path() -> Path:
    # find_spec locates the wheel without importing it: silero_vad's __init__ sets torch's thread count to 1,
    # which would throttle the rest of the process.
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("silero-vad is not installed (pip install 'silero-vad>=6')")
    return Path(spec.origin).parent / "data" / "silero_vad.jit"


@registry.cached("voice activity")
def vad_model() -> torch.jit.ScriptModule:
    """The TorchScript silero-vad model, loaded once per process (runtime/registry.py)."""
    with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; silero ships only TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(_model_path()), map_location="cpu")
    model.eval()
    return model


def resample(wave: np.ndarray, rate: int, target: int = VAD_RATE, taps: int = 16) -> np.ndarray:
    """``wave`` (..., samples) at ``target`` Hz: a Hann-windowed sinc low-passed at the lower Nyquist.

    Polyphase: with target / rate = up / down in lowest terms, output j + up * m reads the input from
    floor(j * down / up) + down * m on with the same kernel, so each of the ``up`` phases is one matrix product.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if rate == target:
        return wave
    g = math.gcd(int(rate), int(target))
    up, down = target // g, rate // g
    cutoff = min(1.0, target / rate)  # low-pass at the lower Nyquist, as a fraction of the input Nyquist
    half = int(np.ceil(taps / cutoff))  # a wider kernel when decimating keeps the transition band as narrow
    n_in = wave.shape[-1]
    n_out = n_in * up // down
    padded = np.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(half, half + down + 1)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half, axis=-1)
    out = np.empty((*wave.shape[:-1], n_out), dtype=np.float32)
    offsets = np.arange(-half + 1, half + 1)
    for phase in range(min(up, n_out)):
        base, frac = divmod(phase * down, up)
        d = frac / up - offsets  # distance of each tap from the output instant, in input samples
        kernel = cutoff * np.sinc(cutoff * d) * (0.5 + 0.5 * np.cos(np.pi * d / (half + 1)))
        count = len(range(phase, n_out, up))
        # windows[..., i, :] holds input i - half .. i + half - 1, so i = base + 1 gives input base + offsets.
        rows = windows[..., base + 1:base + 1 + down * count:down, :]
        # einsum's own loop rather than BLAS: in predict's process, where torch's threads are busy too, OpenBLAS
        # threading this product took 0.35-0.44 s per 64 s of audio, einsum 0.06 s (0.015-0.035 s alone).
        out[..., phase::up] = np.einsum("...k,k->...", rows, kernel.astype(np.float32))
    return out


def speech_probabilities(wave16: np.ndarray) -> np.ndarray:
    """silero-vad's speech probability per 32-ms window for each row of ``wave16`` (rows, samples) at 16 kHz."""
    x = torch.from_numpy(np.ascontiguousarray(wave16, dtype=np.float32))
    if x.ndim == 1:
        x = x[None]
    if x.shape[-1] < _WINDOW:
        return np.zeros((x.shape[0], 0), dtype=np.float32)
    model = vad_model()
    # One thread: measured 15 ms per second of audio, against 46 ms with two on 2 cores.
    with _lock, torch.inference_mode(), single_thread(torch.device("cpu")):
        # The model keeps its recurrent state between calls: one caller at a time, batch = channels.
        return model.audio_forward(x, VAD_RATE).numpy()


def _distinct_channels(wave16: np.ndarray, same_r: float) -> np.ndarray:
    """The channels that differ from every earlier one; near copies (ordinary stereo, dual mono) are dropped."""
    kept: list[np.ndarray] = []
    for channel in wave16:
        energy = float(np.dot(channel, channel))
        if energy <= 0:
            continue  # digital silence on this channel says nothing
        duplicate = any(
            np.dot(channel, other) / np.sqrt(energy * np.dot(other, other) + 1e-20) > same_r for other in kept
        )
        if not duplicate:
            kept.append(channel)
    return np.stack(kept) if kept else wave16[:1]


def _segments_from_probs(probs: np.ndarray, n_samples: int, config: VadConfig) -> list[tuple[float, float]]:
    # silero's get_speech_timestamps state machine, on windows: start above threshold, end after
    # min_silence below neg_threshold, drop short ones, pad and merge.
    min_silence = config.min_silence_s * VAD_RATE
    min_speech = config.min_speech_s * VAD_RATE
    pad = int(config.pad_s * VAD_RATE)
    found: list[list[int]] = []
    triggered, start, temp_end = False, 0, 0
    for i, p in enumerate(probs):
        at = i * _WINDOW
        if p >= config.threshold:
            temp_end = 0
            if not triggered:
                triggered, start = True, at
        elif triggered and p < config.neg_threshold:
            temp_end = temp_end or at
            if at - temp_end >= min_silence:
                if temp_end - start > min_speech:
                    found.append([start, temp_end])
                triggered, temp_end = False, 0
    if triggered and n_samples - start > min_speech:
        found.append([start, n_samples])
    merged: list[list[int]] = []
    for start, end in found:
        start, end = max(0, start - pad), min(n_samples, end + pad)
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s / VAD_RATE, e / VAD_RATE) for s, e in merged]


def speech_segments(
    wave: np.ndarray, sample_rate: int, config: VadConfig = VadConfig()
) -> list[tuple[float, float]]:
    """Speech as (start, end) seconds from the wave's start; ``wave`` is (samples,) or (channels, samples).

    A window is speech when any distinct channel says so (max of the probabilities), so a voice on one channel
    only, or two voices one per channel, are found; identical channels are run once.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or wave.shape[-1] == 0:
        return []
    wave16 = _distinct_channels(resample(wave, sample_rate), config.same_channel_r)
    probs = speech_probabilities(wave16)
    if probs.shape[-1] == 0:
        return []
    return _segments_from_probs(probs.max(axis=0), wave16.shape[-1], config)


def speech_seconds(segments: list[tuple[float, float]]) -> float:
    """Total length of ``segments`` in seconds."""
    return float(sum(end - start for start, end in segments))
