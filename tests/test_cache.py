import json
import shutil

import numpy as np
import pytest
import torch
from conftest import MEDIA
from mediagen import make_video
from PIL import Image
from typer.testing import CliRunner

from dfer_cli import prepare as prepare_module
from dfer_cli.audio import model_input
from dfer_cli.cache import INDEX, CacheDataset, ClipCache
from dfer_cli.cli import app
from dfer_cli.datasets import DfewDataset
from dfer_cli.prepare import PrepareConfig, prepare


@pytest.fixture(scope="module")
def fake_dfew(tmp_path_factory):
    """The official DFEW layout: split CSVs, 224x224 face-frame folders, original clips (some)."""
    root = tmp_path_factory.mktemp("DFEW")
    rng = np.random.default_rng(0)
    rows = {"train": [(1, 1), (2, 3), (3, 7), (4, 2)], "test": [(5, 5), (6, 1)]}
    for split, items in rows.items():
        folder = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
        folder.mkdir(parents=True)
        (folder / "set_1.csv").write_text("video_name,label\n" + "".join(f"{v},{lab}\n" for v, lab in items))
        for video, _ in items:
            frames = root / "Clip" / "clip_224x224" / f"{video:05d}"
            frames.mkdir(parents=True)
            for i in range(1, 21 if video != 3 else 9):  # clip 3 has fewer frames than the model samples
                Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(frames / f"{i:05d}.jpg")
    (root / "Clip" / "original").mkdir()
    make_video(root / "Clip" / "original" / "00001.mp4", 1.0, size=(64, 48))
    return root


def test_prepare_dfew_and_read_back(fake_dfew, tmp_path):
    summary = prepare(DfewDataset(fake_dfew, 1), "train", tmp_path / "train", PrepareConfig(size=32, max_frames=12))
    assert (summary.done, summary.already, summary.skipped) == (4, 0, [])
    cache = ClipCache(tmp_path / "train")
    assert sorted(e["key"] for e in cache.entries) == ["00001", "00002", "00003", "00004"]
    assert dict(zip([e["key"] for e in cache.entries], cache.labels, strict=True)) == {
        "00001": 0, "00002": 2, "00003": 6, "00004": 1}
    clips = {cache.entries[i]["key"]: cache.read(i) for i in range(len(cache))}
    assert clips["00001"].frames.shape == (12, 32, 32, 3) and clips["00003"].frames.shape == (8, 32, 32, 3)
    assert isinstance(clips["00001"].frames, np.memmap) and clips["00001"].frames.dtype == np.uint8
    silent = model_input(None, 0)
    assert not np.allclose(clips["00001"].audio, silent, atol=1e-3)  # its original clip's tone
    np.testing.assert_allclose(clips["00002"].audio, silent, atol=1e-3)  # no original: no-audio input
    assert [e["no_audio"] for e in cache.entries if e["key"] == "00002"] == [True]


def test_interrupted_prepare_resumes_to_the_same_cache(fake_dfew, tmp_path, monkeypatch):
    dataset, config = DfewDataset(fake_dfew, 1), PrepareConfig(size=32, max_frames=12)
    prepare(dataset, "train", tmp_path / "whole", config)
    real, calls = prepare_module.prepare_sample, []

    def dies_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "prepare_sample", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(dataset, "train", tmp_path / "resumed", config)
    assert len(ClipCache(tmp_path / "resumed")) == 2
    with open(tmp_path / "resumed" / INDEX, "a") as f:
        f.write('{"key": "00003", "lab')  # a line cut short by the kill is ignored
    monkeypatch.setattr(prepare_module, "prepare_sample", real)
    summary = prepare(dataset, "train", tmp_path / "resumed", config)
    assert (summary.done, summary.already) == (2, 2)
    whole, resumed = ClipCache(tmp_path / "whole"), ClipCache(tmp_path / "resumed")
    assert sorted(whole.keys) == sorted(resumed.keys)
    for i, e in enumerate(whole.entries):
        j = [x["key"] for x in resumed.entries].index(e["key"])
        np.testing.assert_array_equal(whole.read(i).frames, resumed.read(j).frames)
    assert not [p for p in (tmp_path / "resumed").rglob("*") if ".tmp-" in p.name]


def test_cache_dataset_views(fake_dfew, tmp_path):
    prepare(DfewDataset(fake_dfew, 1), "train", tmp_path, PrepareConfig(size=40, max_frames=32))
    cache = ClipCache(tmp_path)
    test_view = CacheDataset(cache, train=False, size=32)
    video, audio, label = test_view[0]
    assert video.shape == (16, 3, 32, 32) and audio.shape == (1, 512, 128) and video.dtype == torch.float32
    assert video.min() >= 0 and video.max() <= 1 and label == cache.labels[0]
    train_view = CacheDataset(cache, train=True, size=32, seed=1)
    a, b = train_view[1][0], train_view[1][0]
    torch.testing.assert_close(a, b)  # same (seed, epoch, index): same draw
    train_view.set_epoch(1)
    assert not torch.equal(a, train_view[1][0])  # a new epoch draws anew
    assert not torch.equal(CacheDataset(cache, train=False, size=32, position=0.25)[0][0], video)


def test_prepare_train_evaluate_from_a_folder_of_videos(tmp_path):
    """The whole path a user takes with their own labelled videos: prepare, train, evaluate."""
    data = tmp_path / "clips"
    grid = sorted((MEDIA / "grid").glob("*.mpg"))
    for i, path in enumerate(grid[:8]):
        (data / ("calm" if i % 2 else "tense")).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / ("calm" if i % 2 else "tense") / path.name)
    runner = CliRunner()
    cache, run = tmp_path / "cache", tmp_path / "run"
    prep = runner.invoke(app, ["prepare", "--dataset", "folder", "--data", str(data), "--size", "32",
                               "--out", str(cache), "--val-fraction", "0.25"])
    assert prep.exit_code == 0, prep.output
    assert len(ClipCache(cache / "train")) == 6 and len(ClipCache(cache / "val")) == 2
    train = runner.invoke(app, ["train", "--dataset", "folder", "--data", str(data), "--cache", str(cache),
                                "--arch", "tiny", "--size", "32", "--epochs", "1", "--batch-size", "2",
                                "--val-fraction", "0.25", "--out", str(run), "--device", "cpu",
                                "--workers", "0"])
    assert train.exit_code == 0, train.output
    assert (run / "last" / "model.safetensors").is_file() and (run / "log.jsonl").is_file()
    result = runner.invoke(app, ["evaluate", "--weights", str(run / "last"), "--dataset", "folder",
                                 "--data", str(data), "--cache", str(cache), "--val-fraction", "0.25",
                                 "--json", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "uar" in json.dumps(report) and "calm" in json.dumps(report)


def test_tiny_model_learns_class_coded_videos(tmp_path):
    """Real faces (GRID), each class with its own colour tint and its own tone: through prepare,
    train (--arch tiny, CPU) and evaluate, the loss falls and UAR ends well above chance."""
    from mediagen import ffmpeg

    classes = {"red": 300, "green": 900, "blue": 2400}
    grid = sorted((MEDIA / "grid").glob("*.mpg"))
    data = tmp_path / "coded"
    for c, (colour, tone) in enumerate(classes.items()):
        (data / colour).mkdir(parents=True)
        for k in range(6):
            src = grid[(c * 6 + k) % len(grid)]
            ffmpeg("-i", src, "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=16000:duration=3",
                   "-map", "0:v", "-map", "1:a", "-vf", f"drawbox=color={colour}@0.35:t=fill",
                   "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
                   data / colour / f"{k}.mp4")
    runner = CliRunner()
    cache, run = tmp_path / "cache", tmp_path / "run"
    common = ["--dataset", "folder", "--data", str(data), "--cache", str(cache), "--val-fraction", "0.34"]
    prep = runner.invoke(app, ["prepare", "--dataset", "folder", "--data", str(data), "--out", str(cache),
                               "--size", "32", "--val-fraction", "0.34"])
    assert prep.exit_code == 0, prep.output
    train = runner.invoke(app, ["train", *common, "--arch", "tiny", "--size", "32", "--epochs", "12",
                                "--batch-size", "4", "--lr", "3e-3", "--out", str(run), "--device", "cpu",
                                "--workers", "0"])
    assert train.exit_code == 0, train.output
    epochs = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "train_loss" in r]
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"]
    result = runner.invoke(app, ["evaluate", "--weights", str(run / "last"), *common, "--json", "--device", "cpu",
                                 "--workers", "0", "--one-clip"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    uar = report["1-clip"]["uar"]
    assert uar >= 66.0  # chance is 33.3 with three classes
