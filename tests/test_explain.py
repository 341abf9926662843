"""Explanations of a tiny model trained on class-coded clips built from real faces (GRID) and synthetic
tones: where the code is the tone, the tint, a time span or a face quadrant, the explanation must
point there."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import MEDIA
from PIL import Image

from dfer_cli.clips.plan import ClipConfig, plan_clips
from dfer_cli.errors import DferError, UsageError
from dfer_cli.explain.evidence import ExplainConfig, FileClips, explain, shares
from dfer_cli.explain.plot import plot_explanation
from dfer_cli.faces import config, detect, follow
from dfer_cli.media import decode
from dfer_cli.media import fbank as media_fbank
from dfer_cli.model import ModelDims
from dfer_cli.train.loop import build_model

CLASSES = ["low", "high"]
TONES = (220.0, 330.0)  # Hz, fundamentals, one per class
DISTRACTORS = (180.0, 270.0, 400.0, 500.0)  # Hz, drawn for either class alike
# Green and purple: they differ in green alone, which skin lacks (GRID faces average 0.59, 0.50, 0.36
# RGB), so an untinted face looks like neither class, measured from the mid-grey baseline.
TINTS = np.array([[0.5, 0.9, 0.5], [0.5, 0.1, 0.5]])
ALPHA = 0.8  # strong: the quadrant case must be learned in a few dozen steps
RATE = 16000
HALF = media_fbank.TARGET_FRAMES // 2
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def face_clips():
    """(train, held-out) lists of (16, 32, 32, 3) uint8 real face crops: 2 clips from each GRID file,
    the last 3 files held out."""
    detector = detect.process_detector(config.FaceConfig())
    crops = []
    for path in sorted((MEDIA / "grid").glob("*.mpg")):
        info = decode.probe(path)
        for plan in plan_clips(info.start_time, info.duration, ClipConfig()):
            frames, _ = decode.read_frames(path, plan.frame_times)
            crops.append(follow.faces_for_clip(frames, detector, config.FaceConfig(), 32).crops)
    return crops[:-6], crops[-6:]


@pytest.fixture(scope="module")
def energies():
    """Mel energies (frames, 128) of each unit-amplitude tone and of white noise, from dfer's own fbank."""
    t = np.arange(int(RATE * 5.2)) / RATE  # a little over 5.12 s: 512 whole fbank frames
    # Voice-like tones: a fundamental and its first five overtones, falling off as 1/k.
    waves = {f: sum(np.sin(2 * np.pi * k * f * t) / k for k in range(1, 7)) for f in TONES + DISTRACTORS}
    waves["noise"] = np.random.default_rng(0).standard_normal(len(t))
    frames = media_fbank.TARGET_FRAMES
    return {k: np.exp(media_fbank.fbank(w, RATE)[:frames].astype(np.float64)) for k, w in waves.items()}


def _fbank(parts: list[tuple[float, slice]], energies: dict, rng: np.random.Generator) -> np.ndarray:
    """The model input of tones (frequency, frames it sounds in) over a noise floor, each at a random
    level: energies of independent sources add. Random levels keep the loudness of the floor and of
    the tones from telling the classes apart."""
    noise = np.roll(energies["noise"], rng.integers(media_fbank.TARGET_FRAMES), axis=0)
    energy = 10 ** rng.uniform(-6, -3) * noise
    for freq, span in parts:
        energy[span] += 10 ** rng.uniform(-2, -0.5) * energies[freq][span]
    fbank = np.log(np.maximum(energy, np.finfo(np.float32).eps))
    return ((fbank - media_fbank.NORM_MEAN) / (2 * media_fbank.NORM_STD)).astype(np.float32)


def _sample(case: str, label: int, base: np.ndarray, energies: dict, rng: np.random.Generator):
    """One clip coded for `label` the way `case` says: video (16, 32, 32, 3) uint8, audio (512, 128)."""
    video = base.astype(np.float32) / 255
    video = np.clip(video * rng.uniform(0.85, 1.15), 0, 1)  # lighting jitter: no face is seen twice alike
    region = {"face": np.s_[:], "late": np.s_[8:], "corner": np.s_[:, :16, :16]}.get(case)
    if region is not None:
        video[region] = (1 - ALPHA) * video[region] + ALPHA * TINTS[label]
    distractor = DISTRACTORS[rng.integers(len(DISTRACTORS))]
    parts = {"tone": [(TONES[label], np.s_[:])],
             "late_tone": [(TONES[label], np.s_[HALF:])]}.get(case, [(distractor, np.s_[:])])
    return (video * 255).round().astype(np.uint8), _fbank(parts, energies, rng)


def _batch(case: str, bases: list, energies: dict, rng: np.random.Generator, n: int):
    labels = rng.integers(len(CLASSES), size=n)
    pairs = [_sample(case, int(y), bases[rng.integers(len(bases))], energies, rng) for y in labels]
    audios = np.stack([a for _, a in pairs])
    # One clip in ten has no sound track, as in DFEW: the model knows the no-audio input.
    audios[rng.random(n) < 0.1] = media_fbank.model_input(None, 0)
    return np.stack([v for v, _ in pairs]), audios, labels


# Training steps per case: the quadrant, a quarter of the face, takes longest to learn.
STEPS = {"tone": 40, "face": 40, "late": 40, "corner": 70, "late_tone": 40}


def _train(case: str, bases: list, energies: dict, batch: int = 8):
    model = build_model(ModelDims.tiny(num_classes=len(CLASSES)), seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    rng = np.random.default_rng(1)
    model.train()
    for _ in range(STEPS[case]):
        videos, audios, labels = _batch(case, bases, energies, rng, batch)
        video = torch.from_numpy(videos).permute(0, 1, 4, 2, 3)
        loss = F.cross_entropy(model(video, torch.from_numpy(audios)[:, None]), torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad()  # so that a test can see that explaining leaves .grad alone
    return model.eval()


def _held_out_files(case: str, held: list, energies: dict, count: int = 4):
    """(label, FileClips) for `count` files of 2 held-out clips each, both classes alike."""
    rng = np.random.default_rng(2)
    files = []
    for i in range(count):
        label = i % len(CLASSES)
        pairs = [_sample(case, label, held[(2 * i + k) % len(held)], energies, rng) for k in range(2)]
        times = np.stack([np.linspace(0.1, 1.6, 16) + 1.5 * k for k in range(2)])
        files.append((label, FileClips(np.stack([v for v, _ in pairs]), np.stack([a for _, a in pairs]),
                                        times, np.array([0.0, 0.5]), has_audio=True)))
    return files


def _call(model, clips: FileClips) -> int:
    with torch.no_grad():
        probs = model(torch.from_numpy(clips.videos).permute(0, 1, 4, 2, 3), torch.from_numpy(clips.audios)[:, None])
    return int(probs.softmax(-1).mean(0).argmax())


@pytest.fixture(scope="module")
def trained(face_clips, energies):
    """case -> (model, [(label, clips, explanation)] of its held-out files); each case trained once."""
    cache = {}

    def get(case: str):
        if case not in cache:
            model = _train(case, face_clips[0], energies)
            files = []
            for label, clips in _held_out_files(case, face_clips[1], energies):
                assert _call(model, clips) == label, case  # the model learned the code: its call is right
                files.append((label, clips, explain(model, clips, label, CLASSES, CPU)))
            cache[case] = model, files
        return cache[case]

    return get


def test_a_tone_coded_call_is_carried_by_the_voice(trained):
    _, files = trained("tone")
    for _, _, e in files:
        assert e["voice_share"] > 0.8, e
        assert e["face_share"] == pytest.approx(1 - e["voice_share"], abs=2e-6)
        # Without the voice, the tone-coded call loses its certainty; without the face it keeps it.
        assert e["log_odds"]["without_voice"] < e["log_odds"]["with_both"] - 1
        assert not e["undetermined"] and not e["no_audio"]


def test_a_tint_coded_call_is_carried_by_the_face(trained):
    _, files = trained("face")
    for _, _, e in files:
        assert e["face_share"] > 0.8, e


def test_frame_importance_finds_the_tinted_frames(trained):
    _, files = trained("late")
    for _, clips, e in files:
        for k, clip in enumerate(e["clips"]):
            assert sum(clip["frame_importance"][8:]) >= 0.8, clip["frame_importance"]
            assert clip["frame_times"] == pytest.approx(clips.frame_times[k], abs=1e-6)


def test_face_regions_find_the_tinted_quadrant(trained):
    _, files = trained("corner")
    for _, _, e in files:
        for clip in e["clips"]:
            assert np.shape(clip["face_regions"]) == (2, 2)  # 32 px faces, 16-px patches
            assert clip["face_regions"][0][0] >= 0.6, clip["face_regions"]


def test_voice_importance_finds_the_late_tone(trained):
    _, files = trained("late_tone")
    for _, clips, e in files:
        for k, clip in enumerate(e["clips"]):
            assert len(clip["voice_times"]) == len(clip["voice_importance"]) == 32
            # Bin centres, 160 ms apart, from the clip's audio window start.
            assert clip["voice_times"][0] == pytest.approx(clips.audio_starts[k] + 0.08)
            assert clip["voice_times"][16] == pytest.approx(clips.audio_starts[k] + 2.64)
            assert sum(clip["voice_importance"][16:]) >= 0.7, clip["voice_importance"]


def test_padding_gets_no_voice_importance(trained, energies):
    """A window longer than the audio is zero-padded with the no-audio input: those bins weigh nothing."""
    model, files = trained("tone")
    label, clips, _ = files[0]
    audios = clips.audios.copy()
    audios[:, 300:] = media_fbank.model_input(None, 0)[300:]
    e = explain(model, FileClips(clips.videos, audios, clips.frame_times, clips.audio_starts, True),
                label, CLASSES, CPU)
    for clip in e["clips"]:
        assert all(v == 0 for v in clip["voice_importance"][19:])  # bins 19+ start at frame 304
        assert sum(clip["voice_importance"][:19]) == pytest.approx(1, abs=1e-4)


def test_explanations_are_deterministic_and_work_under_inference_mode(trained):
    """predict classifies under inference_mode; the explanation must still get its gradients there,
    leave the model's own gradients alone, and give the same JSON every time."""
    model, files = trained("late")
    label, clips, first = files[1]
    with torch.inference_mode():
        again = explain(model, clips, label, CLASSES, CPU)
    assert json.dumps(again) == json.dumps(first)
    assert all(p.grad is None for p in model.parameters())
    for clip in first["clips"]:
        assert sum(clip["frame_importance"]) == pytest.approx(1, abs=1e-4)
        assert np.sum(clip["face_regions"]) == pytest.approx(1, abs=1e-4)
        assert sum(clip["voice_importance"]) == pytest.approx(1, abs=1e-4)
    assert set(first["without_face"]) == set(CLASSES)


def test_a_file_without_audio_has_no_voice_share(trained):
    model, files = trained("face")
    label, clips, _ = files[0]
    silent = np.broadcast_to(media_fbank.model_input(None, 0), clips.audios.shape).copy()
    e = explain(model, FileClips(clips.videos, silent, clips.frame_times, clips.audio_starts, has_audio=False),
                label, CLASSES, CPU)
    assert e["voice_share"] is None and e["no_audio"] and e["without_voice"] is None
    assert e["face_share"] == 1.0 and not e["undetermined"]
    assert all(c["voice_importance"] is None and c["voice_times"] is None for c in e["clips"])


def test_shares_when_a_drop_is_negative_or_neither_is_positive():
    assert shares(0.3, 0.1) == pytest.approx((0.75, 0.25, False))
    assert shares(0.2, -0.1) == (1.0, 0.0, False)  # the face argued against the call: it carries none of it
    assert shares(-0.01, -0.2) == (0.5, 0.5, True)  # flagged, not made up
    assert shares(1e-5, 0.0) == (0.5, 0.5, True)  # rounding noise is no drop
    assert shares(None, 0.4) == (None, 1.0, False)


def test_mismatched_inputs_and_settings_are_errors():
    with pytest.raises(DferError, match="do not line up"):
        FileClips(np.zeros((2, 16, 32, 32, 3), np.uint8), np.zeros((1, 512, 128), np.float32),
                   np.zeros((2, 16)), np.zeros(2), True)
    with pytest.raises(UsageError, match="voice bins"):
        ExplainConfig(voice_bins=30)
    with pytest.raises(UsageError, match="at least 1"):
        ExplainConfig(steps=0)


def test_the_picture_is_one_png_written_atomically(trained, tmp_path):
    model, files = trained("late_tone")
    label, clips, e = files[0]
    plot_explanation(e, clips.videos, clips.audios, tmp_path / "a.png", "a.mp4", "test model")
    silent = FileClips(clips.videos, np.broadcast_to(media_fbank.model_input(None, 0), clips.audios.shape).copy(),
                        clips.frame_times, clips.audio_starts, has_audio=False)
    plot_explanation(explain(model, silent, label, CLASSES, CPU), silent.videos, silent.audios,
                     tmp_path / "b.png", "b.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary files left
    with Image.open(tmp_path / "a.png") as image:
        assert image.format == "PNG" and image.width == 1600 and image.height > 600
