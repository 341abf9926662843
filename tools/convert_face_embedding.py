"""Convert @vladmandic/face-api 1.7.15's face-recognition model (dlib's ResNet, tfjs weights) into the
safetensors file that dfer ships.

    cd /tmp && npm pack @vladmandic/face-api@1.7.15
    python tools/convert_face_embedding.py [--source /tmp/vladmandic-face-api-1.7.15.tgz] [--out dfer_cli/assets]

--source is the npm package's .tgz or a folder holding model/face_recognition_model.bin and
model/face_recognition_model-weights_manifest.json (the extracted package, or its model/ folder). Both files'
SHA-256 are checked. The manifest lists the tensors in the order of the .bin; each is uint8-quantised
(value = code * scale + min, per tensor) or stored float32. Each convolution's bias and the affine layer
after it (dlib's batch norm, frozen) are folded into the convolution, in float64: W * a, (b * a + c).
tfjs's HWIO kernels become torch's OIHW and the fully-connected (256, 128) matrix its transpose. The
tensors are written float16: 11 MB instead of 22, and the embeddings move by at most 0.001 (Euclidean, on
the GRID faces of tests/test_face_embedding.py), against 0.04 between these uint8 weights' embeddings and
dlib's own. Running it again gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from safetensors_file import serialize  # noqa: E402

from dfer_cli.atomic import atomic_write_bytes  # noqa: E402
from dfer_cli.faces import embedding  # noqa: E402

PACKAGE = "@vladmandic/face-api@1.7.15"
WEIGHTS = "model/face_recognition_model.bin"
MANIFEST = "model/face_recognition_model-weights_manifest.json"
SHA256 = {WEIGHTS: "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
          MANIFEST: "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b"}
OUTPUT = "face_embedding.safetensors"
METADATA = {"source": f"npm {PACKAGE}, {WEIGHTS} with {MANIFEST}", "source_sha256": SHA256[WEIGHTS],
            "manifest_sha256": SHA256[MANIFEST], "licence": "MIT (see LICENSE.face-api); dlib's model: CC0",
            "converter": "tools/convert_face_embedding.py"}


def read_source(source: Path) -> dict[str, bytes]:
    """The two files, from the npm .tgz (under package/) or a folder (the package's or its model/)."""
    out = {}
    if source.is_file():
        with tarfile.open(source) as tar:
            for name in SHA256:
                member = tar.extractfile(f"package/{name}")
                if member is None:
                    raise SystemExit(f"{source}: no package/{name}")
                out[name] = member.read()
    else:
        for name in SHA256:
            path = next((p for p in (source / name, source / Path(name).name) if p.is_file()), None)
            if path is None:
                raise SystemExit(f"{source}: neither {name} nor {Path(name).name} is there")
            out[name] = path.read_bytes()
    for name, data in out.items():
        if hashlib.sha256(data).hexdigest() != SHA256[name]:
            raise SystemExit(f"{source}: {name} is not the file of {PACKAGE} this converter was written for")
    return out


def tensors(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """The manifest's tensors, dequantised, float64, in tfjs's layout."""
    (group,) = json.loads(files[MANIFEST])
    data, offset, out = files[WEIGHTS], 0, {}
    for entry in group["weights"]:
        count = int(np.prod(entry["shape"]))
        quant = entry.get("quantization")
        if quant is None:
            if entry["dtype"] != "float32":
                raise SystemExit(f"{MANIFEST}: {entry['name']} is {entry['dtype']}, not float32")
            values = np.frombuffer(data, "<f4", count, offset).astype(np.float64)
            offset += 4 * count
        elif quant["dtype"] == "uint8":
            values = np.frombuffer(data, np.uint8, count, offset) * np.float64(quant["scale"]) + quant["min"]
            offset += count
        else:
            raise SystemExit(f"{MANIFEST}: {entry['name']} is quantised as {quant['dtype']}, not uint8")
        out[entry["name"]] = values.reshape(entry["shape"])
    if offset != len(data):
        raise SystemExit(f"{WEIGHTS}: {len(data) - offset} bytes left after the manifest's tensors")
    return out


def _folded(raw: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """A convolution and its affine layer as one: (OIHW kernel, bias)."""
    kernel, bias = raw.pop(f"{prefix}/conv/filters"), raw.pop(f"{prefix}/conv/bias")
    gain, shift = raw.pop(f"{prefix}/scale/weights"), raw.pop(f"{prefix}/scale/biases")
    return (kernel * gain).transpose(3, 2, 0, 1), bias * gain + shift


def convert(files: dict[str, bytes]) -> dict:
    import torch

    raw = tensors(files)
    pairs = {"conv32_down": _folded(raw, "conv32_down")}
    for name in embedding.FaceEmbedding.names[1:]:
        for conv in ("conv1", "conv2"):
            pairs[f"blocks.{name}.{conv}"] = _folded(raw, f"{name}/{conv}")
    state = {}
    for name, (kernel, bias) in pairs.items():
        state[f"{name}.weight"], state[f"{name}.bias"] = kernel, bias
    state["fc.weight"] = raw.pop("fc").T
    if raw:
        raise SystemExit(f"{MANIFEST}: tensors the network has no place for: {sorted(raw)}")
    expected = embedding.FaceEmbedding().state_dict()
    if set(expected) != set(state):
        raise SystemExit(f"{MANIFEST}: tensors {sorted(set(state) ^ set(expected))} do not match the network")
    for name, value in state.items():
        if tuple(expected[name].shape) != value.shape:
            raise SystemExit(f"{MANIFEST}: {name} is {value.shape}, the network's is {tuple(expected[name].shape)}")
    return {name: torch.from_numpy(np.ascontiguousarray(value, np.float16)) for name, value in sorted(state.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("/tmp/vladmandic-face-api-1.7.15.tgz"))
    parser.add_argument("--out", type=Path, default=ROOT / "dfer_cli" / "assets")
    args = parser.parse_args()
    if not args.source.exists():
        raise SystemExit(f"{args.source}: no such file or folder (cd /tmp && npm pack {PACKAGE})")
    state = convert(read_source(args.source))
    atomic_write_bytes(args.out / OUTPUT, serialize(state, METADATA))
    print(f"{args.out / OUTPUT}: {len(state)} tensors, {sum(t.numel() for t in state.values()):,} values")


if __name__ == "__main__":
    main()
