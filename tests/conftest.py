import os
from pathlib import Path

import pytest

# CI clones the project with the workplace's shared/ folder beside it.
SHARED = Path(os.environ.get("DFER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MEDIA = SHARED / "media"
DESIGN = SHARED / "design"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty weights directory."""
    monkeypatch.setenv("DFER_HOME", str(tmp_path_factory.mktemp("dfer_home")))
