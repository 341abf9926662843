import os
from pathlib import Path

import pytest

# CI clones the project with the workplace's shared/ folder beside it.
SHARED = Path(os.environ.get("DFER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MEDIA = SHARED / "media"
DESIGN = SHARED / "design"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty weights directory, and the process's loaded networks and probes
    start afresh (a probe read from another test's home would not be this one's)."""
    from dfer_cli.runtime import registry

    monkeypatch.setenv("DFER_HOME", str(tmp_path_factory.mktemp("dfer_home")))
    registry.clear()
    yield
    registry.clear()


def save_tiny_weights(folder: Path, image_size: int = 32) -> Path:
    """A random tiny model saved as a dfer weights folder (seed 0): a predict pipeline's weights in
    tests, where only the plumbing is under test."""
    import torch

    from dfer_cli.labels import DFEW_CLASSES
    from dfer_cli.model import MMADFER, ModelDims
    from dfer_cli.weights.format import WeightsConfig, save_dfer

    torch.manual_seed(0)
    model = MMADFER(ModelDims.tiny(image_size=image_size)).eval()
    save_dfer(folder, model, WeightsConfig(model.dims, list(DFEW_CLASSES), provenance={"source": "test: random tiny"}))
    return folder


def without_timings(line: str) -> str:
    """A record as `dfer predict --json` or `--jsonl` prints it, less its timings (which vary run to
    run): the rest byte for byte."""
    import re

    stripped, count = re.subn(r'"timings": \{[^{}]*\}, ?', "", line.strip().rstrip(","))
    assert count == 1, line
    return stripped
