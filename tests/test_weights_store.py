import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfer_cli import paths
from dfer_cli.errors import DferError, UsageError
from dfer_cli.locks import FileLock
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
        store.import_weights(_dfer_folder(tmp_path / "v2", seed=2), "mine", replace=True)
    assert not (paths.weights_dir() / "mine").exists()  # the state a kill leaves
    torch.testing.assert_close(store.resolve("mine").model.classifier.weight, before)
    assert [e.name for e in store.entries()] == ["mine"] and store.default_name() == "mine"


def test_entries_skip_staging_folders(tmp_path):
    store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    _dfer_folder(paths.weights_dir() / ".other.importing", seed=2)
    assert [e.name for e in store.entries()] == ["mine"]


def test_reimport_replaces_the_entry(tmp_path):
    store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    store.import_weights(_dfer_folder(tmp_path / "v2", seed=2), "mine", replace=True)
    torch.manual_seed(2)
    expected = MMADFER(ModelDims.tiny(num_classes=3)).classifier.weight
    torch.testing.assert_close(store.resolve("mine").model.classifier.weight, expected)
    assert sorted(p.name for p in paths.weights_dir().iterdir()) == ["DEFAULT", "mine"]


def test_an_existing_name_is_refused_unless_replace(tmp_path):
    store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    before = store.resolve("mine").model.classifier.weight.clone()
    with pytest.raises(UsageError, match="mine: a weights entry of this name exists .*--replace"):
        store.import_weights(_dfer_folder(tmp_path / "v2", seed=2), "mine")
    torch.testing.assert_close(store.resolve("mine").model.classifier.weight, before)


def test_an_import_under_a_name_being_written_is_refused(tmp_path):
    busy = "mine: another dfer process is writing this weights entry"
    with FileLock(paths.weights_dir() / ".mine.lock", "held by this test", remove=True), \
            pytest.raises(DferError, match=busy):
        store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "mine")
    assert store.entries() == [] and list(paths.weights_dir().iterdir()) == []


def test_remove_deletes_the_entry_and_the_default_that_named_it(tmp_path):
    store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "one")
    store.import_weights(_dfer_folder(tmp_path / "v2", seed=2), "two")
    assert not store.remove_entry("two") and [e.name for e in store.entries()] == ["one"]
    assert store.remove_entry("one") and store.default_name() is None
    assert list(paths.weights_dir().iterdir()) == []
    with pytest.raises(DferError, match="one: no such weights entry"):
        store.remove_entry("one")


def test_four_concurrent_imports_under_one_name_one_wins(tmp_path):
    """Four `dfer weights import ... --name same` at once: exactly one says it imported, the others give
    one clear line each (the entry exists, or another import is writing it), and the entry is whole."""
    source = _dfer_folder(tmp_path / "v1", seed=1)
    command = [sys.executable, "-m", "dfer_cli", "weights", "import", str(source), "--name", "same"]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(4)]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    winners = [err for rc, err in outcomes if rc == 0]
    assert len(winners) == 1 and "imported" in winners[0], outcomes
    for rc, err in outcomes:
        if rc:
            assert err.count("\n") == 1 and err.startswith("dfer: error: same: "), err
            assert "exists" in err or "another dfer process is writing" in err, err
    assert sorted(p.name for p in paths.weights_dir().iterdir()) == ["DEFAULT", "same"]
    assert sorted(p.name for p in (paths.weights_dir() / "same").iterdir()) == ["dfer.json", "model.safetensors"]


def test_a_name_with_a_trailing_newline_is_refused(tmp_path):
    with pytest.raises(DferError, match="a weights name uses letters"):
        store.import_weights(_dfer_folder(tmp_path / "v1", seed=1), "x\n")
    assert not paths.weights_dir().exists() or list(paths.weights_dir().iterdir()) == []


def test_weights_files_follow_the_umask(tmp_path):
    """A shared weights folder: others may read what the umask lets them (safetensors writes 0600)."""
    old = os.umask(0o022)
    try:
        folder = _dfer_folder(tmp_path / "v1", seed=1)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {"model.safetensors": 0o644,
                                                                           "dfer.json": 0o644}
