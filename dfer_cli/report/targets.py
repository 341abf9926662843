"""Where a report's or an annotation's files go: one file for one input, else a folder with a file per input
named for it; and the rule that keeps a user's files safe: a path that exists is replaced only when dfer
wrote it (a page with dfer's generator mark, a video with dfer's comment)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import av

from dfer_cli.errors import DferError, UsageError
from dfer_cli.report.document import is_report

COMMENT = "annotated by dfer"  # an annotated video's container comment: a rerun replaces a file that carries it


def is_folder_target(path: Path, count: int, folder: bool | None) -> bool:
    """Whether `path` is to be a folder: an existing folder, or asked for, or several records."""
    if path.is_dir():
        return True
    return folder if folder is not None else count != 1


def names_in_folder(paths: Sequence[str], suffix: str, reserved: Sequence[str] = ()) -> list[str]:
    """A distinct file name per input, from its own name (`talk.mp4` -> `talk` + suffix; a second
    `talk.mp4` from another folder -> `talk-2` + suffix), none of them in `reserved`."""
    taken = {r.lower() for r in reserved}
    names = []
    for path in paths:
        stem = re.sub(r"[^\w.-]+", "_", Path(path).stem).strip("._") or "video"
        name, n = f"{stem}{suffix}", 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}{suffix}"
        taken.add(name.lower())
        names.append(name)
    return names


def check_replaceable(paths: Sequence[Path], ours: Callable[[Path], bool], what: str) -> None:
    """A DferError, before anything is written, for the first path that exists and is not dfer's own."""
    for path in paths:
        if path.is_dir():
            raise DferError(f"{path}: is a folder; name a file for {what}")
        if path.exists() and not ours(path):
            raise DferError(f"{path}: exists and is not {what} dfer wrote; choose another name or remove it")


def check_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise DferError(f"{path}: exists and is not a folder (several inputs write a folder of files)")


def annotated_by_dfer(path: Path) -> bool:
    """Whether the video at `path` carries dfer's comment."""
    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == COMMENT
    except (av.error.FFmpegError, OSError):
        return False


def check_target(path: Path | None, option: str) -> None:
    """A UsageError, before any analysis, when `path` is a file that dfer did not write (the page or the
    video `option` writes)."""
    if path is None or not path.exists() or path.is_dir():
        return
    ours = is_report(path) if option == "--report" else annotated_by_dfer(path)
    if not ours:
        raise UsageError(f"{option} {path}: exists and is not dfer's; choose another name or remove it")
