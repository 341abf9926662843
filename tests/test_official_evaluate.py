"""`dfer evaluate` with an official MMA-DFER checkpoint (imported by `dfer weights import`) on a DFEW tree,
against the reference's test pipeline worked out here by hand (spec sections 4, 5, 7 and 10).

The checkpoint holds the golden run's deterministic tensors (tests/reference.py) with one change: its classifier
bias is centred on these clips' features, since as filled it answers "fear" for nearly any input, and a confusion
matrix of one column could not show a wrong frame, label or sound. Every test clip but two has a class of its own,
so the confusion matrix gives each clip's prediction away.
"""

import json

import numpy as np
import torch
from mediagen import ffmpeg
from PIL import Image
from reference import official_state_dict, save_reference_checkpoint
from typer.testing import CliRunner

from dfer_cli.cli.app import app
from dfer_cli.labels import DFEW_CLASSES
from dfer_cli.media import decode
from dfer_cli.media.fbank import model_input
from dfer_cli.weights.official import load_official

SIZE = 112  # the checkpoint's face size: S112_C7
FACES = 224  # DFEW's aligned face frames

# DFEW fold 1 test clips: id -> (DFEW label 1..7, face frames, original clip).
# Original: (file name, seconds, sample rate, tone in Hz); tone None: a clip without an audio stream;
# no original at all: the no-audio input. No clip is labelled 3 (neutral): its recall is null, out of the UAR.
TEST_CLIPS = {
    3: (7, 16, ("00003.mp4", 3.0, 44100, 330)),
    7: (2, 19, ("7.mp4", 2.4, 16000, 880)),  # DFEW's copies sometimes drop the zero padding
    12: (5, 20, ("00012.mp4", 2.0, 44100, None)),
    25: (1, 12, None),  # fewer than 16 frames: all of them, then the last repeated
    31: (6, 64, ("00031.mp4", 6.0, 48000, 523)),  # more frames than a cache keeps; more sound than the model hears
    40: (4, 33, ("00040.mp4", 4.0, 22050, 200)),
    44: (7, 24, ("00044.mp4", 3.6, 44100, 1400)),
}
TRAIN_CLIPS = {1: (6, 16), 2: (2, 17)}  # only there because the split files come in pairs


def reference_picks(n: int) -> list[int]:
    """The reference's test-time frames: the middle one of each of 16 equal segments, in its own floats."""
    if n < 16:
        return [*range(n), *[n - 1] * (16 - n)]
    tick = n / 16
    return [int(tick / 2 + tick * i) for i in range(16)]


def face_frame(clip: int, frame: int, bright: bool) -> np.ndarray:
    """A 224 x 224 RGB frame: two-colour gradients and stripes that differ per clip and per frame, or (not
    bright) a flat, nearly black one. The frames the reference never picks are dark, and so is the last one of a
    clip under 16 frames (the one it repeats), so a wrong pick changes the input a lot: this random-valued model
    hears far more than it sees."""
    rng = np.random.default_rng([clip, frame])
    if not bright:
        return np.broadcast_to(rng.integers(0, 25, 3, dtype=np.uint8), (FACES, FACES, 3)).copy()
    y, x = np.mgrid[0:FACES, 0:FACES] / FACES
    fx, fy = rng.integers(1, 6, 2)
    weight = [x, y, (np.sin(2 * np.pi * (fx * x + fy * y)) + 1) / 2][(clip + frame) % 3][..., None]
    low, high = rng.integers(40, 256, (2, 3))
    return (low + (high - low) * weight).round().astype(np.uint8)


def make_original(path, seconds: float, rate: int, tone: int | None) -> None:
    """An original clip: a small test card, with a sine tone (AAC) or, tone None, no audio stream at all."""
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size=64x64:rate=25:duration={seconds}"]
    if tone:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate={rate}:duration={seconds}"]
    sound = ["-c:a", "aac", "-shortest"] if tone else []
    ffmpeg(*inputs, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *sound, path)


def make_dfew(root) -> dict[int, tuple]:
    """The official DFEW layout, with decodable face frames and original clips; returns the test clips'
    (label, frame folder, original or None)."""
    splits = root / "EmoLabel_DataSplit"
    for folder, clips in (("train(single-labeled)", TRAIN_CLIPS), ("test(single-labeled)", TEST_CLIPS)):
        (splits / folder).mkdir(parents=True)
        rows = "".join(f"{key},{spec[0]}\n" for key, spec in clips.items())  # ids unpadded, as DFEW writes them
        (splits / folder / "set_1.csv").write_text("video_name,label\n" + rows)
    (root / "Clip" / "original").mkdir(parents=True)
    test = {}
    for key, (label, frames, *original) in {**TRAIN_CLIPS, **TEST_CLIPS}.items():
        folder = root / "Clip" / "clip_224x224" / f"{key:05d}"
        folder.mkdir(parents=True)
        picks = set(reference_picks(frames))
        for i in range(frames):
            bright = i in picks and not (frames < 16 and i == frames - 1)
            Image.fromarray(face_frame(key, i, bright)).save(folder / f"{key:05d}_{i + 1:05d}.jpg", quality=90)
        video = None
        if original and original[0]:
            name, seconds, rate, tone = original[0]
            video = root / "Clip" / "original" / name
            make_original(video, seconds, rate, tone)
        if key in TEST_CLIPS:
            test[key] = (label, folder, video)
    return test


def reference_input(folder, video) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip as the reference's test loader gives it: 16 frames, PIL bilinear to S x S, pixel / 255;
    the fbank of the clip's whole first audio channel (its `ffmpeg -i clip.mp4 clip.wav`), else silence."""
    files = sorted(folder.glob("*.jpg"))
    frames = []
    for i in reference_picks(len(files)):
        with Image.open(files[i]) as image:
            frames.append(np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)))
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    wave, rate = decode.read_audio(video) if video is not None else (None, 0)
    return pixels, torch.from_numpy(model_input(wave, rate))[None]


def test_evaluate_an_imported_official_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DFER_HOME", str(tmp_path / "home"))
    test = make_dfew(tmp_path / "DFEW")
    keys = sorted(test)
    labels = np.array([test[k][0] - 1 for k in keys])  # DFEW's 1..7 -> the model's 0..6, same order
    assert [DFEW_CLASSES[i] for i in labels] == ["fear", "sad", "surprise", "happy", "disgust", "angry", "fear"]

    # The expected predictions, from the .pth as the reference saves it and the reference's inputs.
    state = official_state_dict("S112_C7")
    save_reference_checkpoint(tmp_path / "as_filled.pth", state, monkeypatch)
    model = load_official(tmp_path / "as_filled.pth").model
    video, audio = (torch.stack(x) for x in zip(*(reference_input(*test[k][1:]) for k in keys), strict=True))
    assert video.shape == (7, 16, 3, SIZE, SIZE) and audio.shape == (7, 1, 512, 128)
    silent = torch.from_numpy(model_input(None, 0))[None]
    heard = [not torch.equal(a, silent) for a in audio]  # 00012's clip has no audio stream, 00025 no clip
    assert heard == [key not in (12, 25) for key in keys]
    with torch.inference_mode():
        features = model.features(video, audio)
        weight = model.classifier.weight
        bias = -(features @ weight.T).mean(0)
        logits = features @ weight.T + bias
    del model
    state["our_classifier.bias"] = bias.clone()
    save_reference_checkpoint(tmp_path / "MMA-DFER_DFEW_fold1.pth", state, monkeypatch)
    del state

    # A fixture that cannot tell right from wrong is refused: predictions spread over classes, some right and
    # some wrong, and no near-tie that float rounding in another batch could flip.
    top2 = logits.topk(2).values
    assert (top2[:, 0] - top2[:, 1]).min() > 2e-3, logits
    predicted = logits.argmax(1).numpy()
    assert len(set(predicted)) >= 3 and 0 < (predicted == labels).sum() < len(keys), (predicted, labels)

    confusion = np.zeros((7, 7), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    samples = confusion.sum(1)
    recall = [100.0 * confusion[c, c] / samples[c] if samples[c] else None for c in range(7)]
    uar = np.mean([r for r in recall if r is not None])
    war = 100.0 * np.trace(confusion) / len(keys)

    runner = CliRunner()
    imported = runner.invoke(app, ["weights", "import", str(tmp_path / "MMA-DFER_DFEW_fold1.pth"),
                                   "--name", "dfew-112-f1", "--dataset", "dfew", "--fold", "1"])
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(app, ["evaluate", "--weights", "dfew-112-f1", "--dataset", "dfew",
                                 "--data", str(tmp_path / "DFEW"), "--fold", "1", "--json", "--one-clip",
                                 "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    assert "2-clip" not in report
    assert report["weights"]["weights"] == "dfew-112-f1"
    assert report["weights"]["converted_from"] == "mma-dfer-official"
    one = report["1-clip"]
    assert one["class_names"] == list(DFEW_CLASSES)
    assert one["num_samples"] == len(keys)
    assert [c["samples"] for c in one["per_class"]] == samples.tolist() == [1, 1, 0, 1, 1, 1, 2]
    assert one["confusion_matrix"] == confusion.tolist()
    assert [c["recall"] for c in one["per_class"]] == recall  # exact: k / n of the same small counts
    assert one["per_class"][2]["recall"] is None  # no neutral clip: no recall
    assert np.isclose(one["uar"], uar, rtol=0, atol=1e-9) and np.isclose(one["war"], war, rtol=0, atol=1e-9)
