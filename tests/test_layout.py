"""The package's shape, as rules: ARCHITECTURE.md lists every module and public name, packages import only
from the layers below theirs, predict never loads training, no import cycles, one owner for each
process-level concern, leaves stay leaves, and the CLI calls only the public API."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import save_tiny_weights

PACKAGE = Path(__file__).resolve().parents[1] / "dfer_cli"
SAMPLE = PACKAGE.parent / "samples" / "bbaf2n.mpg"
LEAVES = ("errors", "atomic", "locks", "progress", "labels", "paths")
ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"

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


def test_max_people_is_applied_by_the_people_stage_alone():
    """The people stage decides who is analysed: the other stages never see how many may be."""
    allowed = {"dfer_cli.people.config", "dfer_cli.people.stage", "dfer_cli.predict.config", "dfer_cli.cli.predict"}
    named = {name for name, text in _sources().items() if "max_people" in text}
    assert named <= allowed and "dfer_cli.people.stage" in named, sorted(named - allowed)


def _process_caches(text: str) -> list[str]:
    """What in a module's source keeps objects for the process: functools' caches, weak dictionaries,
    and module-level dicts that start empty (to be filled by its functions)."""
    found = re.findall(r"@(?:functools\.)?(?:cache|lru_cache)\b|\bWeak(?:Key|Value)Dictionary\b", text)
    for node in ast.parse(text).body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if (isinstance(value, ast.Dict) and not value.keys) or (
                isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict" and not value.args):
            found.append(f"a module-level empty dict, line {node.lineno}")
    return found


def test_only_the_registry_keeps_networks_and_probes_for_the_process():
    found = {name: caches for name, text in _sources().items()
             if name != "dfer_cli.runtime.registry" and (caches := _process_caches(text))}
    assert not found, f"use runtime/registry.py (one place, cleared between tests): {found}"
    assert _process_caches("import functools\n@functools.cache\ndef f(): ...\n_seen: dict = {}\n") == [
        "@functools.cache", "a module-level empty dict, line 4"]
    assert _process_caches("@lru_cache(maxsize=8)\ndef f(): ...\nNAMES = {'a': 1}\n") == ["@lru_cache"]


def test_the_cli_calls_only_the_public_api():
    graph = _graph()
    inside = ("dfer_cli.predict", "dfer_cli.runtime", "dfer_cli.shots", "dfer_cli.faces", "dfer_cli.media",
              "dfer_cli.clips", "dfer_cli.model")
    assert not [m for m in graph["dfer_cli.cli.predict"] if m.startswith(inside)]
    text = (PACKAGE / "cli" / "predict.py").read_text()
    assert "load_model(" in text and ".stream(inputs" in text and "predict_on_ray(" in text
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


def _block_lines(text: str, marker: str, inside: bool = False) -> list[str]:
    """The lines of the ``` block after the line `marker`, or (`inside`) of the block that opens with it."""
    lines = text.splitlines()
    start = lines.index(marker)
    if not inside:
        start = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return lines[start + 1:end]


def documented_modules(text: str) -> dict[str, set[str]]:
    """ARCHITECTURE.md's tree: each entry (a top-level line of the block under `dfer_cli/`, with the lines
    indented under it) -> the .py files it names. A subpackage's entry is keyed by its name ("faces/"),
    the top-level modules' entries by ""."""
    entries: dict[str, set[str]] = {}
    key = ""
    for line in _block_lines(text, "dfer_cli/", inside=True):
        if re.match(r"  \S", line):
            first = line.split()[0]
            key = first if first.endswith("/") else ""
        entries.setdefault(key, set()).update(re.findall(r"[\w/]+\.py\b", line))
    return entries


def declared_layers(text: str) -> list[list[str]]:
    """ARCHITECTURE.md's layers, the lowest first: each a list of packages and top-level modules."""
    return [line.split() for line in reversed(_block_lines(text, "## Layers")) if line.strip()]


def _unit(module: str) -> str:
    """The package or top-level module that a module belongs to ("faces" for dfer_cli.faces.detect)."""
    return module.split(".")[1]


def layer_violations(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Each import of a module from its own layer or a higher one, as `a -> b (layer of a: i, of b: j)`;
    the package root (the version and the lazy public names) is exempt."""
    rank = {unit: i for i, layer in enumerate(layers) for unit in layer}
    found = []
    for module, imported in sorted(graph.items()):
        if module == "dfer_cli":
            continue
        for other in sorted(imported - {"dfer_cli"}):
            a, b = _unit(module), _unit(other)
            if a != b and rank[b] >= rank[a]:
                found.append(f"{module} -> {other} (layer of {a}: {rank[a]}, of {b}: {rank[b]}; 0 is the lowest)")
    return found


def test_architecture_lists_every_module_and_names_no_missing_one():
    entries = documented_modules(ARCHITECTURE.read_text())
    missing, stale = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) == 1:
            if relative.name not in entries.get("", set()):
                missing.append(f"dfer_cli/{relative} (a top-level module: add it to the tree's top-level lines)")
        elif relative.name != "__init__.py":
            key, inside = f"{relative.parts[0]}/", "/".join(relative.parts[1:])
            if inside not in entries.get(key, set()):
                missing.append(f"dfer_cli/{relative} (add {inside} to the `{key}` entry of the tree)")
    for key, names in entries.items():
        stale += [f"dfer_cli/{key}{name}" for name in sorted(names) if not (PACKAGE / key / name).is_file()]
    assert not missing, "ARCHITECTURE.md does not list: " + "; ".join(missing)
    assert not stale, "ARCHITECTURE.md lists modules that do not exist: " + ", ".join(stale)


def test_architecture_lists_every_public_name():
    import dfer_cli

    lines = _block_lines(ARCHITECTURE.read_text(), "dfer_cli/", inside=True)
    first = next(i for i, line in enumerate(lines) if line.split()[:1] == ["__init__.py"])
    end = next(i for i in range(first + 1, len(lines)) if re.match(r"  \S", lines[i]))
    listed = set(re.findall(r"\w+", " ".join(lines[first:end])))
    missing = [name for name in dfer_cli.__all__ if name not in listed]
    assert not missing, f"ARCHITECTURE.md's __init__.py entry does not name the public {', '.join(missing)}"


def test_every_package_is_in_a_layer_and_imports_only_from_lower_layers():
    layers = declared_layers(ARCHITECTURE.read_text())
    placed = {unit for layer in layers for unit in layer}
    units = {_unit(m) for m in _modules() if m != "dfer_cli"}
    unplaced = sorted(units - placed)
    assert not unplaced, (f"{', '.join(unplaced)}: in no layer of ARCHITECTURE.md's `## Layers` block; "
                          "add each to the line its imports put it on")
    assert not sorted(placed - units), f"layers name what is not in dfer_cli/: {sorted(placed - units)}"
    violations = layer_violations(_graph(), layers)
    assert not violations, "imports from a layer not below the importer's:\n" + "\n".join(violations)


def test_the_layer_check_finds_an_upward_import():
    layers = [["errors"], ["media"], ["faces"]]
    graph = {"dfer_cli.media.decode": {"dfer_cli.faces.box", "dfer_cli.errors", "dfer_cli"},
             "dfer_cli.faces.box": {"dfer_cli.media.decode"}, "dfer_cli.errors": set()}
    assert layer_violations(graph, layers) == [
        "dfer_cli.media.decode -> dfer_cli.faces.box (layer of media: 1, of faces: 2; 0 is the lowest)"]
    assert layer_violations(graph, [["errors"], ["media", "faces"]]) == [
        "dfer_cli.faces.box -> dfer_cli.media.decode (layer of faces: 1, of media: 1; 0 is the lowest)",
        "dfer_cli.media.decode -> dfer_cli.faces.box (layer of media: 1, of faces: 1; 0 is the lowest)"]
    text = "intro\n```\ndfer_cli/\n  api.py  x\n  faces/  a.py, b.py (c.py)\n                     d.py\n```\n"
    assert documented_modules(text) == {"": {"api.py"}, "faces/": {"a.py", "b.py", "c.py", "d.py"}}
