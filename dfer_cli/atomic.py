"""Atomic file writes: a reader (or an interrupted run) sees the old file or the new one, never half of one.

The new content goes to a temporary file in the target's own directory (so the final rename stays on one
filesystem) and `os.replace` swaps it in. No fsync: the goal is never exposing partial files, not
surviving power loss.
"""

from __future__ import annotations

import errno
import os
import re
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
    except BaseException as e:
        full = _no_space(e, target.parent)  # before the unlink frees the space again
        tmp.unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)) from e
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (no newline translation: what you pass is what lands on disk)."""
    atomic_write_bytes(path, text.encode(encoding))


@contextmanager
def staged_dir(target: str | os.PathLike[str], kind: str = "staging") -> Iterator[Path]:
    """Yield an empty folder `.NAME.<kind>` beside `target` to fill; on success it replaces `target`
    (`replace_dir`), on failure (a full disk, say) it is removed and `target` stays as it was. The
    caller keeps a second writer of `target` out (a lock, or one process per run folder)."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.{kind}")
    shutil.rmtree(staging, ignore_errors=True)  # a killed writer's
    try:
        staging.mkdir(parents=True)
        yield staging
        replace_dir(staging, target)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        if e.errno in _NO_SPACE and e.filename and staging in Path(e.filename).parents:
            # Named where it was going: the staging folder is gone.
            raise OSError(e.errno, e.strerror, str(target / Path(e.filename).relative_to(staging))) from e
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


def _no_space(error: BaseException, folder: Path) -> bool:
    """Whether a write failed for want of space: ENOSPC, or a writer's own error that says so
    (safetensors: "... (os error 28)") or says nothing (torch: "unexpected pos") with under 1 MiB
    left on the folder's disk."""
    if isinstance(error, OSError):
        return error.errno in _NO_SPACE
    if not isinstance(error, Exception):
        return False
    said = re.search(r"os error (\d+)", str(error))
    if said:
        return int(said.group(1)) in _NO_SPACE
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
