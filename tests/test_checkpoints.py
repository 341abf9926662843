import os

import numpy as np
import pytest
import torch
from reference import TAGS, golden, inputs, layout, official_state_dict, save_reference_checkpoint
from typer.testing import CliRunner

from dfer_cli.cli.app import app
from dfer_cli.errors import CheckpointError
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.weights import store
from dfer_cli.weights.format import WeightsConfig, build_loaded, load_dfer, save_dfer
from dfer_cli.weights.official import convert_official_state_dict, dims_from_official, load_encoders, load_official
from dfer_cli.weights.store import load_any


@pytest.mark.parametrize("tag", TAGS)
def test_reference_golden(tag, tmp_path, monkeypatch):
    """The reference's own logits, from an official-layout checkpoint file through the converter."""
    g = golden()
    path = tmp_path / "mma_dfer.pth"
    save_reference_checkpoint(path, official_state_dict(tag), monkeypatch)
    loaded = load_official(path)
    size, classes = int(tag[1:4]), int(tag.split("_C")[1])
    assert (loaded.model.dims.image_size, loaded.model.dims.num_classes) == (size, classes)
    video, audio = inputs(g, tag)
    with torch.no_grad():
        logits = loaded.model(video, audio)
        for gate in loaded.model.gates():
            gate.zero_()
        logits0 = loaded.model(video, audio)
        features0 = loaded.model.features(video, audio)
    np.testing.assert_allclose(logits.numpy(), g[f"logits_{tag}"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits0.numpy(), g[f"logits_gates0_{tag}"], rtol=0, atol=1e-4)
    assert np.abs(g[f"logits_{tag}"] - g[f"logits_gates0_{tag}"]).max() > 1e-3
    # The fixture's mtt_cls was captured during the zero-gate run (classifier(mtt_cls) equals
    # logits_gates0, not logits), so it is compared with the zero-gate features.
    np.testing.assert_allclose(features0.numpy(), g[f"mtt_cls_{tag}"], rtol=0, atol=1e-4)


def test_bare_state_dict_loads(tmp_path):
    sd = official_state_dict("S112_C7")
    torch.save(sd, tmp_path / "bare.pt")
    loaded = load_any(tmp_path / "bare.pt")
    assert loaded.model.dims.image_size == 112
    torch.testing.assert_close(loaded.model.classifier.weight, sd["our_classifier.weight"])
    assert loaded.config.class_names[0] == "happy"


def test_crafted_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"module.x": torch.zeros(1)}, "recorder": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_any(path)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_any(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_any(tmp_path / "missing.pth")


def _meta_official(tag: str) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in layout(tag).items()}


def test_every_official_name_converts_and_validates():
    sd = _meta_official("S160_C11")
    dims = dims_from_official(sd)
    assert (dims.image_size, dims.num_classes) == (160, 11)
    converted = convert_official_state_dict(sd)
    assert len(converted) == 500 - 2 - 2 - 4  # heads (2 x 2) and unused norms (2 x 2) dropped
    build_loaded(dims, converted, "official")


def test_missing_or_mismatched_tensor_is_named():
    sd = convert_official_state_dict(_meta_official("S112_C7"))
    dims = ModelDims(image_size=112)
    missing = dict(sd)
    del missing["fusion.3.audio_gate"]
    with pytest.raises(CheckpointError, match=r"missing tensor fusion\.3\.audio_gate"):
        build_loaded(dims, missing, "ckpt")
    wrong = dict(sd)
    wrong["temporal.fc1.weight"] = torch.empty(1000, 512, device="meta")
    with pytest.raises(CheckpointError, match=r"shape mismatch for temporal\.fc1\.weight \(1000, 512\)"):
        build_loaded(dims, wrong, "ckpt")


def test_unknown_tensor_in_official_checkpoint(tmp_path):
    sd = official_state_dict("S112_C7")
    sd["image_encoder.extra_adapter.weight"] = torch.zeros(3)
    torch.save({"state_dict": sd}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="extra_adapter"):
        load_any(tmp_path / "odd.pth")


def _fake_mae(dims: ModelDims, in_chans: int, grid: tuple[int, int], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    donor = MMADFER(dims).image if in_chans == 3 else MMADFER(dims).audio
    sd = {k: torch.randn(v.shape, generator=g) for k, v in donor.state_dict().items()
          if not k.startswith(("prompts", "progressive"))}
    # The released encoders: a pretraining grid, an MAE decoder and mask token (to be ignored).
    sd["pos_embed"] = torch.full((1, 1 + grid[0] * grid[1], dims.width), 0.25)
    sd["pos_embed"][0, 0] = 7.0
    sd["decoder_embed.weight"] = torch.zeros(4, 4)
    sd["mask_token"] = torch.zeros(1, 1, dims.width)
    return {"model": sd}


def test_pretrained_encoders_load_with_resampled_positions(tmp_path):
    dims = ModelDims.tiny(image_size=48)
    torch.save(_fake_mae(dims, 3, (14, 14), 1), tmp_path / "mae_face.pth")
    torch.save(_fake_mae(dims, 1, (64, 8), 2), tmp_path / "audiomae.pth")
    model = MMADFER(dims)
    untouched = load_encoders(model, tmp_path / "mae_face.pth", tmp_path / "audiomae.pth")
    assert untouched == []
    image_pos, audio_pos = model.image.pos_embed, model.audio.pos_embed
    assert image_pos.shape == (1, 1 + 9 + 6, 64) and audio_pos.shape == (1, 1 + 256 + 6, 64)
    # Bicubic resampling keeps a constant grid constant and the CLS position untouched.
    torch.testing.assert_close(image_pos[0, 1:10], torch.full((9, 64), 0.25))
    torch.testing.assert_close(audio_pos[0, 1:257], torch.full((256, 64), 0.25))
    assert image_pos[0, 0, 0] == 7.0 and audio_pos[0, 0, 0] == 7.0
    assert 0.5 < image_pos[0, -6:].std() < 1.5  # prompt positions drawn from N(0, 1)
    mae = torch.load(tmp_path / "mae_face.pth")["model"]
    torch.testing.assert_close(model.image.blocks[1].mlp.fc2.weight, mae["blocks.1.mlp.fc2.weight"])


def test_dfer_format_round_trip(tmp_path):
    torch.manual_seed(0)
    dims = ModelDims.tiny(num_classes=3)
    model = MMADFER(dims).eval()
    config = WeightsConfig(dims, ["calm", "joy", "rage"], dataset="folder", fold=None,
                           provenance={"source": "unit test"})
    save_dfer(tmp_path / "w", model, config)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["dfer.json", "model.safetensors"]
    loaded = load_dfer(tmp_path / "w")
    assert loaded.config.class_names == ["calm", "joy", "rage"] and loaded.config.dims == dims
    video, audio = torch.rand(1, 16, 3, 32, 32), torch.randn(1, 1, 512, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(video, audio), model(video, audio))
    assert not loaded.model.image.blocks[0].attn.qkv.weight.requires_grad


def test_cli_import_list_and_resolve(tmp_path, monkeypatch):
    path = tmp_path / "DFEW_fold2.pth"
    save_reference_checkpoint(path, official_state_dict("S112_C7"), monkeypatch)
    runner = CliRunner()
    result = runner.invoke(app, ["weights", "import", str(path), "--name", "dfew-112", "--fold", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0 and "dfew-112" in result.output and "112 px" in result.output
    assert store.default_name() == "dfew-112"
    loaded = store.resolve(None)
    assert loaded.config.fold == 2 and loaded.config.provenance["converted_from"] == "mma-dfer-official"
    g = golden()
    with torch.no_grad():
        logits = loaded.model(*inputs(g, "S112_C7"))
    np.testing.assert_allclose(logits.numpy(), g["logits_S112_C7"], atol=1e-4)


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 10)
    result = runner.invoke(app, ["weights", "import", str(bad)])
    assert result.exit_code == 1
    assert "bad.pth" in result.output and "Traceback" not in result.output
    with pytest.raises(Exception, match="dfer weights import"):
        store.resolve(None)
