"""Which files a predict run analyses: files as given, videos found in folders, names made printable."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from dfer_cli.errors import DferWarning, UsageError
from dfer_cli.media import decode


def display_path(path: str | os.PathLike | decode.MediaBytes) -> str:
    """The name a record carries (a file read from a URI: the URI): valid UTF-8 as it is, each byte that
    is not as \\xNN and a backslash as \\\\, so that no two files share a name and each name reads back
    to its bytes (the README says how)."""
    if isinstance(path, decode.MediaBytes):
        return path.name
    return os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def collect_inputs(args: str | os.PathLike | Iterable[str | os.PathLike], recursive: bool = True,
                   extensions: tuple[str, ...] | None = None, from_list: Path | None = None) -> list[str]:
    """Files as given, and the video files found under folders (`extensions`, default: every one dfer
    reads), then those of the list file `from_list`. Entries named like videos that are not regular
    files (folders, dangling links) are kept so that they get an error record; a folder that cannot be
    read is skipped with a DferWarning."""
    found: list[str] = []
    extensions = extensions or decode.VIDEO_EXTENSIONS
    args = [_path(args)] if isinstance(args, str | os.PathLike | bytes) else [_path(a) for a in args]
    args += listed_inputs(from_list) if from_list is not None else []
    if not args:
        raise UsageError(f"--from-list {from_list}: lists no inputs" if from_list is not None
                         else "no inputs: name video files or folders")
    for arg in args:
        if not os.path.isdir(arg):
            found.append(arg)
            continue
        for root, dirs, files in os.walk(arg, onerror=_skipped):
            dirs.sort()
            names = sorted(files) + [d for d in dirs if d.lower().endswith(extensions)]
            found.extend(os.path.join(root, n) for n in names if n.lower().endswith(extensions))
            if not recursive:
                break
            dirs[:] = [d for d in dirs if not d.lower().endswith(extensions) and not d.startswith(".")]
    if not found:
        raise UsageError(f"no video files found in {', '.join(map(display_path, args))} "
                         f"(extensions: {' '.join(extensions)})")
    return found


def _path(arg: object) -> str:
    """One input as a path string; bytes (a video's contents, or an encoded name) and "" are refused."""
    if isinstance(arg, bytes | bytearray):
        raise UsageError(f"an input of {len(arg)} bytes: give a video's path as a str or os.PathLike (for a "
                         "video's contents, write them to a file first)")
    if not isinstance(arg, str | os.PathLike):
        raise UsageError(f"an input of type {type(arg).__name__}: give video files or folders as str or "
                         "os.PathLike")
    path = os.fspath(arg)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise UsageError("an empty path ('') names no file: name video files or folders")
    return path


def listed_inputs(from_list: Path) -> list[str]:
    """The inputs of a list file, one per line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(from_list).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--from-list {from_list}: {getattr(e, 'strerror', None) or e}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _skipped(error: OSError) -> None:
    warnings.warn(f"{display_path(error.filename)}: cannot read this folder ({error.strerror}); its files are "
                  "skipped", DferWarning, stacklevel=2)
