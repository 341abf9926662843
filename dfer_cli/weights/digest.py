"""SHA-256 of files, and the check that a file is the one a user named."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from dfer_cli.errors import UsageError


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_sha256(text: str) -> str:
    digest = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise UsageError(f"--sha256 {text!r}: expected 64 hexadecimal digits")
    return digest


def sha256_mismatch(path: Path, expected: str) -> str | None:
    """Why `path` is not the file with SHA-256 `expected`, or None when it is."""
    actual = sha256(path)
    return None if actual == expected else f"sha256 is {actual}, expected {expected}"
