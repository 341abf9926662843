"""Where dfer keeps its files: $DFER_HOME (else the platform's user data folder) and the folders in it,
the one rule that turns a name into a safe file name, and what may name a weights entry."""

from __future__ import annotations

import os
import re
from pathlib import Path

from platformdirs import user_data_path

from dfer_cli.errors import UsageError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_ENTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch only: `$` lets a final newline by


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


def is_entry_name(name: str) -> bool:
    """Whether `name` can name a weights entry: letters, digits, '_', '.' and '-', 64 at most, not
    starting with '.' or '-' (staging folders start with a dot)."""
    return _ENTRY.fullmatch(name) is not None


def entry_name(name: str) -> str:
    """`name`, or a UsageError saying what a weights entry name may hold."""
    if not is_entry_name(name):
        raise UsageError(f"{name!r}: a weights name uses letters, digits, '_', '.' and '-' (64 at most); "
                         "choose one with --name")
    return name
