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

from tflite_graph import Graph  # noqa: E402

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
