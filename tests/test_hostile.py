"""Hostile and odd inputs: each test names what a hostile user tried and what must happen."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA, save_tiny_weights
from mediagen import ffmpeg, make_eight_channels, make_voice_on_channel
from typer.testing import CliRunner

import dfer_cli as dfer
from dfer_cli.api import UntrainedWeightsWarning
from dfer_cli.cli.app import app
from dfer_cli.errors import DferError, UsageError
from dfer_cli.media import decode, fbank
from dfer_cli.predict import frontend
from dfer_cli.runtime.pool import bounded_map
from dfer_cli.train.datasets import Sample
from dfer_cli.train.prepare import PrepareConfig, prepare_clip

GRID = MEDIA / "grid" / "bbaf2n.mpg"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny", 48)


@pytest.fixture(scope="module")
def model(tiny_weights):
    return dfer.load_model(tiny_weights, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def one_channel_voices(tmp_path_factory):
    folder = tmp_path_factory.mktemp("channels")
    return {"right": make_voice_on_channel(folder / "right.mkv", GRID, "stereo", "FR"),
            "centre": make_voice_on_channel(folder / "centre.mkv", GRID, "5.1", "FC", music=("FL", "FR"))}


def test_predict_hears_a_voice_on_any_channel_and_says_which(model, one_channel_voices):
    right, centre = model.predict([one_channel_voices["right"], one_channel_voices["centre"]], workers=0)
    assert right.status == centre.status == "ok"
    assert not right.flags["silent_audio"] and right.flags["audio_channel"] == "FR"
    # A film mix: the dialogue on the centre, music on the front pair; the centre alone is heard.
    assert not centre.flags["silent_audio"] and centre.flags["audio_channel"] == "FC"
    (plain,) = model.predict([GRID], workers=0)
    assert plain.flags["audio_channel"] == "FL"  # ordinary stereo: channel 0, as before


def test_unnamed_channels_are_named_by_their_place(model, tmp_path):
    """PCM in MKV records no layout: FFmpeg names its channels NONE, the record c0, c1, ..."""
    right = make_voice_on_channel(tmp_path / "right.mkv", GRID, "stereo", "FR", codec="pcm_s16le")
    assert decode.probe(right).audio_layout == ("c0", "c1")
    (record,) = model.predict([right], workers=0)
    assert record.flags["audio_channel"] == "c1" and not record.flags["silent_audio"]


def test_predict_gives_the_model_the_voice_channel(model, one_channel_voices, tmp_path):
    """The audio input is the voice's: the voice on the right gets the call of that voice on the left
    (up to AAC's coding of each side, ~1e-4), not that of silence (~1e-2 away with these weights)."""
    left = make_voice_on_channel(tmp_path / "left.mkv", GRID, "stereo", "FL")
    right, left = model.predict([one_channel_voices["right"], left], workers=0)
    assert right.flags["audio_channel"] == "FR" and left.flags["audio_channel"] == "FL"
    assert right.probabilities == pytest.approx(left.probabilities, abs=1e-3)


def test_the_training_cache_keeps_channel_0(one_channel_voices):
    sample = Sample("right", 0, one_channel_voices["right"], None, "train")
    _, audio, flags = prepare_clip(sample, "main", PrepareConfig(size=48, workers=0))
    assert flags["silent_audio"] and "audio_channel" not in flags
    np.testing.assert_array_equal(audio, fbank.model_input(*decode.read_audio(sample.video, 0.0, fbank.HEARD_S)))


def _prepare_or_crash(part, **kw):
    """The front end, with a decoder crash on files named crash*: what a worker dying on a file looks like."""
    if os.path.basename(part.path).startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return frontend.guarded_prepare(part, **kw)


def test_a_folder_with_eight_channel_audio_and_a_crashing_file_keeps_every_record(model, tmp_path, monkeypatch):
    """7.1 AAC and 8-channel Opus are read; a file whose worker dies gets its error record, and every
    other file its result (the broken pool had lost them all: `[]`, read as no files)."""
    from dfer_cli.predict import pipeline

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GRID, folder / "a_good.mpg")
    make_eight_channels(folder / "b_aac71.mkv", GRID, "aac")
    make_eight_channels(folder / "c_opus8.mkv", GRID, "libopus")
    shutil.copy(GRID, folder / "crash.mpg")
    shutil.copy(GRID, folder / "d_good.mpg")
    monkeypatch.setattr(pipeline, "guarded_prepare", _prepare_or_crash)
    records = model.predict(folder, workers=2)
    assert [os.path.basename(r.path) for r in records] == ["a_good.mpg", "b_aac71.mkv", "c_opus8.mkv", "crash.mpg",
                                                           "d_good.mpg"]
    assert [r.status for r in records] == ["ok", "ok", "ok", "error", "ok"]
    assert records[3].error == "the worker analysing it died (signal 11)"
    assert not records[1].flags["silent_audio"] and not records[2].flags["silent_audio"]


def test_eight_channel_audio_in_one_process_and_in_the_training_cache(model, tmp_path):
    eight = make_eight_channels(tmp_path / "eight.mkv", GRID, "aac")
    (record,) = model.predict([eight], workers=0)
    assert record.status == "ok" and not record.flags["silent_audio"]
    _, audio, flags = prepare_clip(Sample("eight", 0, eight, None, "train"), "main", PrepareConfig(size=48, workers=0))
    assert not flags["silent_audio"] and audio.shape == (512, 128)


def test_an_error_record_is_not_held_behind_a_partial_batch(model, tmp_path, monkeypatch):
    """A video, then junk: the video's record and the junk's come as soon as the junk is read, not when
    real clips fill a batch or the run ends (a Ctrl-C would have lost them all)."""
    from dfer_cli.predict import pipeline

    junk = [tmp_path / f"junk{i}.mp4" for i in range(3)]
    for j in junk:
        j.write_text("not a video")
    read = []
    prepare = pipeline.guarded_prepare
    monkeypatch.setattr(pipeline, "guarded_prepare", lambda part, **kw: read.append(part.path) or prepare(part, **kw))
    records = model.stream([GRID, *junk], workers=0, batch_size=64)
    first, second = next(records), next(records)
    assert (first.status, second.status) == ("ok", "error") and second.path == str(junk[0])
    assert read == [str(GRID), str(junk[0])]


def test_a_fifo_socket_or_device_gets_an_error_record_not_a_hang(tiny_weights, tmp_path):
    import socket

    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "x.mp4")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.mp4"))
    shutil.copy(GRID, folder / "y.mpg")
    done = subprocess.run([sys.executable, "-m", "dfer_cli", "predict", "--jsonl", "--workers", "0", "--weights",
                           str(tiny_weights), str(folder), "/dev/zero"], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    server.close()
    assert done.returncode == 1, done.stderr
    records = {os.path.basename(r["path"]): r for r in map(json.loads, done.stdout.splitlines())}
    assert records["y.mpg"]["status"] == "ok"
    assert records["x.mp4"]["error"] == "is a named pipe (FIFO), not a regular file"
    assert records["sock.mp4"]["error"] == "is a socket, not a regular file"
    assert records["zero"]["error"] == "is a device, not a regular file"
    assert f"{folder / 'x.mp4'}: is a named pipe (FIFO), not a regular file\n" in done.stderr


def test_a_task_that_stops_delivering_is_cut_off_and_the_rest_go_on():
    """A worker stuck for good (a read that never returns) costs `limit` seconds: its item gets the
    late result, the worker is killed, the items after it are computed by fresh workers."""
    import time

    start = time.monotonic()
    results = list(bounded_map(time.sleep, [0.1, 3600, 0.1, 0.2], workers=1, limit=5, late=lambda s: f"late {s}",
                               lost=_reason))
    assert results == [None, "late 3600", None, None]
    assert time.monotonic() - start < 60


def _die_on(item: str) -> str:
    """A task that kills its own worker the way a crash in C, an os._exit or the OOM killer would."""
    if item == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if item == "exit":
        os._exit(3)
    if item == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return item.upper()


def _reason(item: str, reason: str) -> str:
    return f"{item}: {reason}"


@pytest.mark.parametrize("ordered", [True, False])
def test_a_worker_that_dies_takes_only_its_own_item(ordered):
    items = ["a", "segfault", "b", "exit", "c", "kill", "d"]
    results = list(bounded_map(_die_on, items, workers=2, ordered=ordered, lost=_reason))
    expected = ["A", "segfault: the worker analysing it died (signal 11)", "B",
                "exit: the worker analysing it died (exit status 3)", "C",
                "kill: the worker analysing it died (signal 9)", "D"]
    assert results == expected if ordered else sorted(results) == sorted(expected)


def test_the_time_limit_holds_in_this_process_too(model):
    (late,) = model.predict([GRID], workers=0, time_limit=0.01)
    assert late.status == "error" and late.error.startswith("no result after 0.01 s")


def test_predict_gives_a_file_past_the_time_limit_an_error_record(model):
    (late,) = model.predict([GRID], workers=1, time_limit=0.01)  # a worker's start-up alone takes longer
    assert late.status == "error" and late.error.startswith("no result after 0.01 s")


_RUN_CLI = """
import sys
from dfer_cli.cli.app import main
sys.argv = ["dfer", *sys.argv[1:]]
try:
    main()
finally:
    print("torch loaded" if "torch" in sys.modules else "torch not loaded", file=sys.stderr)
"""


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN_CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize(("args", "says"), [
    (["--name", "two words"], "'two words': a weights name uses letters"),
    (["--name", "x\n"], "'x\\n': a weights name uses letters"),
    (["--sha256", "nothex"], "--sha256 'nothex': expected 64 hexadecimal digits"),
])
def test_weights_import_usage_errors_exit_2_before_torch_loads(tmp_path, args, says):
    done = _cli("weights", "import", str(tmp_path / "some.pth"), *args)
    assert done.returncode == 2, done.stderr
    error, loaded = done.stderr.splitlines()
    assert error.startswith(f"dfer: error: {says}") and loaded == "torch not loaded"


def test_a_window_that_is_not_finite_is_a_usage_error(tiny_weights):
    """--window inf ran for 30 s and then crashed in clips.py (typer's own range check lets inf by)."""
    result = CliRunner().invoke(app, ["predict", str(GRID), "--weights", str(tiny_weights), "--window", "inf"])
    assert result.exit_code == 2, result.output
    assert result.stderr == "dfer: error: window inf: expected a finite number of seconds\n"
    with pytest.raises(UsageError, match="window nan"):
        dfer.PredictConfig(window=float("nan"))


@pytest.mark.parametrize("where", ["/proc/x.png", "folder", "/nonexistent/x.png", "readonly/x.png"])
def test_plot_to_a_place_that_cannot_be_written_is_refused_first(tiny_weights, tmp_path, where):
    """--plot checked before the analysis, not a traceback after it."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "readonly").mkdir(mode=0o555)
    if where.startswith("readonly") and os.access(tmp_path / "readonly", os.W_OK):
        pytest.skip("root writes into a read-only folder")
    target = where if where.startswith("/") else str(tmp_path / where)
    result = CliRunner().invoke(app, ["predict", str(GRID), "--weights", str(tiny_weights), "--window", "1",
                                      "--plot", target])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"dfer: error: --plot {target}: ") and result.stderr.count("\n") == 1
    assert result.stdout == ""  # nothing was analysed


def test_predict_with_stdout_closed_says_so_in_one_line(tiny_weights):
    done = subprocess.run([sys.executable, "-m", "dfer_cli", "predict", str(GRID), "--weights", str(tiny_weights)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)}, preexec_fn=lambda: os.close(1))
    assert done.returncode == 2
    assert done.stderr == "dfer: error: standard output is closed: the records have nowhere to go (redirect it " \
                          "to a file)\n"


def test_a_file_name_with_a_newline_keeps_its_error_on_one_line(tiny_weights, tmp_path):
    (tmp_path / "two\nlines.mp4").write_text("not a video")
    result = CliRunner().invoke(app, ["predict", "--jsonl", "--weights", str(tiny_weights), str(tmp_path)])
    assert result.exit_code == 1
    (record,) = map(json.loads, result.stdout.splitlines())
    assert record["path"] == str(tmp_path / "two\nlines.mp4")  # the record keeps the real name
    assert result.stderr.splitlines() == [f"dfer: {tmp_path}/two\\nlines.mp4: {record['error']}"]


def test_csv_cells_that_look_like_formulas_are_made_text(tiny_weights, tmp_path, monkeypatch):
    import csv

    monkeypatch.chdir(tmp_path)
    name = '=HYPERLINK("evil.example","click").mp4'
    Path(name).write_text("not a video")
    shutil.copy(GRID, "@cmd.mpg")
    result = CliRunner().invoke(app, ["predict", "--csv", "--weights", str(tiny_weights), name, "@cmd.mpg"])
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["path"] for r in rows] == [f"'{name}", "'@cmd.mpg"]
    assert [r["status"] for r in rows] == ["error", "ok"] and float(rows[1]["confidence"]) > 0


def test_an_unreadable_sub_folder_is_named_on_stderr(tiny_weights, tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    shutil.copy(GRID, tmp_path / "a.mpg")
    scandir = os.scandir

    def refuses(path="."):  # chmod 000 would not stop root, who runs some CI
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuses)
    result = CliRunner().invoke(app, ["predict", "--jsonl", "--weights", str(tiny_weights), str(tmp_path)])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1
    assert f"dfer: warning: {tmp_path}/locked: cannot read this folder (Permission denied); its files are " \
           "skipped\n" in result.stderr


def test_workers_beyond_the_cores_are_lowered_and_said(tiny_weights, monkeypatch):
    from dfer_cli.runtime import pool

    monkeypatch.setattr(pool, "usable_cores", lambda: 1)
    result = CliRunner().invoke(app, ["predict", "--jsonl", "--workers", "500", "--weights", str(tiny_weights),
                                      str(GRID)])
    assert result.exit_code == 0, result.output
    assert "dfer: warning: 500 workers asked, 1 started: one per usable core\n" in result.stderr


def test_the_table_cuts_a_long_path_in_the_middle_and_json_keeps_it(monkeypatch):
    import io

    from dfer_cli.results.records import FileResult
    from dfer_cli.results.writers import make_writer

    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe: Rich's 80 columns
    path = "/data/" + "a_rather_long_folder_name/" * 4 + "interview_take_03.mp4"
    result = FileResult(path, label="happy", confidence=0.5, probabilities={"happy": 0.5, "sad": 0.5},
                        flags={"faces_found": 32, "frames": 32})
    lines = {}
    for fmt in ("table", "jsonl", "csv"):
        stream = io.StringIO()
        writer = make_writer(fmt, stream, ["happy", "sad"], False)
        writer.write(result)
        writer.close()
        lines[fmt] = stream.getvalue().splitlines()
    row = [line for line in lines["table"] if "happy" in line and "│" in line]
    assert len(row) == 1 and "/data…take_03.mp4" in row[0]
    assert all(len(line) <= 80 for line in lines["table"])
    assert not [line for line in lines["table"] if "folder_name" in line and line is not row[0]]
    assert json.loads(lines["jsonl"][0])["path"] == path and lines["csv"][1].startswith(path + ",")


def test_no_process_of_a_folder_run_outlives_it(tiny_weights, tmp_path):
    """A benchmark harness waits for the process group: every worker, and the resource tracker that
    spawn's pools start, is gone when dfer exits."""
    for name in ("a", "b", "c"):
        shutil.copy(GRID, tmp_path / f"{name}.mpg")
    run = subprocess.Popen([sys.executable, "-m", "dfer_cli", "predict", "--jsonl", "--workers", "2", "--weights",
                            str(tiny_weights), str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, start_new_session=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert run.wait(timeout=300) == 0 and run.stderr.read() == ""
    group = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(ProcessLookupError):
            group += [pid] if os.getpgid(int(pid)) == run.pid else []
    assert group == []


def test_untrained_weights_are_the_same_on_every_load_and_leave_the_rng_alone():
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        torch.manual_seed(1)
        first = dfer.load_model("untrained", device="cpu", precision="fp32").network.state_dict()
        after = torch.rand(1)
        torch.manual_seed(2)
        second = dfer.load_model("untrained", device="cpu", precision="fp32").network.state_dict()
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(1))  # the caller's random state is untouched
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def grid_4k(tmp_path_factory):
    """GRID's 360x288 speaker scaled 7.5x and centred in a 3840x2160 frame."""
    path = tmp_path_factory.mktemp("4k") / "grid_4k.mp4"
    ffmpeg("-t", "2", "-i", GRID, "-vf", "scale=2700:2160,pad=3840:2160:570:0", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", path)
    return path


def test_a_4k_frame_is_decoded_at_720p_and_the_same_face_is_found(model, grid_4k):
    from dfer_cli.faces.detect import FaceDetector

    scaled, _ = decode.read_frames(grid_4k, [0.5, 1.0])
    whole, _ = decode.read_frames(grid_4k, [0.5, 1.0], max_pixels=None)
    assert scaled.shape == (2, 720, 1280, 3) and whole.shape == (2, 2160, 3840, 3)
    assert decode.frame_size(360, 288) == (360, 288)
    detector = FaceDetector()
    for small, big in zip(detector.detect_batch(scaled), detector.detect_batch(whole), strict=True):
        assert len(small) == len(big) == 1
        small_box = np.array([small[0].x0, small[0].y0, small[0].x1, small[0].y1]) * 3  # 3840 / 1280
        big_box = np.array([big[0].x0, big[0].y0, big[0].x1, big[0].y1])
        assert np.abs(small_box - big_box).max() < 0.01 * (big_box[2] - big_box[0])
    big, small = model.predict([grid_4k, GRID], workers=0)
    assert big.flags["faces_found"] == small.flags["faces_found"] == 32
    assert (big.media["width"], big.media["height"]) == (3840, 2160)
    # The people's boxes are in the file's pixels: near GRID's scaled 7.5x and moved 570 px right (the
    # detector sees each frame letterboxed, so the two frames' boxes differ by a few per cent).
    expected = np.array(small.people[0]["box"]) * 7.5 + [570, 0, 570, 0]
    assert np.abs(np.array(big.people[0]["box"]) - expected).max() < 0.1 * (expected[2] - expected[0])


@pytest.fixture(scope="module")
def grid_8k(tmp_path_factory):
    """GRID's speaker scaled 15x and centred in a 7680x4320 frame."""
    path = tmp_path_factory.mktemp("8k") / "grid_8k.mp4"
    ffmpeg("-t", "2", "-i", GRID, "-vf", "scale=5400:4320,pad=7680:4320:1140:0", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", path)
    return path


def test_4k_and_8k_clips_cost_little_more_memory_than_a_small_one(tiny_weights, grid_4k, grid_8k):
    """Whole frames took 2.3 GB (4K) and 9.5 GB (8K) more than GRID's. Scaled as they are decoded, held once,
    and with no decoder's frame held past its turn: 88 MB and 195 MB more, of which 148 MB at 8K is the
    H.264 decoder's own three frames."""
    peaks = {}
    for path in (GRID, grid_4k, grid_8k):
        probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "dfer_cli", "predict", "--json",
                               "--workers", "0", "--weights", str(tiny_weights), str(path)], capture_output=True,
                              text=True, timeout=300, env=os.environ | {"PYTHONPATH": str(ROOT)})
        peaks[path] = int(done.stdout) / 1024  # MB
    assert peaks[grid_4k] - peaks[GRID] < 150, peaks
    assert peaks[grid_8k] - peaks[GRID] < 300 and peaks[grid_8k] < 1000, peaks


def test_a_full_disk_is_one_line_and_leaves_no_staging_folder(tmp_path, monkeypatch):
    """weights import on a full disk: safetensors' own error becomes 'PATH: no space left on device', the
    staging folder goes, and the entry it was to replace stays byte for byte."""
    import safetensors

    from dfer_cli import paths

    assert CliRunner().invoke(app, ["weights", "import", str(save_tiny_weights(tmp_path / "w")), "--name",
                                    "x"]).exit_code == 0
    entry = paths.weights_dir() / "x"
    before = {p.name: p.read_bytes() for p in entry.iterdir()}

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"part of it")
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("dfer_cli.weights.format.save_file", full)
    result = CliRunner().invoke(app, ["weights", "import", str(tmp_path / "w"), "--name", "x", "--replace"])
    assert result.exit_code == 1
    assert result.stderr == f"dfer: error: {entry}/model.safetensors: no space left on device\n"
    assert sorted(p.name for p in paths.weights_dir().iterdir()) == ["DEFAULT", "x"]
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == before


def test_a_writer_that_hides_a_full_disk_is_told_apart(tmp_path, monkeypatch):
    """torch.save on a full disk says only "unexpected pos": with under 1 MiB free, that is no space."""
    import collections

    from dfer_cli import atomic

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 4096))
    with pytest.raises(OSError, match="No space left on device") as caught, \
            atomic.staged_dir(tmp_path / "last") as staging, atomic.atomic_path(staging / "state.pt"):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert caught.value.filename == str(tmp_path / "last" / "state.pt") and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: usage(1 << 30, 0, 1 << 30))
    with pytest.raises(RuntimeError, match="unexpected pos"), atomic.atomic_path(tmp_path / "state.pt"):
        raise RuntimeError("unexpected pos")  # room enough: the writer's own failure, as it is


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full: Linux's always-full device")
def test_predict_json_to_a_full_disk_is_one_line(tiny_weights):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "dfer_cli", "predict", "--json", "--weights", str(tiny_weights),
                               str(GRID)], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
                              env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and done.stderr == "dfer: error: standard output: no space left on device\n"


def _videos(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not decoded here")


def test_a_one_class_folder_is_refused(tmp_path):
    from dfer_cli.train.datasets import FolderDataset

    _videos(tmp_path, ["happy/a.mp4", "happy/b.mp4"])
    with pytest.raises(DferError, match=r"1 class \('happy'\): training needs two at least"):
        FolderDataset(tmp_path)


def test_a_path_listed_with_two_labels_is_refused_and_a_repeat_counts_once(tmp_path):
    from dfer_cli.train.datasets import FolderDataset

    _videos(tmp_path, ["a.mp4", "b.mp4", "c.mp4", "d.mp4"])
    (tmp_path / "labels.csv").write_text("path,label\na.mp4,happy\nb.mp4,sad\nc.mp4,sad\n./a.mp4,sad\n")
    with pytest.raises(DferError, match=r"labels.csv: \./a\.mp4 is listed twice, as 'happy' and as 'sad'"):
        FolderDataset(tmp_path, labels_csv=tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("path,label\na.mp4,happy\nb.mp4,sad\nd.mp4,happy\na.mp4,happy\n")
    data = FolderDataset(tmp_path, val_fraction=0.5, labels_csv=tmp_path / "labels.csv")
    keys = [s.key for split in data.splits for s in data.samples(split)]
    assert sorted(keys) == ["a.mp4", "b.mp4", "d.mp4"]  # a.mp4 once: never in both train and val


def test_labels_differing_in_case_and_gaps_in_integer_labels_are_warned(tmp_path):
    from dfer_cli.errors import DferWarning
    from dfer_cli.train.datasets import FolderDataset

    _videos(tmp_path, ["Happy/a.mp4", "happy/b.mp4", "sad/c.mp4"])
    with pytest.warns(DferWarning, match="classes 'Happy', 'happy' differ only in case: they are 2 classes"):
        FolderDataset(tmp_path)
    _videos(tmp_path, ["x.mp4", "y.mp4"])
    (tmp_path / "labels.csv").write_text("x.mp4,0\ny.mp4,99\n")
    with pytest.warns(DferWarning, match=r"1, 2, 3, 4, 5, \.\.\. \(93 more\) have no clip: the model gets 100 "
                                         r"classes, 98 of them never seen"):
        FolderDataset(tmp_path, labels_csv=tmp_path / "labels.csv")


def test_a_class_whose_every_clip_is_unreadable_is_refused_before_training(tmp_path):
    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / "calm").mkdir(parents=True, exist_ok=True)
        shutil.copy(GRID, data / "calm" / f"{name}.mpg")
    _videos(data, ["angry/x.mp4", "angry/y.mp4"])
    result = CliRunner().invoke(app, ["train", "--dataset", "folder", "--data", str(data), "--val-fraction", "0",
                                      "--cache", str(tmp_path / "cache"), "--arch", "tiny", "--size", "32",
                                      "--epochs", "1", "--out", str(tmp_path / "run"), "--device", "cpu",
                                      "--workers", "0"])
    assert result.exit_code == 1, result.output
    assert "class 'angry' has no usable clip (every one was left out: see " in result.stderr
    assert not (tmp_path / "run" / "last").exists()


def test_ctrl_c_on_a_folder_run_is_quick_quiet_and_keeps_valid_jsonl(tiny_weights, tmp_path):
    import signal
    import time

    for i in range(40):  # enough that the run is still going when the first line is out
        shutil.copy(GRID, tmp_path / f"{i:02d}.mpg")
    run = subprocess.Popen([sys.executable, "-m", "dfer_cli", "predict", "--jsonl", "--workers", "1", "--weights",
                            str(tiny_weights), str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           start_new_session=True, env=os.environ | {"PYTHONPATH": str(ROOT)},
                           # As a shell starts it: Ctrl-C not ignored, whatever this test process inherited.
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = run.stdout.readline()
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    start = time.monotonic()
    # Read on through the same buffered reader: communicate() reads the pipe itself, and would drop what
    # readline() had already buffered past the first line.
    rest, err = run.stdout.read(), run.stderr.read()
    run.wait(60)
    assert run.returncode == 130 and time.monotonic() - start < 4
    assert [json.loads(line)["status"] for line in (first + rest).decode().splitlines()][0] == "ok"
    assert b"Traceback" not in err  # neither the parent nor a worker prints one


def test_names_that_differ_in_undecodable_bytes_stay_apart_and_read_back(tiny_weights, tmp_path):
    import csv

    names = [b"clip\xff.mp4", b"clip\xfe.mp4", b"clip\\xff.mp4", "clipé.mp4".encode()]
    for name in names:
        (tmp_path / os.fsdecode(name)).write_text("not a video")
    paths = {}
    for fmt in ("--json", "--jsonl", "--csv"):
        result = CliRunner().invoke(app, ["predict", fmt, "--weights", str(tiny_weights), str(tmp_path)])
        assert result.exit_code == 1, result.output
        if fmt == "--json":
            paths[fmt] = [r["path"] for r in json.loads(result.stdout)]
        elif fmt == "--jsonl":
            paths[fmt] = [json.loads(line)["path"] for line in result.stdout.splitlines()]
        else:
            paths[fmt] = [r["path"] for r in csv.DictReader(result.stdout.splitlines())]
    assert paths["--json"] == paths["--jsonl"] == paths["--csv"]
    shown = {os.path.basename(p) for p in paths["--json"]}
    assert shown == {"clip\\xff.mp4", "clip\\xfe.mp4", "clip\\\\xff.mp4", "clipé.mp4"}
    as_bytes = {p.encode().decode("unicode_escape").encode("latin-1") for p in paths["--json"]}  # the README's way
    assert as_bytes == {os.fsencode(tmp_path) + b"/" + n for n in names}


def test_classes_named_like_the_records_own_columns_keep_to_their_own():
    import csv
    import io

    from dfer_cli.results.records import FileResult
    from dfer_cli.results.writers import make_writer

    classes = ["label", "path", "happy"]
    result = FileResult("a.mp4", label="path", confidence=0.5, probabilities={"label": 0.2, "path": 0.5, "happy": 0.3},
                        flags={"faces_found": 32, "frames": 32})
    stream = io.StringIO()
    writer = make_writer("csv", stream, classes, False)
    writer.write(result)
    writer.close()
    header = stream.getvalue().splitlines()[0].split(",")
    assert len(header) == len(set(header))
    (row,) = csv.DictReader(io.StringIO(stream.getvalue()))
    assert (row["path"], row["label"], row["p_path"], row["p_label"]) == ("a.mp4", "path", "0.500000", "0.200000")
    pd = pytest.importorskip("pandas")
    frame = dfer.to_dataframe([result])
    assert isinstance(frame, pd.DataFrame) and frame.loc[0, "path"] == "a.mp4" and frame.loc[0, "p_path"] == 0.5
