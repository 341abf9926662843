"""`.pth` files read without running pickled code: torch's weights-only unpickler, with the reference
script's objects mapped to an inert stand-in."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from dfer_cli.errors import CheckpointError


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


def state_dict_tensors(obj: object, path: Path) -> dict[str, torch.Tensor]:
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
