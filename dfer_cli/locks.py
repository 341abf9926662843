"""Advisory locks that keep a second writer out (a prepared cache, a weights entry being imported):
taken at once or refused, never waited for."""

from __future__ import annotations

import os
from pathlib import Path

from dfer_cli.errors import DferError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two concurrent writers are then the user's business
    fcntl = None


class FileLock:
    """An exclusive lock on the file `path` (created when missing), held from `acquire` to `release`;
    with `remove`, the file is deleted on release, so that a folder keeps no trace of it."""

    def __init__(self, path: str | os.PathLike, busy: str, remove: bool = False) -> None:
        self.path, self.busy, self.remove = Path(path), busy, remove
        self._file = None

    def acquire(self) -> FileLock:
        """Take the lock, or raise DferError(`busy`) when another process holds it."""
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = open(self.path, "a")  # noqa: SIM115 - held until release()
            if fcntl is None:
                break
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                raise DferError(self.busy) from None
            # A holder with `remove` may have deleted the file between our open and our lock: the lock
            # is then on a name no one else sees; take it again on the file now there.
            if not self.remove or _same_file(file, self.path):
                break
            file.close()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is None:
            return
        if self.remove:
            self.path.unlink(missing_ok=True)  # before closing: the next holder creates a fresh file
        self._file.close()  # closing releases the lock
        self._file = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(file, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return False
