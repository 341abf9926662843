"""Weights from a URL, against a local HTTP server on 127.0.0.1."""

import contextlib
import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
import torch
from reference import fill, layout, save_reference_checkpoint
from typer.testing import CliRunner

from dfer_cli import paths
from dfer_cli.cli.app import app
from dfer_cli.errors import CheckpointError, DferError
from dfer_cli.weights import download, store

BLOB = bytes(range(256)) * 1200  # 300 KiB: more than one read chunk of the server
HTML = b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses.</body></html>"


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.routes`: path -> (body bytes or a file Path, extra headers). Honours
    `Range: bytes=N-`; logs (path, Range header, bytes sent) in `server.requests`."""

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        if path == "/broken":
            self.send_error(500, "Internal Server Error")
            return
        body, extra = self.server.routes[path]
        data = body if isinstance(body, bytes) else body.read_bytes()
        asked = self.headers.get("Range")
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and self.server.ranges else 0
        self.send_response(206 if start else 200)
        for key, value in {"Content-Type": "application/octet-stream", **extra}.items():
            self.send_header(key, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if not self.server.no_length:
            self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        sent = data[start:self.server.cut_at] if self.server.cut_at else data[start:]
        self.server.cut_at = None  # a cut connection happens once; the next request gets it all
        self.server.requests.append((path, asked, len(sent)))
        trickle, self.server.trickle = self.server.trickle, False  # once, too
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(0, len(sent), 10 if trickle else len(sent) or 1):  # trickle: 10 bytes every 0.1 s
                self.wfile.write(sent[i:i + 10] if trickle else sent)
                self.wfile.flush()
                time.sleep(0.1 if trickle else 0)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {"/blob.bin": (BLOB, {}),
                    "/download": (BLOB, {"Content-Disposition": 'attachment; filename="MMA_DFER f1.pth"'}),
                    "/page": (HTML, {"Content-Type": "text/html; charset=utf-8"})}
    httpd.requests, httpd.ranges, httpd.cut_at, httpd.trickle, httpd.no_length = [], True, None, False, False
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dfer: error: "), result.output
    return lines[0]


def test_cli_imports_an_official_checkpoint_from_a_url(server, tmp_path, monkeypatch):
    path = tmp_path / "DFEW_fold2.pth"
    # Zeros but for the classifier: the full official layout, without the cost of filling 179M values.
    state = {k: torch.zeros(shape) for k, shape in layout("S112_C7").items()}
    state["our_classifier.weight"] = fill("our_classifier.weight", layout("S112_C7")["our_classifier.weight"])
    save_reference_checkpoint(path, state, monkeypatch)
    server.routes["/models/DFEW_fold2.pth"] = (path, {})
    url = f"{server.url}/models/DFEW_fold2.pth"
    result = CliRunner().invoke(app, ["weights", "import", url, "--fold", "2"])
    assert result.exit_code == 0, result.output
    (entry,) = store.entries()
    assert entry.name == "DFEW_fold2" and entry.is_default and entry.config.fold == 2
    assert entry.config.provenance["imported_from"] == url
    assert entry.config.provenance["converted_from"] == "mma-dfer-official"
    loaded = store.resolve("DFEW_fold2")
    assert loaded.model.dims.image_size == 112
    torch.testing.assert_close(loaded.model.classifier.weight, state["our_classifier.weight"])
    assert not list(paths.downloads_dir().glob("*.part"))


def test_weights_given_as_a_url_are_downloaded_once(server, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, path)  # a whole file, though no MMA-DFER
    server.routes["/tiny.pth"] = (path, {})
    url = f"{server.url}/tiny.pth"
    for _ in range(2):  # converted on each call, from the one download
        with pytest.raises(CheckpointError, match=r"downloads/tiny\.pth-\w+/tiny\.pth: "):
            store.resolve(url)
    assert [r[0] for r in server.requests] == ["/tiny.pth"]
    assert store.entries() == []


def test_a_download_cut_short_without_a_length_is_discarded_not_misread(server, tmp_path):
    """No Content-Length, and the connection ends early: the cut file looks finished. Cut inside a
    pickled name, torch's unpickler reads a global that does not exist and advises weights_only=False."""
    from collections import OrderedDict

    path = tmp_path / "whole.pth"
    torch.save(OrderedDict(x=torch.zeros(100)), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    server.routes["/cut.pth"] = (data, {})
    server.no_length, server.cut_at = True, data.index(b"collections\nOrderedDict") + len(b"collections\nOrd")
    url = f"{server.url}/cut.pth"
    with pytest.raises(CheckpointError) as cut:
        store.resolve(url)
    message = str(cut.value)
    assert "not a valid checkpoint (incomplete download?)" in message and "deleted" in message
    assert "weights_only" not in message and "unpickle" not in message
    assert not [p for p in paths.downloads_dir().rglob("*") if p.is_file()]  # the bad copy is gone
    with pytest.raises(CheckpointError) as whole:  # the next run downloads it again, whole this time
        store.resolve(url)
    assert "incomplete" not in str(whole.value)
    assert [r[2] for r in server.requests] == [server.requests[0][2], len(data)]


def test_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    server.cut_at = 100_000
    url = f"{server.url}/blob.bin"
    with pytest.raises(DferError, match=r"blob\.bin: the download .* run the same command again"):
        download.fetch(url, tmp_path, progress=False)
    part = tmp_path / f"{download.cache_key(url)}.part"
    assert part.read_bytes() == BLOB[:100_000]
    path = download.fetch(url, tmp_path, progress=False)
    assert path.read_bytes() == BLOB and path.name == "blob.bin" and not part.exists()
    assert server.requests == [("/blob.bin", None, 100_000),
                               ("/blob.bin", "bytes=100000-", len(BLOB) - 100_000)]
    assert download.fetch(url, tmp_path, progress=False) == path  # cached by URL
    assert len(server.requests) == 2


def test_a_trickling_download_is_stopped_and_keeps_what_came(server, tmp_path, monkeypatch):
    """A server sending 100 bytes/s kept an import alive forever: under the low-speed limit for its
    span the download stops, and what came is kept for the resume."""
    monkeypatch.setattr(download, "_LOW_SPEED_S", 1.0)
    server.trickle = True
    url = f"{server.url}/blob.bin"
    start = time.monotonic()
    with pytest.raises(DferError, match=r"blob\.bin: the download slowed to \d+ bytes/s for 1 s, and was stopped "
                                        r"at \d+ bytes: run the same command again to resume it"):
        download.fetch(url, tmp_path, progress=False)
    assert time.monotonic() - start < 10
    kept = (tmp_path / f"{download.cache_key(url)}.part").read_bytes()
    assert 50 <= len(kept) < 1000 and kept == BLOB[:len(kept)]
    assert download.fetch(url, tmp_path, progress=False).read_bytes() == BLOB
    assert server.requests[1] == ("/blob.bin", f"bytes={len(kept)}-", len(BLOB) - len(kept))


def test_server_that_ignores_range_starts_over(server, tmp_path):
    server.ranges = False
    url = f"{server.url}/blob.bin"
    (tmp_path / f"{download.cache_key(url)}.part").write_bytes(b"stale bytes")
    assert download.fetch(url, tmp_path, progress=False).read_bytes() == BLOB


def test_wrong_sha256_is_refused_and_nothing_installed(server):
    url = f"{server.url}/blob.bin"
    wrong = "0" * 64
    result = CliRunner().invoke(app, ["weights", "import", url, "--sha256", wrong])
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert url in line and wrong in line and hashlib.sha256(BLOB).hexdigest() in line
    assert store.entries() == [] and not paths.weights_dir().exists()
    assert not [p for p in paths.downloads_dir().rglob("*") if p.is_file()]


def test_server_error_and_no_server_are_one_line(server):
    url = f"{server.url}/broken"
    result = CliRunner().invoke(app, ["weights", "import", url])
    assert result.exit_code == 1 and "HTTP 500" in _one_line_error(result) and url in result.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/w.pth"
    result = CliRunner().invoke(app, ["weights", "import", closed])
    assert result.exit_code == 1 and "cannot download" in _one_line_error(result) and closed in result.output
    assert store.entries() == [] and not paths.weights_dir().exists()


def test_web_page_instead_of_a_file_is_refused(server, tmp_path):
    with pytest.raises(DferError, match=r"/page\?id=x: the server sent a web page, not a file"):
        download.fetch(f"{server.url}/page?id=x", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_file_is_named_from_content_disposition_and_checked(server, tmp_path):
    digest = hashlib.sha256(BLOB).hexdigest()
    path = download.fetch(f"{server.url}/download?id=abc&confirm=t", tmp_path, digest.upper(), progress=False)
    assert path.name == "MMA_DFER-f1.pth" and path.read_bytes() == BLOB
    assert path.parent.name.startswith("abc-")


def test_google_drive_links_become_file_downloads():
    usercontent = "https://drive.usercontent.google.com/download?id=FID&export=download&confirm=t"
    assert download.drive_url("https://drive.google.com/file/d/FID/view?usp=sharing") == usercontent
    assert download.drive_url("https://drive.google.com/uc?id=FID&export=download") == usercontent
    assert download.drive_url("https://drive.usercontent.google.com/download?id=FID&export=download") == \
        usercontent
    assert download.drive_url(usercontent) == usercontent
    assert download.drive_url("https://drive.usercontent.google.com/download?id=FID") == \
        "https://drive.usercontent.google.com/download?id=FID&confirm=t"
    assert download.drive_url("https://example.org/w.pth?id=1") == "https://example.org/w.pth?id=1"
    with pytest.raises(DferError, match="a Google Drive folder, not a file"):
        download.drive_url("https://drive.google.com/drive/folders/FOLDER?usp=sharing")
    assert download.cache_key(usercontent).startswith("FID-")


def test_sha256_of_a_local_file_is_checked(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(BLOB)
    with pytest.raises(DferError, match="w.pth: sha256 is .*: refused"):
        store.import_weights(path, sha256="ab" * 32)
    with pytest.raises(DferError, match="64 hexadecimal digits"):
        store.import_weights(path, sha256="abc")
    assert path.exists() and store.entries() == []


def test_sources_and_the_missing_weights_error_point_to_each_other():
    result = CliRunner().invoke(app, ["weights", "sources"])
    assert result.exit_code == 0
    for text in ("github.com/katerynaCh/MMA-DFER", "drive.google.com/drive/folders/",
                 "id=1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu", "mae_face_pretrain_vit_base.pth",
                 "github.com/FuxiVirtualHuman/MAE-Face/releases", "--audio-encoder"):
        assert text in result.output
    with pytest.raises(DferError, match="dfer weights sources"):
        store.resolve(None)
