"""dfer's own weights format: model.safetensors plus dfer.json (dims, class names, frame order,
provenance), side by side in one folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dfer_cli import __version__
from dfer_cli.atomic import atomic_path, atomic_write_text
from dfer_cli.errors import CheckpointError
from dfer_cli.labels import FRAME_ORDERS, TIME_ORDER
from dfer_cli.model import MMADFER, ModelDims

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "dfer.json"
FORMAT = "dfer-weights/1"


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
