from pathlib import Path

import pytest
import torch

from dfer_cli import paths
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.weights import store
from dfer_cli.weights.format import WeightsConfig, save_dfer


def _dfer_folder(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    dims = ModelDims.tiny(num_classes=3)
    return save_dfer(path, MMADFER(dims).eval(), WeightsConfig(dims, ["calm", "joy", "rage"]))


def test_import_killed_between_renames_keeps_the_old_entry(tmp_path, monkeypatch):
    """Bug 3: an import that dies after moving the old entry aside must not lose it."""
    store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    before = store.resolve("mine").model.classifier.weight.clone()
    rename = Path.rename

    def dies_on_the_swap(self, target):
        if self.name.endswith(".importing"):
            raise OSError("killed")
        return rename(self, target)

    with monkeypatch.context() as m, pytest.raises(OSError, match="killed"):
        m.setattr(Path, "rename", dies_on_the_swap)
        store.import_weights(_dfer_folder(tmp_path / "v2", seed=2), "mine")
    assert not (paths.weights_dir() / "mine").exists()  # the state a kill leaves
    torch.testing.assert_close(store.resolve("mine").model.classifier.weight, before)
    assert [e.name for e in store.entries()] == ["mine"] and store.default_name() == "mine"


def test_entries_skip_staging_folders(tmp_path):
    store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    _dfer_folder(paths.weights_dir() / ".other.importing", seed=2)
    assert [e.name for e in store.entries()] == ["mine"]


def test_reimport_replaces_the_entry(tmp_path):
    store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    store.import_weights(_dfer_folder(tmp_path / "v2", seed=2), "mine")
    torch.manual_seed(2)
    expected = MMADFER(ModelDims.tiny(num_classes=3)).classifier.weight
    torch.testing.assert_close(store.resolve("mine").model.classifier.weight, expected)
    assert sorted(p.name for p in paths.weights_dir().iterdir()) == ["DEFAULT", "mine"]
