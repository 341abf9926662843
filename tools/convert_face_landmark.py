"""Convert mediapipe 0.10.14's face-landmark model (468 points) into the safetensors file that dfer ships.

    pip install tflite            # a pure-Python reader of the .tflite flatbuffer; conversion only
    python tools/convert_face_landmark.py [--wheel-dir /tmp/blazeface] [--out dfer_cli/assets]

Takes mediapipe/modules/face_landmark/face_landmark.tflite out of the mediapipe 0.10.14 wheel (one in
--wheel-dir, else the installed mediapipe if it is 0.10.14, else the wheel downloaded with pip, no
dependencies, into --wheel-dir), checks its SHA-256, and writes its
convolutions and PReLU slopes into the parameters of dfer_cli.faces.face_mesh.FaceMesh, in the order the
TFLite graph runs them within each part of the network: the trunk (what both outputs depend on), then the
landmark branch, then the face-presence branch. FaceMesh registers its parameters in that order, and every
shape is checked. The weights stay fp16, as stored. Running it again gives the same tensors.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from safetensors_file import serialize  # noqa: E402
from tflite_graph import Graph  # noqa: E402

from dfer_cli.atomic import atomic_write_bytes  # noqa: E402
from dfer_cli.faces import face_mesh  # noqa: E402

VERSION = "0.10.14"
SOURCE = "mediapipe/modules/face_landmark/face_landmark.tflite"
SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
OUTPUT = "face_landmark.safetensors"
_PARAMETRIC = ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU")


def fetch_model(wheel_dir: Path) -> bytes:
    """The .tflite file: from a mediapipe 0.10.14 wheel in `wheel_dir`, else from the installed mediapipe
    package if it is that version, else from the wheel downloaded into `wheel_dir`."""
    wheels = sorted(wheel_dir.glob(f"mediapipe-{VERSION}-*.whl"))
    if not wheels:
        installed = _installed()
        if installed is not None:
            return _checked(installed.read_bytes(), installed)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(wheel_dir),
                        f"mediapipe=={VERSION}"], check=True)
        wheels = sorted(wheel_dir.glob(f"mediapipe-{VERSION}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        return _checked(wheel.read(SOURCE), wheels[0])


def _installed() -> Path | None:
    from importlib import metadata

    try:
        if metadata.version("mediapipe") != VERSION:
            return None
        found = [f for f in metadata.files("mediapipe") or [] if str(f) == SOURCE]
    except metadata.PackageNotFoundError:
        return None
    return Path(found[0].locate()) if found else None


def _checked(data: bytes, where: Path) -> bytes:
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise SystemExit(f"{where}: {SOURCE} is not the file this converter was written for")
    return data


def _feeds(graph: Graph) -> list[set[int]]:
    """Per operator, which of the graph's outputs (by position) depend on it."""
    feeds: dict[int, set[int]] = {t: {k} for k, t in enumerate(graph.outputs)}  # tensor -> outputs
    out = [set() for _ in graph.ops]
    for k in range(len(graph.ops) - 1, -1, -1):
        _, ins, outs = graph.ops[k]
        out[k] = set().union(*(feeds.get(t, set()) for t in outs))
        for t in ins:
            feeds.setdefault(t, set()).update(out[k])
    return out


def parameters(graph: Graph) -> list[tuple[str, list[np.ndarray]]]:
    """(op name, its constants in torch's layout) of every convolution and PReLU: the trunk's, then
    each output's own branch in the order of the graph's outputs, each part in run order."""
    feeds = _feeds(graph)
    parts: list[list[int]] = [[] for _ in range(len(graph.outputs) + 1)]
    for k, (name, _, _) in enumerate(graph.ops):
        if name in _PARAMETRIC:
            shared = len(feeds[k]) > 1
            parts[0 if shared else 1 + next(iter(feeds[k]))].append(k)
    out = []
    for k in (k for part in parts for k in part):
        name, ins, _ = graph.ops[k]
        if name == "PRELU":
            out.append((name, [graph.constant(ins[1]).reshape(-1)]))  # (1, 1, C) -> (C,)
        else:
            out.append((name, list(graph.convolution(k))))
    return out


def convert(data: bytes) -> dict:
    import torch

    net = face_mesh.FaceMesh()
    graph = Graph(data)
    # FaceMesh.forward returns (landmarks, presence): the graph's outputs must be in that order too.
    shapes = [tuple(graph.graph.Tensors(t).ShapeAsNumpy()) for t in graph.outputs]
    if shapes != [(1, 1, 1, face_mesh.POINTS * 3), (1, 1, 1, 1)]:
        raise SystemExit(f"{SOURCE}: outputs {shapes}, expected the landmarks then the face flag")
    modules = [(n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.PReLU)]
    found = parameters(graph)
    if len(found) != len(modules):
        raise SystemExit(f"{SOURCE}: {len(found)} convolutions and PReLUs, FaceMesh has {len(modules)}")
    state = {}
    for (name, module), (op, values) in zip(modules, found, strict=True):
        targets = [module.weight] if isinstance(module, torch.nn.PReLU) else [module.weight, module.bias]
        kinds = {"PRELU": torch.nn.PReLU, "CONV_2D": torch.nn.Conv2d, "DEPTHWISE_CONV_2D": torch.nn.Conv2d}
        depthwise = isinstance(module, torch.nn.Conv2d) and module.groups > 1
        if not isinstance(module, kinds[op]) or depthwise != (op == "DEPTHWISE_CONV_2D"):
            raise SystemExit(f"{SOURCE}: {name} is a {type(module).__name__}, the graph has {op} there")
        for suffix, target, value in zip(("weight", "bias"), targets, values, strict=False):
            if tuple(target.shape) != value.shape:
                raise SystemExit(f"{SOURCE}: {name}.{suffix} is {tuple(target.shape)}, the graph has {value.shape}")
            state[f"{name}.{suffix}"] = torch.from_numpy(np.array(value, order="C"))
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel-dir", type=Path, default=Path("/tmp/blazeface"))
    parser.add_argument("--out", type=Path, default=ROOT / "dfer_cli" / "assets")
    args = parser.parse_args()
    args.wheel_dir.mkdir(parents=True, exist_ok=True)
    state = convert(fetch_model(args.wheel_dir))
    metadata = {"source": f"mediapipe=={VERSION} wheel, {SOURCE}", "source_sha256": SHA256,
                "licence": "Apache-2.0 (see LICENSE.mediapipe)", "converter": "tools/convert_face_landmark.py"}
    atomic_write_bytes(args.out / OUTPUT, serialize(state, metadata))
    print(f"{args.out / OUTPUT}: {len(state)} tensors, {sum(t.numel() for t in state.values()):,} values")


if __name__ == "__main__":
    main()
