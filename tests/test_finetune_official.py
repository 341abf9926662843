"""`dfer train --init-weights` from an official MMA-DFER checkpoint, through the command line: the
paper's full model (2 x ViT-B/16) fine-tuned on a user's folder of videos with other classes."""

import json
import shutil

import torch
from conftest import MEDIA
from reference import official_state_dict, save_reference_checkpoint
from safetensors.torch import load_file
from typer.testing import CliRunner

from dfer_cli.cli.app import app
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.weights.official import convert_official_state_dict


def test_finetune_an_official_checkpoint_on_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DFER_HOME", str(tmp_path / "home"))
    official = official_state_dict("S112_C7")
    save_reference_checkpoint(tmp_path / "MMA-DFER_fold1.pth", official, monkeypatch)
    data = tmp_path / "mine"
    for i, path in enumerate(sorted((MEDIA / "grid").glob("*.mpg"))[:4]):
        (data / ("calm", "tense")[i % 2]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / ("calm", "tense")[i % 2] / path.name)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", "folder", "--data", str(data), "--val-fraction", "0",
                                      "--init-weights", str(tmp_path / "MMA-DFER_fold1.pth"), "--epochs", "1",
                                      "--batch-size", "2", "--out", str(run), "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "4 clips, 112 px" in result.output  # the checkpoint's face size, read off its tensors

    config = json.loads((run / "last" / "dfer.json").read_text())
    assert config["class_names"] == ["calm", "tense"] and config["dims"]["num_classes"] == 2
    assert config["dims"]["image_size"] == 112 and config["dims"]["width"] == 768
    assert config["provenance"]["init_weights"].endswith("MMA-DFER_fold1.pth")
    tuned, start = load_file(run / "last" / "model.safetensors"), convert_official_state_dict(official)
    assert tuned["classifier.weight"].shape == (2, start["classifier.weight"].shape[1])  # a new head
    # The frozen encoders are the checkpoint's, untouched; the adapters started there and moved.
    for name in ("image.blocks.11.mlp.fc2.weight", "audio.patch_embed.proj.weight"):
        assert torch.equal(tuned[name], start[name]), name
    with torch.device("meta"):
        model = MMADFER(ModelDims(image_size=112, num_classes=2))
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    moved = {k for k in start if not k.startswith("classifier.") and not torch.equal(tuned[k], start[k])}
    assert moved and moved <= trainable, moved - trainable
