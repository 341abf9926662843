"""Atomic file writes: a reader (or an interrupted run) sees the old file or the new one, never half of one.

The new content goes to a temporary file in the target's own directory (so the final rename stays on one
filesystem) and `os.replace` swaps it in. No fsync: the goal is never exposing partial files, not
surviving power loss.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a not-yet-existing temporary path beside `path`; on success it replaces `path`.

    The caller writes the whole file to the yielded path. If the block raises, the temporary file is
    removed and `path` is left untouched. The parent directory is created if needed. The temporary name
    keeps the target's suffix, so writers that pick a format from the extension still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh random name rather than mkstemp, and the umask's permissions set before the swap: some
    # writers (safetensors) create their file 0600, which others sharing the folder could not read.
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (no newline translation: what you pass is what lands on disk)."""
    atomic_write_bytes(path, text.encode(encoding))


def replace_dir(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Replace the folder `target` by the fully written folder `staging`, never losing both.

    The old folder is moved aside to `.NAME.old` before the new one is renamed in, and deleted only
    afterwards: a kill between the two renames leaves the old content complete at `.NAME.old`, which
    `recover_dir` puts back.
    """
    staging, target = Path(staging), Path(target)
    old = _old(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(target: str | os.PathLike[str]) -> None:
    """Put back the folder that a `replace_dir` killed between its two renames had moved aside."""
    target = Path(target)
    if not target.exists() and _old(target).exists():
        _old(target).rename(target)


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _umask() -> int:
    """The process's umask. Reading it means setting it: to the strictest one meanwhile, so that a file
    another thread creates in that instant is never more open than asked."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
