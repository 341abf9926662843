from pathlib import Path

import pytest
import torch

from dfer_cli import checkpoints
from dfer_cli.checkpoints import WeightsConfig, save_dfer
from dfer_cli.model import MMADFER, ModelDims


def _dfer_folder(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    dims = ModelDims.tiny(num_classes=3)
    return save_dfer(path, MMADFER(dims).eval(), WeightsConfig(dims, ["calm", "joy", "rage"]))


def test_import_killed_between_renames_keeps_the_old_entry(tmp_path, monkeypatch):
    """Bug 3: an import that dies after moving the old entry aside must not lose it."""
    checkpoints.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    before = checkpoints.resolve("mine").model.classifier.weight.clone()
    rename = Path.rename

    def dies_on_the_swap(self, target):
        if self.name.endswith(".importing"):
            raise OSError("killed")
        return rename(self, target)

    with monkeypatch.context() as m, pytest.raises(OSError, match="killed"):
        m.setattr(Path, "rename", dies_on_the_swap)
        checkpoints.import_weights(_dfer_folder(tmp_path / "v2", seed=2), "mine")
    assert not (checkpoints.weights_dir() / "mine").exists()  # the state a kill leaves
    torch.testing.assert_close(checkpoints.resolve("mine").model.classifier.weight, before)
    assert [e.name for e in checkpoints.entries()] == ["mine"] and checkpoints.default_name() == "mine"


def test_entries_skip_staging_folders(tmp_path):
    checkpoints.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    _dfer_folder(checkpoints.weights_dir() / ".other.importing", seed=2)
    assert [e.name for e in checkpoints.entries()] == ["mine"]


def test_reimport_replaces_the_entry(tmp_path):
    checkpoints.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    checkpoints.import_weights(_dfer_folder(tmp_path / "v2", seed=2), "mine")
    torch.manual_seed(2)
    expected = MMADFER(ModelDims.tiny(num_classes=3)).classifier.weight
    torch.testing.assert_close(checkpoints.resolve("mine").model.classifier.weight, expected)
    assert sorted(p.name for p in checkpoints.weights_dir().iterdir()) == ["DEFAULT", "mine"]
