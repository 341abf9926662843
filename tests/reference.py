"""The reference implementation's golden fixtures (spec section 10) and its checkpoint layout."""

import json
import sys
import zlib

import numpy as np
import torch
from conftest import DESIGN

TAGS = ["S112_C7", "S160_C11"]


def golden() -> dict[str, np.ndarray]:
    return dict(np.load(DESIGN / "reference_golden.npz"))


def layout(tag: str) -> dict[str, list[int]]:
    return json.loads((DESIGN / "reference_state_dict_layout.json").read_text())[tag]


def fill(name: str, shape: list[int]) -> torch.Tensor:
    """The deterministic value the golden run gave the tensor `name`."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    if "all_gate" in name:
        return 0.5 * x
    if len(shape) == 1 and name.endswith(".weight"):
        return 1.0 + 0.1 * x
    return 0.02 * x


def official_state_dict(tag: str) -> dict[str, torch.Tensor]:
    return {name: fill(name, shape) for name, shape in layout(tag).items()}


def inputs(g: dict[str, np.ndarray], tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    video = torch.from_numpy(g[f"frames_{tag}"]).permute(0, 1, 4, 2, 3).float() / 255
    return video, torch.from_numpy(g["audio"])


class RecorderMeter:
    """Like the reference training script's class of the same name: pickled as __main__.RecorderMeter."""

    def __init__(self, epochs: int) -> None:
        self.epoch_losses = np.zeros((epochs, 2), dtype=np.float32)
        self.epoch_accuracy = np.zeros((epochs, 2), dtype=np.float32)


def save_reference_checkpoint(path, state_dict, monkeypatch) -> None:
    """torch.save as the reference script does: DataParallel prefixes, optimizer, pickled recorder."""
    RecorderMeter.__module__ = "__main__"
    monkeypatch.setattr(sys.modules["__main__"], "RecorderMeter", RecorderMeter, raising=False)
    torch.save({"epoch": 25, "state_dict": {f"module.{k}": v for k, v in state_dict.items()},
                "best_acc": np.float64(77.1), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "recorder": RecorderMeter(25)}, path)
