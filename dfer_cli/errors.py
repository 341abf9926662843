"""Errors that dfer reports to the user as a message instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


def one_line(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped as Python writes them (a file
    name may hold a newline), so that a message stays the one line scripts and people expect."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class DferError(Exception):
    """Bad input or environment: the message says what was wrong and what was expected."""


class MediaError(DferError):
    """A media file that cannot be read or decoded."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class UsageError(DferError):
    """The command cannot run as asked (missing weights, conflicting options): exit code 2."""


def check_count(name: str, value: object, least: int) -> None:
    """A UsageError naming the option unless `value` is a whole number (not a bool) of at least `least`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{name.replace('_', '-')} {value!r}: expected a whole number, at least {least}")


class CheckpointError(DferError):
    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


class InvalidCheckpoint(CheckpointError):
    """A file that is no whole checkpoint (cut short, corrupt): a download of it is discarded."""


class DferWarning(UserWarning):
    """Something the user should know that does not stop the run (a folder skipped, an option
    lowered); the CLI shows it as one line."""
