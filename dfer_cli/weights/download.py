"""Weights over HTTP(S), with the standard library only: resumable, checked, fetched once per URL.

A download grows in ROOT/KEY.part (KEY: a readable stem plus a hash of the URL). Once complete and
checked it is renamed to ROOT/KEY/FILENAME, so a file there is always whole, and a later fetch of
the same URL returns it without a request. An interrupted download resumes with an HTTP Range request.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import parse_qs, urlencode, urlparse

from dfer_cli import __version__
from dfer_cli.errors import DferError
from dfer_cli.paths import safe_name
from dfer_cli.progress import progress_bar
from dfer_cli.weights.digest import parse_sha256, sha256_mismatch

_CHUNK = 1 << 20
_MIB = float(1 << 20)
_TIMEOUT_S = 60
# A download slower than this many bytes a second over this many seconds is cut off, keeping what came
# (a resume goes on from it): a server trickling 1 byte/s restarts the socket timeout with every byte.
_LOW_SPEED_BPS, _LOW_SPEED_S = 1024, 30.0
_DRIVE_DOWNLOAD = "https://drive.usercontent.google.com/download"




def drive_url(url: str) -> str:
    """A Google Drive file link in the form that serves the file itself; other URLs unchanged.

    Drive answers a large file with a virus-scan page unless the link says `confirm=t`, and its share
    links (`drive.google.com/file/d/ID/view`, `drive.google.com/uc?id=ID`) lead to web pages.
    """
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    query = parse_qs(parsed.query)
    if host == "drive.usercontent.google.com":
        return url if "confirm" in query else f"{url}{'&' if parsed.query else '?'}confirm=t"
    if host != "drive.google.com":
        return url
    if "/folders/" in parsed.path:
        raise DferError(f"{url}: a Google Drive folder, not a file: open it in a browser and use the "
                        "link of one file in it")
    match = re.match(r"/file/d/([^/]+)", parsed.path)
    file_id = match.group(1) if match else query.get("id", [None])[0]
    if file_id is None:
        return url
    return f"{_DRIVE_DOWNLOAD}?{urlencode({'id': file_id, 'export': 'download', 'confirm': 't'})}"


def cache_key(url: str) -> str:
    """The name of the URL's download in the downloads folder: readable, and unique per URL."""
    return f"{_stem(url)}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def fetch(url: str, root: Path, sha256: str | None = None, progress: bool = True) -> Path:
    """The file at `url`, downloaded into `root` once and checked against `sha256` when given.

    A download that does not match `sha256` is deleted and refused. Errors (HTTP status, no
    connection, a web page instead of a file) raise a one-line DferError naming `url`.
    """
    expected = parse_sha256(sha256) if sha256 else None
    source = drive_url(url)
    key = cache_key(source)
    try:
        done = _finished(root / key)
        if done is None:
            part, name = _download(source, root / f"{key}.part", progress)
            _verify(part, expected)
            return _install(part, root / key / name)
        _verify(done, expected)
        return done
    except DferError as e:
        raise DferError(f"{url}: {e}") from None


def discard(path: Path) -> None:
    """Deletes a finished download that turned out to be no valid file, so that the next `fetch`
    downloads it again instead of meeting the bad copy forever."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # its URL's folder, now empty


def _stem(url: str) -> str:
    parsed = urlparse(url)
    stem = parse_qs(parsed.query).get("id", [PurePosixPath(parsed.path).name])[0]
    return safe_name(stem)[:48] or "download"


def _finished(folder: Path) -> Path | None:
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    return files[0] if len(files) == 1 else None


def _install(part: Path, target: Path) -> Path:
    # The folder holds the URL's one finished file; anything else there is a leftover.
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.iterdir():
        stale.unlink()
    part.replace(target)
    return target


def _verify(path: Path, expected: str | None) -> None:
    wrong = expected and sha256_mismatch(path, expected)
    if wrong:
        path.unlink()
        raise DferError(f"{wrong}: refused, and the download deleted")


def _download(url: str, part: Path, progress: bool) -> tuple[Path, str]:
    """Completes `part` from the server, resuming from the bytes it already holds; returns it and the
    file's name."""
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    response = _open(url, start)
    if response is None:  # the part is no prefix of the file (it changed on the server): start over
        start = 0
        response = _open(url, 0)
    with response:
        if response.status != 206:
            start = 0  # the server ignored the Range and sends the whole file
        total = _total(response, start)
        name = _file_name(response, url)
        with open(part, "ab" if start else "wb") as f, progress_bar(
                f"downloading {name}", total / _MIB if total else None, start / _MIB, enabled=progress,
                rate_unit="MiB") as advance:
            size = _copy(response, f, advance)
    if total is not None and size < total:
        raise DferError(f"the download stopped at {size:,} of {total:,} bytes: run the same command again "
                        "to resume it")
    return part, name


def _open(url: str, start: int) -> http.client.HTTPResponse | None:
    """The server's response (None when it cannot resume from byte `start`)."""
    headers = {"User-Agent": f"dfer/{__version__}"} | ({"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and start:
            return None
        raise DferError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DferError(f"cannot download ({e.reason})") from None
    except (OSError, http.client.HTTPException) as e:
        raise DferError(f"cannot download ({type(e).__name__}: {e})") from None
    if response.headers.get_content_type() == "text/html":
        response.close()
        raise DferError("the server sent a web page, not a file (Google Drive does so for a file that is "
                        "not shared publicly, or asks to confirm a virus scan): open the link in a browser")
    return response


def _total(response: http.client.HTTPResponse, start: int) -> int | None:
    """The whole file's size, when the server says it."""
    if response.status == 206:
        span = response.headers.get("Content-Range", "")
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", span.strip())
        if match is None or int(match.group(1)) != start:
            raise DferError(f"asked to resume at byte {start:,}, the server sent {span or 'no Content-Range'}")
        return None if match.group(2) == "*" else int(match.group(2))
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _file_name(response: http.client.HTTPResponse, url: str) -> str:
    """The name the server gives the file (Content-Disposition), else the URL's last part."""
    name = Path(response.headers.get_filename() or "").name
    if not name:
        last = PurePosixPath(urlparse(response.url or url).path).name
        name = last if "." in last else _stem(url)
    return safe_name(name) or _stem(url)


def _copy(response: http.client.HTTPResponse, f: BinaryIO, advance: Callable[[float], None]) -> int:
    """Appends the response body to `f` as it arrives (read1: what came, not a full chunk); returns the
    size `f` reached. Slower than _LOW_SPEED_BPS over _LOW_SPEED_S, it stops, keeping what came."""
    since, came = time.monotonic(), 0
    try:
        while chunk := response.read1(_CHUNK):
            f.write(chunk)
            advance(len(chunk) / _MIB)
            came += len(chunk)
            if (waited := time.monotonic() - since) >= _LOW_SPEED_S:
                if came < _LOW_SPEED_BPS * waited:
                    f.flush()
                    raise DferError(f"the download slowed to {came / waited:,.0f} bytes/s for {waited:.0f} s, "
                                    f"and was stopped at {f.tell():,} bytes: run the same command again to "
                                    "resume it")
                since, came = time.monotonic(), 0
    except (OSError, http.client.HTTPException) as e:
        f.flush()
        raise DferError(f"the download broke off at {f.tell():,} bytes ({type(e).__name__}: {e}): run the "
                        "same command again to resume it") from None
    return f.tell()
