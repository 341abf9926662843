"""The job's output folder: rows written as files finish, a run resumed from what is there, one run at a time.

Each flush is one Parquet file, written under a name that starts with "." (which pyarrow's and pandas'
readers skip) and renamed into place, so a reader, and a resumed run, see whole files only; a driver
killed midway loses only the rows not yet flushed."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from dfer_cli.cluster.rows import LAYOUT, table
from dfer_cli.errors import DferError, UsageError
from dfer_cli.locks import FileLock

_LOCK = ".dfer-lock"
_STAGING = ".dfer-part-"
_ROWS = "part-*.parquet"


def holds_rows(folder: Path) -> bool:
    """Whether `folder` is a folder that holds row files (of any run)."""
    return folder.is_dir() and any(folder.glob(_ROWS))


def finished_rows(folder: Path, run: dict) -> dict[str, str]:
    """{input: status} of the rows already in `folder` (none when it does not exist). A folder holding
    anything but a dfer run's files, or rows made with other options, is refused, never mixed into."""
    if not folder.exists():
        return {}
    if not folder.is_dir():
        raise UsageError(f"--output {folder}: exists and is not a folder")
    done: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not (entry.name.startswith("part-") and entry.suffix == ".parquet"):
            raise UsageError(f"--output {folder}: holds {entry.name}, which is not a dfer row file; "
                             "choose an empty or new folder")
        try:
            schema = pq.read_schema(entry)
            meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
            if meta.get("dfer.layout") != LAYOUT:
                raise UsageError(f"--output {entry}: not a dfer predict row file; choose another folder")
            if json.loads(meta.get("dfer.run", "{}")) != run:
                raise UsageError(f"--output {folder}: its rows were made with other weights or options "
                                 f"({meta.get('dfer.run')}); rerun with those, or choose another folder")
            rows = pq.read_table(entry, columns=["input", "status"]).to_pylist()
        except (OSError, ValueError) as e:
            raise DferError(f"{entry}: unreadable row file ({e})") from None
        done.update((r["input"], r["status"]) for r in rows)
    return done


class RowSink:
    """Rows into `folder`: flushed every `every_rows` rows and every `every_seconds` (by a timer, so
    a finished row never waits for the next one), and at `close`. Holds the folder's lock meanwhile,
    so that two runs never write into one folder."""

    def __init__(self, folder: Path, run: dict, every_rows: int, every_seconds: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.run, self.every_rows = folder, run, every_rows
        self._lock = FileLock(folder / _LOCK, f"--output {folder}: another dfer run is writing there",
                              remove=True).acquire()
        for stale in folder.glob(_STAGING + "*"):  # a killed run's unfinished flush
            stale.unlink(missing_ok=True)
        self._rows: list[dict] = []
        self._mutex = threading.Lock()
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, args=(every_seconds,), daemon=True)
        self._timer.start()
        self.written = 0

    def add(self, row: dict) -> None:
        with self._mutex:
            self._raise()
            self._rows.append(row)
            if len(self._rows) >= self.every_rows:
                self._flush()

    def close(self) -> None:
        self._stop.set()
        self._timer.join()
        try:
            with self._mutex:
                self._raise()
                self._flush()
        finally:
            self._lock.release()

    def _tick(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            with self._mutex:
                try:
                    self._flush()
                except BaseException as e:  # raised in the driver's thread at its next add or close
                    self._error = e
                    return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _flush(self) -> None:
        if not self._rows:
            return
        name = f"part-{time.time_ns():020d}-{secrets.token_hex(4)}.parquet"
        staging = self.folder / f"{_STAGING}{name}"
        try:
            pq.write_table(table(self._rows, self.run), staging)
            os.replace(staging, self.folder / name)
        except OSError as e:
            staging.unlink(missing_ok=True)
            raise DferError(f"{self.folder}: {e.strerror or e}") from None
        self.written += len(self._rows)
        self._rows = []
