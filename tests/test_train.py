"""The training loop on a learnable synthetic task with the tiny model, on CPU."""

import json
import os
import socket
import warnings
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from test_checkpoints import _fake_mae

from dfer_cli.errors import DferError
from dfer_cli.model import ModelDims
from dfer_cli.train.evaluate import predict_probs
from dfer_cli.train.loader import loader_workers
from dfer_cli.train.loop import (
    CHECKPOINT_DIR,
    CURVES_FILE,
    LOG_FILE,
    STATE_FILE,
    RunConfig,
    TrainRecipe,
    build_model,
    finetune_model,
    train,
)
from dfer_cli.train.metrics import evaluate_predictions
from dfer_cli.weights.format import WEIGHTS_FILE, WeightsConfig, load_dfer, save_dfer

CLASSES = ["red", "green", "blue", "grey"]
# Each class has its own face colour and its own band of "loud" mel bins pulsing at its own rate.
COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.5, 0.5, 0.5]])


class SyntheticClips(torch.utils.data.Dataset):
    """Class-coded clips made on the fly, with fresh noise per (seed, epoch, index) like a real
    augmenting data set; `position` (segment position of the frames) shifts the frame noise."""

    def __init__(self, n: int, dims: ModelDims, seed: int = 0, position: float = 0.5) -> None:
        self.n, self.dims, self.seed, self.position, self.epoch = n, dims, seed, position, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        label = i % len(CLASSES)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + i
                                          + int(self.position * 1000) * 7_919)
        d, s = self.dims, self.dims.image_size
        video = 0.4 + 0.2 * torch.rand(d.num_frames, 3, s, s, generator=g)
        q = s // 8
        video[:, :, q:3 * q, q:3 * q] = COLOURS[label][None, :, None, None] + 0.15 * torch.randn(
            d.num_frames, 3, 2 * q, 2 * q, generator=g)
        audio = 0.3 * torch.randn(1, d.audio_frames, d.mel_bins, generator=g)
        band = d.mel_bins // len(CLASSES)
        pulse = torch.sin(torch.arange(d.audio_frames) * (label + 1) * 0.05)[:, None]
        audio[0, :, label * band:(label + 1) * band] += 1.0 + 0.5 * pulse
        return video.clamp(0, 1), audio, label


class GlobalRngClips(SyntheticClips):
    """Augments with the global torch stream, as many data sets do: in a loader worker that stream is
    seeded from the loader's generator, which the loop reseeds per epoch."""

    def __getitem__(self, i: int):
        video, audio, label = super().__getitem__(i)
        return (video * (0.9 + 0.2 * torch.rand(()))).clamp(0, 1), audio, label


def _weights(dims: ModelDims) -> WeightsConfig:
    return WeightsConfig(dims, CLASSES, dataset="synthetic", provenance={"arch": "tiny"})


def _run(tmp_path, name: str, **overrides) -> RunConfig:
    return RunConfig(out=tmp_path / name, device="cpu", workers=0, log_every=2, **overrides)


def test_tiny_model_learns_the_synthetic_task(tmp_path):
    dims = ModelDims.tiny(num_classes=len(CLASSES))
    # A larger lr than the paper's 1e-4 so that 96 steps suffice.
    recipe = TrainRecipe(epochs=8, batch_size=8, lr=3e-3, seed=1)
    model = build_model(dims, recipe.seed)
    val = SyntheticClips(32, dims, seed=99)
    final = train(model, SyntheticClips(96, dims), _weights(dims), recipe, _run(tmp_path, "run"), val_set=val)

    assert final == tmp_path / "run" / CHECKPOINT_DIR
    records = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    epochs = [r for r in records if "train_loss" in r]
    assert [r["epoch"] for r in epochs] == list(range(1, 9))
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"]
    assert epochs[0]["lr"] == pytest.approx(3e-3) and epochs[-1]["lr"] < epochs[0]["lr"]
    assert all(r["samples_per_s"] > 0 for r in records)
    assert sum("loss" in r for r in records) == 8 * 6  # 12 steps per epoch, a record every 2
    assert epochs[-1]["val_uar"] > 60  # chance is 25
    assert (tmp_path / "run" / CURVES_FILE).stat().st_size > 10_000

    # The checkpoint is an ordinary dfer weights folder that predicts as well as the live model.
    loaded = load_dfer(final)
    assert loaded.config.class_names == CLASSES and loaded.config.provenance["epoch"] == 8
    probs, labels = predict_probs(loaded.model, SyntheticClips(32, dims, seed=7), torch.device("cpu"))
    assert evaluate_predictions(labels, probs, CLASSES).uar > 60


def _train_resumable(tmp_path, name, dims, recipe, stop_after=None, resume=False):
    def stop(record):
        if record["epoch"] == stop_after:
            raise KeyboardInterrupt  # what a killed run looks like to the loop

    model = build_model(dims, recipe.seed)
    data = GlobalRngClips(24, dims)
    return train(model, data, _weights(dims), recipe, replace(_run(tmp_path, name, resume=resume), workers=2),
                 on_epoch=stop if stop_after else None)


def test_resume_continues_bit_for_bit(tmp_path):
    # drop_path stays at 0.1: the frozen blocks draw random masks, so the RNG streams must be restored.
    dims = ModelDims.tiny(num_classes=len(CLASSES))
    assert dims.drop_path > 0
    recipe = TrainRecipe(epochs=3, batch_size=8, lr=1e-3)
    straight = _train_resumable(tmp_path, "straight", dims, recipe)
    with pytest.raises(KeyboardInterrupt):
        _train_resumable(tmp_path, "killed", dims, recipe, stop_after=1)
    assert load_dfer(tmp_path / "killed" / CHECKPOINT_DIR).config.provenance["epoch"] == 1
    with pytest.raises(DferError, match="--resume"):
        _train_resumable(tmp_path, "killed", dims, recipe)
    with pytest.raises(DferError, match="same recipe"):
        _train_resumable(tmp_path, "killed", dims, replace(recipe, lr=5e-4), resume=True)
    resumed = _train_resumable(tmp_path, "killed", dims, recipe, resume=True)

    a, b = load_file(straight / WEIGHTS_FILE), load_file(resumed / WEIGHTS_FILE)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_a = torch.load(straight / STATE_FILE, weights_only=True)
    state_b = torch.load(resumed / STATE_FILE, weights_only=True)
    losses = [[r.get("train_loss", r.get("loss")) for r in s["log"]] for s in (state_a, state_b)]
    assert losses[0] == losses[1]
    moments_a, moments_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    assert all(torch.equal(moments_a[i]["exp_avg_sq"], moments_b[i]["exp_avg_sq"]) for i in moments_a)


def test_resume_without_a_checkpoint_and_bad_batches_are_errors(tmp_path):
    dims = ModelDims.tiny(num_classes=len(CLASSES))
    with pytest.raises(DferError, match="nothing to resume"):
        _train_resumable(tmp_path, "empty", dims, TrainRecipe(epochs=1), resume=True)
    model = build_model(dims, 1)
    with pytest.raises(DferError, match="fewer than one batch"):
        train(model, SyntheticClips(4, dims), _weights(dims), TrainRecipe(), _run(tmp_path, "small"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dims = ModelDims.tiny(num_classes=len(CLASSES), drop_path=0.0)
    recipe = TrainRecipe(epochs=1, batch_size=8, lr=1e-3)
    train(build_model(dims, recipe.seed), SyntheticClips(36, dims), _weights(dims), recipe,
          RunConfig(out=out, device="cpu", workers=0))


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """Same global batch (2 ranks x 4 vs 1 x 8): the same clips meet in each step and DDP averages
    the two ranks' mean gradients into the batch mean, so the weights agree to float rounding.

    drop_path is set to 0 for this comparison only: each rank draws stochastic-depth masks for its
    own 4 clips from its own RNG stream, which no single-process stream can reproduce, so with it on
    both runs would be two different (equally valid) random draws rather than one computation.
    """
    mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path / "ddp"), nprocs=2, join=True)
    dims = ModelDims.tiny(num_classes=len(CLASSES), drop_path=0.0)
    recipe = TrainRecipe(epochs=1, batch_size=8, lr=1e-3)
    single = train(build_model(dims, recipe.seed), SyntheticClips(36, dims), _weights(dims), recipe,
                   _run(tmp_path, "single"))

    a, b = load_file(single / WEIGHTS_FILE), load_file(tmp_path / "ddp" / CHECKPOINT_DIR / WEIGHTS_FILE)
    start = build_model(dims, recipe.seed).state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # training did move the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-6, msg=k)
    state = torch.load(tmp_path / "ddp" / CHECKPOINT_DIR / STATE_FILE, weights_only=True)
    assert len(state["rng"]) == 2  # every rank's streams, for an exact resume under torchrun
    single_loss = torch.load(single / STATE_FILE, weights_only=True)["log"][-1]["train_loss"]
    assert state["log"][-1]["train_loss"] == pytest.approx(single_loss, rel=1e-5)


def test_build_model_loads_the_pretrained_encoders(tmp_path):
    dims = ModelDims.tiny(num_classes=len(CLASSES))
    torch.save(_fake_mae(dims, 3, (14, 14), 1), tmp_path / "mae_face.pth")
    torch.save(_fake_mae(dims, 1, (64, 8), 2), tmp_path / "audiomae.pth")
    model = build_model(dims, 1, tmp_path / "mae_face.pth", tmp_path / "audiomae.pth")
    mae = torch.load(tmp_path / "audiomae.pth")["model"]
    assert torch.equal(model.audio.blocks[2].attn.qkv.weight, mae["blocks.2.attn.qkv.weight"])
    assert torch.equal(build_model(dims, 1).classifier.weight, model.classifier.weight)  # same seed
    build_model(dims, 1, image_encoder=tmp_path / "mae_face.pth")  # one branch alone is fine

    del mae["blocks.2.attn.qkv.weight"]
    torch.save({"model": mae}, tmp_path / "partial.pth")
    with pytest.raises(DferError, match="lack 1 frozen tensors"):
        build_model(dims, 1, tmp_path / "mae_face.pth", tmp_path / "partial.pth")


def test_finetuning_replaces_the_classifier_only_when_classes_differ(tmp_path):
    dims = ModelDims.tiny(num_classes=7)
    save_dfer(tmp_path / "w", build_model(dims, 3), WeightsConfig(dims, [f"c{i}" for i in range(7)]))
    same = finetune_model(load_dfer(tmp_path / "w"), 7, seed=1)
    other = finetune_model(load_dfer(tmp_path / "w"), 4, seed=1)
    assert other.classifier.out_features == 4 and other.dims.num_classes == 4
    assert other.classifier.weight.requires_grad
    kept = {k: v for k, v in same.state_dict().items() if not k.startswith("classifier.")}
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in kept.items())
    assert not other.image.blocks[0].attn.qkv.weight.requires_grad


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (3, 2), (4, 3), (5, 4), (64, 4)])
def test_default_loader_workers_follow_the_cores(cores, workers, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert loader_workers() == workers and RunConfig(out=tmp_path).workers == workers


def test_training_on_two_cores_starts_no_more_loader_workers_than_cores(tmp_path, monkeypatch):
    """torch warns when a loader starts more worker processes than the cores this process may use."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    dims = ModelDims.tiny(num_classes=len(CLASSES))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(build_model(dims, 1), SyntheticClips(8, dims), _weights(dims), TrainRecipe(epochs=1),
              RunConfig(out=tmp_path / "run", device="cpu"))
    assert not [w for w in caught if "worker processes" in str(w.message)]
