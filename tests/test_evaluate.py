"""The evaluation plumbing: 1-clip vs 2-clip protocols, fold means, JSON and files, and the commands."""

import json
import types

import numpy as np
import pytest
import torch
import typer
from test_train import CLASSES, SyntheticClips
from typer.testing import CliRunner

from dfer_cli.cli.train import evaluate_command, train_command
from dfer_cli.errors import DferError, UsageError
from dfer_cli.labels import DFEW_CLASSES
from dfer_cli.model import ModelDims
from dfer_cli.train import loader, prepare
from dfer_cli.train import loop as train_module
from dfer_cli.train.evaluate import evaluate, mean_over_folds, predict_probs, report_dict, write_outputs
from dfer_cli.train.loop import CHECKPOINT_DIR, build_model
from dfer_cli.train.metrics import evaluate_predictions
from dfer_cli.weights.format import WeightsConfig, save_dfer

CPU = torch.device("cpu")
DIMS = ModelDims.tiny(num_classes=len(CLASSES))


@pytest.fixture(scope="module")
def model():
    return build_model(DIMS, seed=5).eval()


def _views(n: int = 12):
    return lambda position: SyntheticClips(n, DIMS, seed=3, position=position)


def test_two_clips_average_the_probabilities_at_quarter_positions(model):
    result = evaluate(model, _views(), CLASSES, "synthetic", CPU)
    probs = {p: predict_probs(model, _views()(p), CPU) for p in (0.25, 0.5, 0.75)}
    labels = probs[0.5][1]
    one = evaluate_predictions(labels, probs[0.5][0], CLASSES)
    two = evaluate_predictions(labels, (probs[0.25][0] + probs[0.75][0]) / 2, CLASSES)
    assert np.array_equal(result.one_clip.confusion, one.confusion)
    assert np.array_equal(result.two_clips.confusion, two.confusion)
    assert not np.allclose(probs[0.25][0], probs[0.5][0])  # the views really are different clips
    assert list(result.protocols()) == ["1-clip", "2-clip"]
    assert evaluate(model, _views(), CLASSES, "x", CPU, two_clips=False).two_clips is None


def test_views_that_disagree_on_the_videos_are_refused(model):
    def shuffled(position):
        return SyntheticClips(12 if position == 0.25 else 13, DIMS, position=position)

    with pytest.raises(DferError, match="different orders"):
        evaluate(model, shuffled, CLASSES, "x", CPU)


def test_report_json_and_confusion_pngs(model, tmp_path):
    result = evaluate(model, _views(), CLASSES, "synthetic, test", CPU)
    report = report_dict([result], [{"weights": "tiny"}])
    written = write_outputs([result], report, tmp_path / "out")
    assert [p.name for p in written] == ["report.json", "confusion.png", "confusion_2clip.png"]
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["name"] == "synthetic, test" and on_disk["weights"] == {"weights": "tiny"}
    assert on_disk["1-clip"]["num_samples"] == 12 and len(on_disk["2-clip"]["per_class"]) == len(CLASSES)
    assert on_disk["1-clip"]["uar"] == pytest.approx(result.one_clip.uar)
    for png in written[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    folds = [result, evaluate(model, _views(8), CLASSES, "other", CPU)]
    mean = mean_over_folds(folds)
    assert mean["1-clip"]["uar"] == pytest.approx((folds[0].one_clip.uar + folds[1].one_clip.uar) / 2)
    assert [f["name"] for f in mean["2-clip"]["folds"]] == ["synthetic, test", "other"]
    names = [p.name for p in write_outputs(folds, report_dict(folds, [{}, {}]), tmp_path / "folds")]
    assert "fold2_confusion_2clip.png" in names


# --- the commands, on a fake DFEW layout with the clip cache stubbed by synthetic clips ---


@pytest.fixture
def fake_dfew(tmp_path, monkeypatch):
    root = tmp_path / "DFEW"
    for split in ("train", "test"):
        folder = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
        folder.mkdir(parents=True)
        for fold in range(1, 6):
            ids = range(1, 25) if split == "train" else range(100, 112)
            rows = "".join(f"{i},{1 + i % len(CLASSES)}\n" for i in ids)
            (folder / f"set_{fold}.csv").write_text("video_name,label\n" + rows)
    for i in [*range(1, 25), *range(100, 112)]:
        (root / "Clip" / "clip_224x224" / f"{i:05d}").mkdir(parents=True)

    # The commands' cache step is replaced by synthetic clips: 24 train, 12 test.
    def prepare_missing(adapter, split, root, size):
        assert root == tmp_path / "cache"

    def read_split(root, adapter, split):
        labels = np.array([s.label for s in adapter.samples(split)])  # every listed clip usable
        return types.SimpleNamespace(split=split, no_audio=[], labels=labels, root=root)

    def dataset(clips, train, size, seed=0, position=0.5, frame_order="time"):
        dims = ModelDims.tiny(num_classes=7, image_size=size)
        return SyntheticClips(24 if clips.split == "train" else 12, dims, seed=seed, position=position)

    monkeypatch.setattr(prepare, "prepare_missing", prepare_missing)
    monkeypatch.setattr(loader, "read_split", read_split)
    monkeypatch.setattr(loader, "CacheDataset", dataset)
    return root, tmp_path / "cache"


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    return app


def test_train_then_evaluate_through_the_commands(fake_dfew, tmp_path):
    root, cache = fake_dfew
    runner = CliRunner()
    assert "smoke" in " ".join(runner.invoke(_app(), ["train", "--help"]).output.split())
    common = ["--dataset", "dfew", "--data", str(root), "--cache", str(cache)]
    run = tmp_path / "run"
    trained = runner.invoke(_app(), ["train", *common, "--arch", "tiny", "--epochs", "1", "--device", "cpu",
                                     "--workers", "0", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    assert (run / CHECKPOINT_DIR / "model.safetensors").is_file() and (run / "run.json").is_file()
    assert "final checkpoint" in trained.output

    again = runner.invoke(_app(), ["train", "--resume", "--out", str(run), "--epochs", "3"])
    assert isinstance(again.exception, UsageError) and "--epochs" in str(again.exception)
    resumed = runner.invoke(_app(), ["train", "--resume", "--out", str(run), "--device", "cpu",
                                     "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output  # already finished: nothing left to train

    weights = str(run / CHECKPOINT_DIR)
    result = runner.invoke(_app(), ["evaluate", "--weights", weights, *common, "--json", "--device", "cpu",
                                    "--workers", "0", "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "DFEW fold 1, test" and report["1-clip"]["class_names"] == list(DFEW_CLASSES)
    assert report["1-clip"]["num_samples"] == 12 and "2-clip" in report
    assert report["weights"]["trained_by"] == "dfer train"
    assert (tmp_path / "report" / "confusion.png").is_file()

    table = runner.invoke(_app(), ["evaluate", "--weights", weights, *common, "--device", "cpu",
                                   "--workers", "0", "--one-clip"])
    assert table.exit_code == 0 and "UAR" in table.stdout and "disgust" in table.stdout


def test_all_folds_needs_a_pattern_and_reports_the_mean(fake_dfew, tmp_path):
    root, cache = fake_dfew
    dims = ModelDims.tiny(num_classes=7)
    for fold in range(1, 6):
        save_dfer(tmp_path / f"w{fold}", build_model(dims, fold), WeightsConfig(dims, list(DFEW_CLASSES)))
    common = ["evaluate", "--dataset", "dfew", "--data", str(root), "--cache", str(cache), "--device", "cpu",
              "--workers", "0", "--one-clip", "--all-folds"]
    runner = CliRunner()
    refused = runner.invoke(_app(), [*common, "--weights", str(tmp_path / "w1")])
    assert isinstance(refused.exception, UsageError)
    result = runner.invoke(_app(), [*common, "--weights", str(tmp_path / "w{fold}"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    uars = [f["1-clip"]["uar"] for f in report["folds"]]
    assert len(uars) == 5 and report["mean"]["1-clip"]["uar"] == pytest.approx(np.mean(uars))
    assert "2-clip" not in report["mean"]


def _train_args(root, cache, run, *more):
    return ["train", "--dataset", "dfew", "--data", str(root), "--cache", str(cache), "--device", "cpu",
            "--workers", "0", "--out", str(run), *more]


def test_train_refuses_a_folder_that_holds_a_run_and_leaves_its_settings(fake_dfew, tmp_path):
    root, cache = fake_dfew
    runner = CliRunner()
    run = tmp_path / "run"
    assert runner.invoke(_app(), _train_args(root, cache, run, "--arch", "tiny", "--epochs", "1")).exit_code == 0
    settings = (run / "run.json").read_bytes()
    again = runner.invoke(_app(), _train_args(root, cache, run, "--arch", "tiny", "--epochs", "2"))
    assert isinstance(again.exception, DferError) and "already holds a run" in str(again.exception)
    assert (run / "run.json").read_bytes() == settings  # a later --resume still continues the old run

    # A run killed in its first epoch has run.json and no checkpoint yet: refused all the same.
    started = tmp_path / "started"
    started.mkdir()
    (started / "run.json").write_text("{}")
    refused = runner.invoke(_app(), _train_args(root, cache, started, "--arch", "tiny", "--epochs", "1"))
    assert isinstance(refused.exception, DferError) and (started / "run.json").read_text() == "{}"
    assert not (started / CHECKPOINT_DIR).exists()


def test_resume_needs_only_the_run_folder(fake_dfew, tmp_path, monkeypatch):
    """--resume builds the model from RUN_DIR/last (its dims and weights): the weights the run started
    from may be gone by then."""
    root, cache = fake_dfew
    dims = ModelDims.tiny(num_classes=7)
    save_dfer(tmp_path / "init", build_model(dims, 3), WeightsConfig(dims, list(DFEW_CLASSES)))
    run = tmp_path / "run"

    kills = [RuntimeError("killed")]  # the run dies once epoch 1's checkpoint is written

    def plot_then_die(log, path):
        if kills:
            raise kills.pop()

    monkeypatch.setattr(train_module, "plot_training_curves", plot_then_die)
    runner = CliRunner()
    killed = runner.invoke(_app(), _train_args(root, cache, run, "--init-weights", str(tmp_path / "init"),
                                               "--epochs", "2"))
    assert str(killed.exception) == "killed"
    assert json.loads((run / CHECKPOINT_DIR / "dfer.json").read_text())["provenance"]["epoch"] == 1
    (tmp_path / "init").rename(tmp_path / "moved")
    resumed = runner.invoke(_app(), ["train", "--resume", "--out", str(run), "--device", "cpu", "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    config = json.loads((run / CHECKPOINT_DIR / "dfer.json").read_text())
    assert config["provenance"]["epoch"] == 2 and config["provenance"]["init_weights"] == str(tmp_path / "init")


def test_evaluate_states_its_precision(fake_dfew, tmp_path):
    root, cache = fake_dfew
    dims = ModelDims.tiny(num_classes=7)
    save_dfer(tmp_path / "w", build_model(dims, 1), WeightsConfig(dims, list(DFEW_CLASSES)))
    common = ["evaluate", "--weights", str(tmp_path / "w"), "--dataset", "dfew", "--data", str(root), "--cache",
              str(cache), "--device", "cpu", "--workers", "0", "--one-clip"]
    runner = CliRunner()
    exact = json.loads(runner.invoke(_app(), [*common, "--json"]).stdout)
    assert exact["precision"] == "fp32"  # the default: a reproduction is exact
    fast = runner.invoke(_app(), [*common, "--json", "--precision", "bf16"])
    assert fast.exit_code == 0, fast.output
    report = json.loads(fast.stdout)
    assert report["precision"] == "bf16" and report["1-clip"]["num_samples"] == 12
    assert "precision fp32" in runner.invoke(_app(), common).stdout
    bad = runner.invoke(_app(), [*common, "--precision", "fp16"])
    assert isinstance(bad.exception, UsageError) and "fp16" in str(bad.exception)
