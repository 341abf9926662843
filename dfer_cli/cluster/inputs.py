"""A Ray job's inputs: files and folders on a file system every node sees, a list file of them, and URIs
that pyarrow's file systems read (s3://, gs://, hdfs://, file://), whose bytes are decoded from memory."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dfer_cli.errors import MediaError, UsageError
from dfer_cli.media import decode
from dfer_cli.predict.files import collect_inputs, listed_inputs

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Input:
    """One file of the job: `key` says which file it is across runs (its absolute path, or the URI),
    `source` is what the decoding task opens (the path as collected, as plain predict shows it)."""

    key: str
    source: str


def is_uri(name: str) -> bool:
    return _URI.match(name) is not None


def list_inputs(names: Sequence[str], recursive: bool = True, extensions: tuple[str, ...] | None = None,
                from_list: Path | None = None) -> list[Input]:
    """The files named, those found in folders and under URI prefixes, then those of the list file
    `from_list`, each once, in the order given."""
    names = [*names, *(listed_inputs(from_list) if from_list is not None else [])]
    if not names:
        raise UsageError("no inputs: name files, folders or URIs, or --from-list FILE")
    found: dict[str, Input] = {}
    for name in names:
        if is_uri(name):
            sources = [(uri, uri) for uri in _list_uri(name, recursive, extensions)]
        else:
            sources = [(os.path.abspath(p), p) for p in collect_inputs(name, recursive, extensions)]
        for key, source in sources:
            found.setdefault(key, Input(key, source))
    return list(found.values())


def read_source(source: str) -> str | decode.MediaBytes:
    """What the decoders open: a local path as it is, or the bytes behind a URI, read whole."""
    if not is_uri(source):
        return source
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(source)
        with fs.open_input_stream(path) as stream:
            return decode.MediaBytes(source, stream.readall())
    except FileNotFoundError:
        raise MediaError(source, "no such file") from None
    except PermissionError:
        raise MediaError(source, "permission denied") from None
    except (OSError, ValueError) as e:  # pyarrow's errors derive from these
        raise MediaError(source, f"cannot read ({e})") from None


def _list_uri(uri: str, recursive: bool, extensions: tuple[str, ...] | None) -> list[str]:
    """A URI of a file as it is; of a folder (a prefix), the video files under it."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        if info.type != pyarrow.fs.FileType.Directory:
            return [uri]
        entries = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=recursive))
    except (OSError, ValueError) as e:
        raise UsageError(f"{uri}: cannot list ({e})") from None
    scheme = uri.split("://", 1)[0]
    extensions = extensions or decode.VIDEO_EXTENSIONS
    found = sorted(f"{scheme}://{e.path}" for e in entries
                   if e.type == pyarrow.fs.FileType.File and e.path.lower().endswith(extensions))
    if not found:
        raise UsageError(f"no video files found in {uri} (extensions: {' '.join(extensions)})")
    return found
