import numpy as np
import pytest
from conftest import DESIGN

from dfer_cli.media.fbank import MEL_BINS, NORM_MEAN, NORM_STD, TARGET_FRAMES, fbank, is_silent, model_input, rms_dbfs

RATES = [44100, 16000]


@pytest.fixture(scope="module")
def golden():
    """Outputs of torchaudio.compliance.kaldi.fbank and the reference pipeline (spec section 10)."""
    path = DESIGN / "fbank_golden.npz"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    with np.load(path) as data:
        return dict(data)


@pytest.mark.parametrize("rate", RATES)
def test_fbank_matches_torchaudio(golden, rate):
    ours = fbank(golden[f"wave_{rate}"], rate)
    expected = golden[f"fbank_{rate}"]
    assert ours.shape == expected.shape and ours.dtype == np.float32
    # The reference ran in float32: where an energy sits just above the log(eps) floor (-15.94) its
    # rounding shows; everywhere else the two agree to a few 1e-4.
    above_floor = expected > -15.0
    np.testing.assert_allclose(ours[above_floor], expected[above_floor], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=3e-3)


def test_fbank_keeps_empty_mel_bins_at_16k(golden):
    # At 16 kHz some of the 128 filters catch no FFT bin; torchaudio keeps them as log(eps) columns.
    floor = np.log(np.finfo(np.float32).eps)
    ours = fbank(golden["wave_16000"], 16000)
    empty = np.all(golden["fbank_16000"] == np.float32(floor), axis=0)
    assert empty.any()
    assert np.all(ours[:, empty] == np.float32(floor))


@pytest.mark.parametrize("rate", RATES)
def test_model_input_matches_reference(golden, rate):
    ours = model_input(golden[f"wave_{rate}"], rate)
    assert ours.shape == (TARGET_FRAMES, MEL_BINS) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, golden[f"input_{rate}"], rtol=0, atol=3e-4)


def test_no_audio_input_is_the_reference_silent_input(golden):
    np.testing.assert_array_equal(model_input(None, 44100), golden["input_silent"])
    np.testing.assert_array_equal(model_input(np.zeros(0, np.float32), 16000), golden["input_silent"])


@pytest.mark.parametrize("seconds", [0.01, 1.0, 5.12, 9.0])
def test_model_input_pads_or_cuts_to_512_frames(seconds):
    rate = 16000
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)
    computed = fbank(wave, rate)[:TARGET_FRAMES]
    features = model_input(wave, rate)
    assert features.shape == (TARGET_FRAMES, MEL_BINS)
    np.testing.assert_allclose(features[: len(computed)], (computed - NORM_MEAN) / (2 * NORM_STD), rtol=1e-6)
    np.testing.assert_array_equal(features[len(computed) :], model_input(None, rate)[len(computed) :])


def test_fbank_frame_count_follows_kaldi_snip_edges():
    # 25 ms windows every 10 ms, only whole windows: 1 + (samples - 400) // 160 at 16 kHz.
    assert fbank(np.zeros(399), 16000).shape == (0, MEL_BINS)
    assert fbank(np.ones(16000), 16000).shape == (98, MEL_BINS)


def test_fbank_rejects_multichannel_audio():
    with pytest.raises(ValueError, match="mono"):
        fbank(np.zeros((2, 16000)), 16000)


def test_silence_detection():
    rate = 48000
    t = np.arange(rate) / rate
    speech_level = 0.1 * np.sin(2 * np.pi * 200 * t)  # about -23 dBFS
    hiss = 2e-5 * np.random.default_rng(0).standard_normal(rate)  # about -94 dBFS, like a muted phone track
    assert rms_dbfs(speech_level) == pytest.approx(-23.0, abs=0.1)
    assert not is_silent(speech_level)
    assert is_silent(hiss)
    assert is_silent(np.zeros(rate))
    assert is_silent(None)
    assert rms_dbfs(np.zeros(0)) == float("-inf")


def test_fbank_agrees_with_kaldi_native_fbank(golden):
    """An independent Kaldi implementation (kaldi-native-fbank) as a second witness at 44.1 kHz;
    it refuses 128 mel bins at 16 kHz, which is why dfer computes the fbank itself."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.samp_freq = 44100
    opts.mel_opts.num_bins = MEL_BINS
    opts.use_energy, opts.htk_compat = False, True
    wave = golden["wave_44100"]
    extractor = knf.OnlineFbank(opts)
    extractor.accept_waveform(44100, (wave - wave.mean()).tolist())
    extractor.input_finished()
    theirs = np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])
    np.testing.assert_allclose(fbank(wave, 44100), theirs, rtol=0, atol=2e-3)
