"""The package's shape, as rules: predict never loads training, no import cycles, one owner for each
process-level concern, leaves stay leaves, and the CLI calls only the public API."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import save_tiny_weights

PACKAGE = Path(__file__).resolve().parents[1] / "dfer_cli"
SAMPLE = PACKAGE.parent / "samples" / "bbaf2n.mpg"
LEAVES = ("errors", "atomic", "locks", "progress", "labels", "paths")

_RUN_PREDICT = """
import json, sys
from dfer_cli.cli.app import main
sys.argv = ["dfer", "predict", "--json", sys.argv[1], "--weights", sys.argv[2]]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps(sorted(m for m in sys.modules if m.startswith("dfer_cli"))), file=sys.stderr)
"""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The dfer_cli modules that `path` imports anywhere in it (function-level imports included): for
    `from a.b import c`, module a.b.c when it exists, else a.b."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base not in modules:
                continue
            subs = {f"{base}.{a.name}" for a in node.names} & set(modules)
            found |= subs or {base}
            if len(subs) < len(node.names):
                found.add(base)
    return found - {here}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    return next((c for n in sorted(graph) if n not in state and (c := visit(n))), None)


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest import chain (the graph has no cycle)."""
    best: dict[str, list[str]] = {}

    def chain(node: str) -> list[str]:
        if node not in best:
            best[node] = [node] + max((chain(n) for n in graph[node]), key=len, default=[])
        return best[node]

    return max((chain(n) for n in graph), key=len)


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert "dfer_cli.weights.download" in graph and "dfer_cli.weights.store" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert longest_chain({"a": {"b"}, "b": {"c"}, "c": set()}) == ["a", "b", "c"]


def test_predict_never_loads_training(tmp_path):
    weights = save_tiny_weights(tmp_path / "tiny")
    run = subprocess.run([sys.executable, "-c", _RUN_PREDICT, str(SAMPLE), str(weights)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)[0]["status"] == "ok"
    loaded = json.loads(run.stderr.strip().splitlines()[-1])
    assert {"dfer_cli.api", "dfer_cli.faces.detect", "dfer_cli.model", "dfer_cli.results.writers"} <= set(loaded)
    assert not [m for m in loaded if m == "dfer_cli.train" or m.startswith("dfer_cli.train.")]


def test_leaves_import_no_other_dfer_module_but_errors():
    graph = _graph()
    for leaf in LEAVES:
        assert graph[f"dfer_cli.{leaf}"] <= {"dfer_cli.errors"}, leaf


def _sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in _modules().items()}


def test_only_runtime_distributed_reads_the_torchrun_environment():
    for name, text in _sources().items():
        if name != "dfer_cli.runtime.distributed":
            assert not [v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if f'"{v}"' in text], name


def test_one_worker_rule_and_one_thread_limiter():
    sources = _sources()
    for name, text in sources.items():
        if name != "dfer_cli.runtime.pool":
            assert "set_num_threads" not in text and "NUM_THREADS" not in text, name
            assert "sched_getaffinity" not in text and "cpu_count" not in text, name
    for user in ("dfer_cli.predict.pipeline", "dfer_cli.train.prepare", "dfer_cli.train.loader"):
        assert "worker_count(" in sources[user], user
    assert "single_thread(" in sources["dfer_cli.faces.detect"]


def test_the_cli_calls_only_the_public_api():
    graph = _graph()
    inside = ("dfer_cli.predict", "dfer_cli.runtime", "dfer_cli.shots", "dfer_cli.faces", "dfer_cli.media",
              "dfer_cli.clips", "dfer_cli.model")
    assert not [m for m in graph["dfer_cli.cli.predict"] if m.startswith(inside)]
    text = (PACKAGE / "cli" / "predict.py").read_text()
    assert "load_model(" in text and ".stream(inputs, config)" in text and "predict_on_ray(" in text
    for path in (PACKAGE / "cli").glob("*.py"):  # no CLI code branches on torchrun's ranks
        source = path.read_text()
        assert not [w for w in ("process_group", "ranks(", "Ranks", ".analyse") if w in source], path.name


def test_only_cli_startup_pauses_the_garbage_collector_and_it_restores_it():
    for name, text in _sources().items():
        if name != "dfer_cli.cli.startup":
            assert "gc.disable" not in text and "gc.enable" not in text, name
    for command in ("predict", "train", "weights"):
        assert "with heavy_imports():" in (PACKAGE / "cli" / f"{command}.py").read_text(), command
    import gc

    from dfer_cli.cli.startup import heavy_imports

    assert gc.isenabled()
    with heavy_imports():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with heavy_imports():
            pass
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()
