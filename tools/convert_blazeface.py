"""Convert mediapipe 0.10.14's BlazeFace models into the safetensors files that dfer ships.

    pip install tflite            # a pure-Python reader of the .tflite flatbuffer; conversion only
    python tools/convert_blazeface.py [--wheel-dir /tmp/blazeface] [--out dfer_cli/assets]

Downloads the mediapipe 0.10.14 wheel (no dependencies) with pip, takes the two face-detection
.tflite files out of it, checks their SHA-256, and writes each model's convolutions, in the order the
TFLite graph runs them, into the parameters of dfer_cli.blazeface's modules (which register theirs in
that order; every shape is checked). The weights stay fp16, as stored. The full-range model keeps 46
of its 1x1 kernels in TFLite's sparse (CSR) format behind DENSIFY ops: they are densified here.
The wheel's Apache-2.0 licence text is copied beside them. Running it again gives the same tensors.
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

from dfer_cli.atomic import atomic_path, atomic_write_bytes  # noqa: E402
from dfer_cli.faces import blazeface  # noqa: E402

VERSION = "0.10.14"
MODELS = {  # file in the wheel -> (output, dfer module, SHA-256 of the .tflite)
    "face_detection_short_range.tflite": (
        "blazeface_short.safetensors", blazeface.ShortRange,
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "face_detection_full_range_sparse.tflite": (
        "blazeface_full.safetensors", blazeface.FullRange,
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
}
_DTYPES = {"FLOAT16": np.float16, "FLOAT32": np.float32}


def fetch_models(wheel_dir: Path) -> tuple[dict[str, bytes], bytes]:
    """The two .tflite files, and the wheel's licence text."""
    wheels = sorted(wheel_dir.glob(f"mediapipe-{VERSION}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(wheel_dir),
                        f"mediapipe=={VERSION}"], check=True)
        wheels = sorted(wheel_dir.glob(f"mediapipe-{VERSION}-*.whl"))
    out = {}
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name, (*_, sha) in MODELS.items():
            data = wheel.read(f"mediapipe/modules/face_detection/{name}")
            if hashlib.sha256(data).hexdigest() != sha:
                raise SystemExit(f"{wheels[0]}: {name} is not the file this converter was written for")
            out[name] = data
        licence = wheel.read(f"mediapipe-{VERSION}.dist-info/LICENSE")
    return out, licence


class Graph:
    """The one subgraph of a .tflite file: tensors and their constant values."""

    def __init__(self, data: bytes) -> None:
        import tflite

        self.model = tflite.Model.GetRootAsModel(data, 0)
        self.graph = self.model.Subgraphs(0)
        ops = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.ops = []
        for k in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(k)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            self.ops.append((ops[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())], list(op.InputsAsNumpy()),
                             list(op.OutputsAsNumpy())))
        self.producer = {outs[0]: (name, ins) for name, ins, outs in self.ops}
        self.types = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}

    def constant(self, index: int) -> np.ndarray:
        """A constant tensor's value, following DEQUANTIZE (fp16 kept as is) and DENSIFY back to the
        stored buffer."""
        if index in self.producer:
            name, ins = self.producer[index]
            assert name in ("DEQUANTIZE", "DENSIFY"), name
            return self.constant(ins[0])
        tensor = self.graph.Tensors(index)
        raw = self.model.Buffers(tensor.Buffer()).DataAsNumpy().tobytes()
        values = np.frombuffer(raw, _DTYPES[self.types[tensor.Type()]])
        shape = tuple(tensor.ShapeAsNumpy())
        return densify(tensor.Sparsity(), values, shape) if tensor.Sparsity() else values.reshape(shape)

    def convolutions(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(kernel in torch's OIHW layout, bias) of every CONV_2D and DEPTHWISE_CONV_2D, in run order."""
        out = []
        for name, ins, _ in self.ops:
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                kernel, bias = self.constant(ins[1]), self.constant(ins[2])
                # TFLite: conv (O, H, W, I), depthwise (1, H, W, C); torch: (O, I, H, W), (C, 1, H, W).
                out.append((kernel.transpose((0, 3, 1, 2) if name == "CONV_2D" else (3, 0, 1, 2)), bias))
        return out


def densify(sparsity, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """TFLite's sparse layout as these files use it: leading dimensions dense, the last one CSR
    (row segments and column indices), identity traversal order, no blocks."""
    dims = [sparsity.DimMetadata(d) for d in range(sparsity.DimMetadataLength())]
    assert list(sparsity.TraversalOrderAsNumpy()) == list(range(len(shape))) and not sparsity.BlockMapLength()
    assert all(d.Format() == 0 for d in dims[:-1]) and dims[-1].Format() == 1
    segments, indices = (_index_vector(dims[-1], which) for which in ("Segments", "Indices"))
    rows = int(np.prod(shape[:-1]))
    dense = np.zeros((rows, shape[-1]), values.dtype)
    for r in range(rows):
        cols = indices[segments[r]:segments[r + 1]]
        dense[r, cols] = values[segments[r]:segments[r + 1]]
    return dense.reshape(shape)


def _index_vector(dim, which: str) -> np.ndarray:
    import tflite

    kind = getattr(dim, f"Array{which}Type")()
    table = getattr(dim, f"Array{which}")()
    vector = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}[kind]()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy().astype(np.int64)


def convert(data: bytes, module: type, source: str) -> dict:
    import torch

    net = module()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    found = Graph(data).convolutions()
    if len(found) != len(convs):
        raise SystemExit(f"{source}: {len(found)} convolutions, {module.__name__} has {len(convs)}")
    state = {}
    names = {id(m): n for n, m in net.named_modules()}
    for conv, (kernel, bias) in zip(convs, found, strict=True):
        if tuple(conv.weight.shape) != kernel.shape or tuple(conv.bias.shape) != bias.shape:
            raise SystemExit(f"{source}: {names[id(conv)]} is {tuple(conv.weight.shape)}, the graph has "
                             f"{kernel.shape}")
        state[f"{names[id(conv)]}.weight"] = torch.from_numpy(np.array(kernel, order="C"))
        state[f"{names[id(conv)]}.bias"] = torch.from_numpy(np.array(bias, order="C"))
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel-dir", type=Path, default=Path("/tmp/blazeface"))
    parser.add_argument("--out", type=Path, default=ROOT / "dfer_cli" / "assets")
    args = parser.parse_args()
    from safetensors.torch import save_file

    args.wheel_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    models, licence = fetch_models(args.wheel_dir)
    atomic_write_bytes(args.out / "LICENSE.mediapipe", licence)
    for name, data in models.items():
        output, module, sha = MODELS[name]
        state = convert(data, module, name)
        metadata = {"source": f"mediapipe=={VERSION} wheel, mediapipe/modules/face_detection/{name}",
                    "source_sha256": sha, "licence": "Apache-2.0 (see LICENSE.mediapipe)",
                    "converter": "tools/convert_blazeface.py"}
        with atomic_path(args.out / output) as tmp:
            save_file(state, str(tmp), metadata)
        print(f"{args.out / output}: {len(state) // 2} convolutions, "
              f"{sum(t.numel() for t in state.values()):,} values")


if __name__ == "__main__":
    main()
