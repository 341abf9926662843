"""A file's record is the same, byte for byte, however it is batched: alone or first in a folder of three,
at batch size 1 or 8, printed as JSON or JSONL, in one process, in worker processes or sharded under
torchrun, in every precision (the Ray run is in test_ray.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MEDIA, save_tiny_weights, without_timings

import dfer_cli as dfer

PRECISIONS = ("fp32", "bf16", "int8")
GRID = sorted((MEDIA / "grid").glob("*.mpg"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Tiny weights, a folder of three clips, its first file, and that file's record in each precision
    as predict gives it alone at batch size 1 (timings left out)."""
    root = tmp_path_factory.mktemp("batching")
    weights = save_tiny_weights(root / "tiny")
    folder = root / "videos"
    folder.mkdir()
    for src in GRID[:3]:
        shutil.copy(src, folder / src.name)
    target = folder / GRID[0].name
    alone = {}
    for precision in PRECISIONS:
        (record,) = dfer.load_model(str(weights), "cpu", precision).predict(target, workers=0, batch_size=1)
        alone[precision] = without_timings(json.dumps(record.to_dict(), ensure_ascii=False))
    return weights, folder, target, alone


def _line(stdout: str, target: Path) -> str:
    """The target's record among those printed (one a line in JSON and JSONL alike), less its timings."""
    (line,) = [line for line in stdout.splitlines() if f'"path": {json.dumps(str(target))}' in line]
    return without_timings(line)


def test_a_files_numbers_are_its_own_alone_or_in_a_folder_at_any_batch_size(study):
    weights, folder, target, alone = study
    for precision in PRECISIONS:
        model = dfer.load_model(str(weights), "cpu", precision)
        for inputs in (target, folder):
            for batch_size in (1, 8):
                records = {r.path: r for r in model.predict(inputs, workers=0, batch_size=batch_size)}
                got = without_timings(json.dumps(records[str(target)].to_dict(), ensure_ascii=False))
                assert got == alone[precision], (precision, inputs, batch_size)
    # Each precision's own arithmetic: the records above are not all one computation.
    assert alone["int8"] != alone["fp32"] and alone["bf16"] != alone["fp32"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_cli_prints_those_numbers_in_json_and_jsonl_in_worker_processes_and_sharded(study, precision):
    weights, folder, target, alone = study
    base = ["predict", "--device", "cpu", "--precision", precision, "--weights", str(weights)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {
        "json, folder, workers": [sys.executable, "-m", "dfer_cli", *base, "--json", str(folder)],
        "jsonl, folder, batch 1": [sys.executable, "-m", "dfer_cli", *base, "--jsonl", "--batch-size", "1",
                                   "--workers", "0", str(folder)],
        "sharded over 2": [Path(sys.executable).parent / "torchrun", "--standalone", "--nproc-per-node", "2",
                           "-m", "dfer_cli", *base, "--jsonl", "--workers", "0", str(folder)],
    }
    for name, command in runs.items():
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, (name, out.stderr)
        assert _line(out.stdout, target) == alone[precision], name
