"""Reading and writing model weights: official MMA-DFER checkpoints, MAE-Face / AudioMAE encoders,
and dfer's own format (a safetensors file plus a JSON config, side by side in one folder).

Nothing here ever executes pickled code: `.pth` files go through torch's weights-only unpickler,
with the reference training script's `RecorderMeter` and the numpy objects inside it mapped to an
inert stand-in that swallows its state.

The weights directory keeps named dfer weights folders, one of them the default: $DFER_HOME/weights
when DFER_HOME is set, else the platform's user data folder. Weights given by URL are downloaded to
$DFER_HOME/downloads first (download.py, imported only then).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import torch
from platformdirs import user_data_path
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .atomic import atomic_path, atomic_write_text, recover_dir, replace_dir
from .clips import FRAME_ORDERS, REFERENCE_ORDER, TIME_ORDER
from .errors import DferError, UsageError
from .labels import MAFW_CLASSES, default_class_names
from .model import (
    MMADFER,
    ModelDims,
    convert_encoder_state_dict,
    convert_official_state_dict,
    dims_from_official,
)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "dfer.json"
FORMAT = "dfer-weights/1"
DEFAULT_FILE = "DEFAULT"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class CheckpointError(DferError):
    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


class _Inert:
    """Stands in for any allow-listed non-tensor object; its pickled state is dropped unread."""

    def __init__(self, *args: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


_INERT_GLOBALS = [(_Inert, name) for name in (
    "__main__.RecorderMeter",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
)]


def load_torch_file(path: Path) -> object:
    """torch.load restricted to tensors, containers and the inert stand-ins above."""
    try:
        with torch.serialization.safe_globals(_INERT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(path, f"refused to unpickle (it holds code or objects that a weights file "
                                    f"never needs): {reason}") from None
    except Exception as e:  # garbage input surfaces as any exception type from deep in torch.load
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def _tensors(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(path, "holds no state dict")
    sd = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(path, "holds no tensors")
    return sd


def validate_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: Path | str) -> None:
    """Every tensor the model needs must be present with the right shape, and nothing else."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    problems = [f"missing tensor {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                if missing else "",
                f"unexpected tensor {unexpected[0]}" if unexpected else "",
                f"shape mismatch for {wrong[0]}" if wrong else ""]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(source, "; ".join(problems))


def build_loaded(dims: ModelDims, sd: dict[str, torch.Tensor], source: Path | str) -> MMADFER:
    """The model built on the meta device (no wasted random init) and given the validated tensors."""
    with torch.device("meta"):
        model = MMADFER(dims)
    validate_state_dict(model, sd, source)
    model.load_state_dict(sd, assign=True)
    return model.eval()


@dataclass
class WeightsConfig:
    """What dfer.json holds beside the tensors."""

    dims: ModelDims
    class_names: list[str]
    dataset: str | None = None
    fold: int | None = None
    provenance: dict = field(default_factory=dict)
    # The order in which the model saw each clip's frames (clips.FRAME_ORDERS): "time", or the
    # reference's MAFW file-name order for the official MAFW checkpoints.
    frame_order: str = TIME_ORDER

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "dims": self.dims.to_dict(), "class_names": self.class_names,
                           "dataset": self.dataset, "fold": self.fold, "frame_order": self.frame_order,
                           "provenance": self.provenance}, indent=2)

    @classmethod
    def from_json(cls, text: str, source: Path) -> WeightsConfig:
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT!r}")
            known = {f.name for f in fields(ModelDims)}
            dims = ModelDims(**{k: v for k, v in raw["dims"].items() if k in known})
            order = raw.get("frame_order", TIME_ORDER)  # written before dfer recorded it: time order
            if order not in FRAME_ORDERS:
                raise ValueError(f"frame_order {order!r}, expected one of {', '.join(FRAME_ORDERS)}")
            return cls(dims, list(raw["class_names"]), raw.get("dataset"), raw.get("fold"),
                       raw.get("provenance", {}), order)
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(source, f"invalid dfer config: {e}") from None


@dataclass
class LoadedWeights:
    model: MMADFER
    config: WeightsConfig


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_official(path: Path) -> LoadedWeights:
    """A released MMA-DFER checkpoint (state_dict wrapper or bare state dict)."""
    sd = _tensors(load_torch_file(path), path)
    if "image_encoder.pos_embed" not in sd or "our_classifier.weight" not in sd:
        raise CheckpointError(path, "not an MMA-DFER checkpoint (no image_encoder.pos_embed / "
                                    "our_classifier.weight tensors)")
    try:
        dims = dims_from_official(sd)
        converted = convert_official_state_dict(sd)
    except (KeyError, ValueError) as e:
        raise CheckpointError(path, f"unexpected tensor {e} for an MMA-DFER checkpoint") from None
    model = build_loaded(dims, converted, path)
    provenance = {"source": str(path), "sha256": sha256(path), "converted_from": "mma-dfer-official"}
    # The 11-class checkpoints are MAFW's, whose reference loader fed frames in file-name order.
    order = REFERENCE_ORDER if dims.num_classes == len(MAFW_CLASSES) else TIME_ORDER
    return LoadedWeights(model.eval(), WeightsConfig(dims, default_class_names(dims.num_classes),
                                                     provenance=provenance, frame_order=order))


def load_encoders(model: MMADFER, image_path: Path | None, audio_path: Path | None,
                  seed: int = 1) -> list[str]:
    """MAE-Face / AudioMAE weights into the frozen branches; returns the branch tensors left untouched."""
    generator = torch.Generator().manual_seed(seed)
    loaded: dict[str, torch.Tensor] = {}
    for branch, path in (("image", image_path), ("audio", audio_path)):
        if path is None:
            continue
        sd = convert_encoder_state_dict(_tensors(load_torch_file(path), path), branch, model.dims, generator)
        expected = model.state_dict()
        for name, tensor in sd.items():
            if expected[name].shape != tensor.shape:
                raise CheckpointError(path, f"shape mismatch for {name} {tuple(tensor.shape)} "
                                            f"(expected {tuple(expected[name].shape)})")
        if not any(".blocks." in k for k in sd):
            raise CheckpointError(path, "no ViT encoder blocks found (expected timm-style 'blocks.N.*' "
                                        "tensors under the 'model' key)")
        loaded.update(sd)
    model.load_state_dict(loaded, strict=False)
    return [k for k in model.state_dict() if k.split(".")[0] in ("image", "audio") and k not in loaded
            and not k.split(".")[1].startswith(("prompts", "progressive"))]


def save_dfer(folder: Path, model: MMADFER, config: WeightsConfig) -> Path:
    """Writes model.safetensors and dfer.json into `folder`, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    config.provenance.setdefault("dfer_version", __version__)
    config.provenance.setdefault("saved_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    atomic_write_text(folder / CONFIG_FILE, config.to_json())
    return folder


def load_dfer(folder: Path) -> LoadedWeights:
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(folder, f"no {CONFIG_FILE} (not a dfer weights folder)")
    config = WeightsConfig.from_json(cfg_path.read_text(), cfg_path)
    try:
        sd = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(folder / WEIGHTS_FILE, f"unreadable weights ({e})") from None
    return LoadedWeights(build_loaded(config.dims, sd, folder / WEIGHTS_FILE), config)


def load_any(path: Path) -> LoadedWeights:
    """A dfer folder (or its safetensors/json file), or an official MMA-DFER .pth/.pt/.tar checkpoint."""
    if not path.exists():
        raise CheckpointError(path, "no such file or folder")
    if path.is_dir():
        return load_dfer(path)
    if path.name in (WEIGHTS_FILE, CONFIG_FILE):
        return load_dfer(path.parent)
    return load_official(path)


# The weights directory: named entries, one of them the default.
def is_url(spec: str) -> bool:
    return re.match(r"https?://", spec, re.IGNORECASE) is not None


def home() -> Path:
    env = os.environ.get("DFER_HOME")
    return Path(env).expanduser() if env else user_data_path("dfer", appauthor=False)


def weights_dir() -> Path:
    return home() / "weights"


def downloads_dir() -> Path:
    """Where `http(s)://` weights are downloaded to, once per URL."""
    return home() / "downloads"


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    config: WeightsConfig
    is_default: bool


def default_name() -> str | None:
    marker = weights_dir() / DEFAULT_FILE
    if not marker.is_file():
        return None
    return marker.read_text().strip() or None


def entry_dir(name: str) -> Path:
    """The folder of entry `name`, put back first if an import was killed while it was moved aside."""
    recover_dir(weights_dir() / name)
    return weights_dir() / name


def set_default(name: str) -> None:
    if not (entry_dir(name) / CONFIG_FILE).is_file():
        raise DferError(f"{name}: no such weights entry in {weights_dir()} (see `dfer weights list`)")
    atomic_write_text(weights_dir() / DEFAULT_FILE, name + "\n")


def entries() -> list[Entry]:
    root = weights_dir()
    if not root.is_dir():
        return []
    for aside in root.glob(".*.old"):
        entry_dir(aside.name[1:-len(".old")])
    default = default_name()
    found = []
    # Staging and moved-aside folders start with a dot, which no entry name does.
    for cfg in sorted(p for p in root.glob(f"*/{CONFIG_FILE}") if _NAME.match(p.parent.name)):
        config = WeightsConfig.from_json(cfg.read_text(), cfg)
        found.append(Entry(cfg.parent.name, cfg.parent, config, cfg.parent.name == default))
    return found


def import_weights(source: Path | str, name: str | None = None, make_default: bool | None = None,
                   dataset: str | None = None, fold: int | None = None, sha256: str | None = None) -> Entry:
    """Converts any checkpoint that `load_any` reads (a path, or an http(s) URL, downloaded first) into
    a named entry; the first entry becomes the default unless told otherwise. With `sha256`, a file
    that does not match is refused before anything is installed."""
    if name is not None:
        _check_name(name)
    path, origin = _local_file(source, sha256)
    if name is None:
        name = _check_name(_UNSAFE.sub("-", path.stem if path.is_file() else path.name).strip("-."))
    loaded = load_any(path)
    config = loaded.config
    config.dataset = dataset or config.dataset
    config.fold = fold or config.fold
    config.provenance.setdefault("imported_from", origin)
    target = weights_dir() / name
    staging = weights_dir() / f".{name}.importing"
    shutil.rmtree(staging, ignore_errors=True)
    save_dfer(staging, loaded.model, config)
    replace_dir(staging, target)
    if make_default or (make_default is None and default_name() is None):
        set_default(name)
    return Entry(name, target, config, default_name() == name)


def resolve(spec: str | None) -> LoadedWeights:
    """`--weights` value (an entry name, a path or an http(s) URL) or, when None, the default entry.

    A URL is downloaded once into the downloads folder and converted in memory on every call; it adds
    no entry."""
    if spec is None:
        spec = default_name()
        if spec is None:
            raise UsageError(
                f"no weights installed in {weights_dir()}. `dfer weights sources` says where the official "
                "MMA-DFER checkpoints are; import one with `dfer weights import PATH-OR-URL` "
                "(or pass --weights PATH).")
    if is_url(spec):
        from .download import fetch

        loaded = load_any(fetch(spec, downloads_dir()))
        loaded.config.provenance["url"] = spec
        return loaded
    if _NAME.match(spec) and (entry_dir(spec) / CONFIG_FILE).is_file():
        return load_dfer(weights_dir() / spec)
    path = Path(spec).expanduser()
    if path.exists():
        return load_any(path)
    raise DferError(f"{spec}: neither a weights entry in {weights_dir()} nor an existing file "
                    "(see `dfer weights list`)")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise DferError(f"{name!r}: a weights name uses letters, digits, '_', '.' and '-' (64 at most); "
                        "choose one with --name")
    return name


def _local_file(source: Path | str, sha256: str | None) -> tuple[Path, str]:
    """The checkpoint on disk (a URL is downloaded first, once) and where it came from."""
    from .download import fetch, parse_sha256, sha256_mismatch  # imported only here: predict needs none of it

    if is_url(str(source)):
        return fetch(str(source), downloads_dir(), sha256), str(source)
    path = Path(source).expanduser()
    if sha256:
        if not path.is_file():
            raise DferError(f"{path}: --sha256 checks a file, and this is no file")
        wrong = sha256_mismatch(path, parse_sha256(sha256))
        if wrong:
            raise DferError(f"{path}: {wrong}: refused")
    return path, str(path.resolve())
