"""The user's path end to end: labelled videos -> dfer prepare -> dfer train -> dfer evaluate."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from conftest import MEDIA
from mediagen import ffmpeg, make_eight_channels
from typer.testing import CliRunner

from dfer_cli.cli.app import app
from dfer_cli.train.cache import ClipStore


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
                               "--cache", str(cache), "--val-fraction", "0.25"])
    assert prep.exit_code == 0, prep.output
    assert len(ClipStore(cache).entries) == 8
    train = runner.invoke(app, ["train", "--dataset", "folder", "--data", str(data), "--cache", str(cache),
                                "--arch", "tiny", "--size", "32", "--epochs", "1", "--batch-size", "2",
                                "--val-fraction", "0.25", "--out", str(run), "--device", "cpu",
                                "--workers", "0"])
    assert train.exit_code == 0, train.output
    assert (run / "last" / "model.safetensors").is_file() and (run / "log.jsonl").is_file()
    # The command that train suggests scores the held-out split: same val fraction, same cache.
    hint = next(line for line in train.output.splitlines() if line.strip().startswith("dfer evaluate"))
    result = runner.invoke(app, [*shlex.split(hint)[1:], "--json", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "folder clips, val" and report["1-clip"]["num_samples"] == 2
    assert report["1-clip"]["class_names"] == ["calm", "tense"]

    # The README's multi-process launch, as written there: torchrun -m dfer_cli train, gloo on CPU.
    torchrun = Path(sys.executable).parent / "torchrun"
    ddp = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "dfer_cli", "train",
                          "--dataset", "folder", "--data", data, "--cache", cache, "--arch", "tiny", "--size", "32",
                          "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.25", "--out", tmp_path / "ddp",
                          "--device", "cpu", "--workers", "0"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stderr.count("final checkpoint") == 1  # rank 0 alone speaks
    state = torch.load(tmp_path / "ddp" / "last" / "train_state.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["epoch"] == 1


def test_tiny_model_learns_class_coded_videos(tmp_path):
    """Real faces (GRID), each class with its own colour tint and its own tone: through prepare,
    train (--arch tiny, CPU) and evaluate, the loss falls and UAR ends well above chance."""
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
    prep = runner.invoke(app, ["prepare", "--dataset", "folder", "--data", str(data), "--cache", str(cache),
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


def test_train_on_a_class_folder_with_eight_channel_audio_and_resume_it_finished(tmp_path):
    """A 7.1 clip among the class's videos is trained on (reading it killed the process: exit 139),
    and --resume of the finished run says that it is finished, without training again."""
    data = tmp_path / "clips"
    grid = sorted((MEDIA / "grid").glob("*.mpg"))
    for i, path in enumerate(grid[:6]):
        (data / ("calm" if i % 2 else "tense")).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / ("calm" if i % 2 else "tense") / path.name)
    make_eight_channels(data / "calm" / "surround.mkv", grid[6])
    runner = CliRunner()
    common = ["--out", str(tmp_path / "run"), "--device", "cpu", "--workers", "0"]
    train = runner.invoke(app, ["train", "--dataset", "folder", "--data", str(data), "--cache", str(tmp_path / "cache"),
                                "--val-fraction", "0.25", "--arch", "tiny", "--size", "32", "--epochs", "1",
                                "--batch-size", "2", *common])
    assert train.exit_code == 0, train.output
    index = (tmp_path / "cache" / "index.jsonl").read_text()
    assert "surround" in index  # prepared, not left out
    again = runner.invoke(app, ["train", "--resume", *common])
    assert again.exit_code == 0, again.output
    assert f"{tmp_path / 'run'}: the run finished all 1 epochs; nothing to resume" in again.stderr
    assert "training on" not in again.stderr
