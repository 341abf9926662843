"""The audio the model hears: the Kaldi log-mel filterbank (128 bins, 512 frames, normalised), in numpy,
and how loud a wave is."""

# Computed in numpy, following ``torchaudio.compliance.kaldi.fbank``
# step by step: torchaudio no longer installs beside current torch, and kaldi-native-fbank refuses 128
# mel bins at 8 and 16 kHz (some bins catch no FFT bin there; torchaudio keeps them as log(eps) rows,
# so the model was trained with them).

from __future__ import annotations

import numpy as np

# The audio model input: a Kaldi log-mel filterbank of 128 bins, 512 frames of 10 ms, normalised with
# AudioMAE's mean and std.
TARGET_FRAMES = 512
MEL_BINS = 128
NORM_MEAN = -4.2677393
NORM_STD = 4.5689974
SILENCE_DBFS = -60.0
# The sound that the 512 frames of 25 ms every 10 ms cover (5.135 s), rounded up: decoding further is
# waste, as each frame removes its own mean and the rest of a track cannot change those frames.
HEARD_S = 5.2

FRAME_MS = 25.0
SHIFT_MS = 10.0
_PREEMPH = 0.97
_LOW_HZ = 20.0
# torchaudio floors energies at float32's epsilon before the log, whatever the input dtype.
_EPS = float(np.finfo(np.float32).eps)


def _mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)


def _mel_banks(sample_rate: int, fft_size: int) -> np.ndarray:
    """Triangular filters (MEL_BINS, fft_size // 2 + 1), evenly spaced in mel from 20 Hz to Nyquist."""
    low, high = _mel(_LOW_HZ), _mel(sample_rate / 2)
    delta = (high - low) / (MEL_BINS + 1)
    left = low + delta * np.arange(MEL_BINS)[:, None]
    centre, right = left + delta, left + 2 * delta
    mel = _mel(sample_rate / fft_size * np.arange(fft_size // 2))[None, :]
    banks = np.maximum(0.0, np.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)))
    # Kaldi leaves the Nyquist bin out of every filter.
    return np.pad(banks, ((0, 0), (0, 1)))


def fbank(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel filterbank of a mono waveform in [-1, 1], (frames, 128) float32, one frame per 10 ms.

    Equal to ``torchaudio.compliance.kaldi.fbank(wave - wave.mean(), htk_compat=True, use_energy=False,
    window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10, sample_frequency=sample_rate)``.
    A wave shorter than one 25 ms frame gives zero frames.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"fbank needs a mono waveform, got shape {wave.shape}")
    frame = int(sample_rate * FRAME_MS / 1000)
    shift = int(sample_rate * SHIFT_MS / 1000)
    if len(wave) < frame:
        return np.zeros((0, MEL_BINS), np.float32)
    fft_size = 1 << (frame - 1).bit_length()

    frames = np.lib.stride_tricks.sliding_window_view(wave - wave.mean(), frame)[::shift]
    frames = frames - frames.mean(axis=1, keepdims=True)
    # Pre-emphasis treats each frame on its own, repeating its first sample as the one before it.
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - _PREEMPH * previous) * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, n=fft_size)) ** 2
    energies = power @ _mel_banks(sample_rate, fft_size).T
    return np.log(np.maximum(energies, _EPS)).astype(np.float32)


def model_input(wave: np.ndarray | None, sample_rate: int) -> np.ndarray:
    """The (512, 128) float32 audio input: fbank cut or zero-padded to 512 frames, then AudioSet-normalised.

    ``None`` or an empty wave (a video without audio) gives the all-zero fbank, normalised, as in training.
    """
    features = np.zeros((TARGET_FRAMES, MEL_BINS), np.float32)
    if wave is not None and len(wave):
        computed = fbank(wave, sample_rate)[:TARGET_FRAMES]
        features[: len(computed)] = computed
    return ((features - NORM_MEAN) / (2 * NORM_STD)).astype(np.float32)


def rms_dbfs(wave: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for digital silence or an empty wave)."""
    wave = np.asarray(wave, dtype=np.float64)
    if not len(wave):
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(wave))))
    return float(20 * np.log10(rms)) if rms > 0 else float("-inf")


def is_silent(wave: np.ndarray | None) -> bool:
    """True for a missing track or one too quiet to carry speech (RMS below -60 dBFS)."""
    return wave is None or rms_dbfs(wave) < SILENCE_DBFS
