"""Where dfer keeps its files: $DFER_HOME (else the platform's user data folder) and the folders in it,
and the one rule that turns a name into a safe file name."""

from __future__ import annotations

import os
import re
from pathlib import Path

from platformdirs import user_data_path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def home() -> Path:
    env = os.environ.get("DFER_HOME")
    return Path(env).expanduser() if env else user_data_path("dfer", appauthor=False)


def weights_dir() -> Path:
    """The installed weights entries (`dfer weights list`)."""
    return home() / "weights"


def downloads_dir() -> Path:
    """Where `http(s)://` weights are downloaded to, once per URL."""
    return home() / "downloads"


def cache_dir() -> Path:
    """Prepared clip caches, one per data set and face size (`dfer prepare`)."""
    return home() / "cache"


def probe_file() -> Path:
    """What the precision probe measured on this machine (runtime/device.py), so it runs once."""
    return home() / "cpu-probe.json"


def runs_dir() -> Path:
    """Training runs that were not given an --out folder."""
    return home() / "runs"


def safe_name(text: str) -> str:
    """`text` with every character outside letters, digits, '_', '.' and '-' made '-', trimmed of
    leading and trailing '-' and '.' (may be empty)."""
    return _UNSAFE.sub("-", text).strip("-.")
