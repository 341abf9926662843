"""Where a report's or an annotation's files go: one file for one input, else a folder with a file per input
named for it; and the rule that keeps a user's files safe: a path that exists is replaced only when dfer
wrote it (a page with dfer's generator mark, a video with dfer's comment)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from dfer_cli.errors import DferError


def is_folder_target(path: Path, count: int, folder: bool | None) -> bool:
    """Whether `path` is to be a folder: asked for, or several records, or an existing folder."""
    if folder is not None:
        return folder
    return count != 1 or path.is_dir()


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
            raise DferError(f"{path}: is a folder; name a file for the {what}")
        if path.exists() and not ours(path):
            raise DferError(f"{path}: exists and is not a {what} dfer wrote; choose another name or remove it")


def check_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise DferError(f"{path}: exists and is not a folder (several inputs write a folder of files)")
