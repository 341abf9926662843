"""`.pth` files read without running pickled code: torch's weights-only unpickler, with the reference
script's objects mapped to an inert stand-in."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import torch

from dfer_cli.errors import CheckpointError, InvalidCheckpoint


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
    """torch.load restricted to tensors, containers and the inert stand-ins above. A file cut short or
    corrupt raises InvalidCheckpoint; one that asks for code or other objects, CheckpointError."""
    try:
        with torch.serialization.safe_globals(_INERT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as e:
        wanted = _wanted_global(str(e))
        if wanted is None:
            raise InvalidCheckpoint(path, "not a valid checkpoint (incomplete download?)") from None
        raise CheckpointError(path, f"refused to unpickle: it asks for {wanted}, code or an object that a "
                                    "weights file never needs") from None
    except Exception as e:  # garbage input surfaces as any exception type from deep in torch.load
        cause = str(e).split(". ")[0] if str(e) else type(e).__name__
        raise InvalidCheckpoint(path, f"not a valid checkpoint (incomplete download?): {cause}") from None


def _wanted_global(message: str) -> str | None:
    """The global that torch's weights-only unpickler refused, when it names a real one. A file cut
    inside a name asks for one that does not exist ("collections.Ord"): that is a truncation, not a
    request for code. Nothing is imported to tell: only modules already loaded are looked in."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found is None:
        return None
    module, _, name = found.group(1).rpartition(".")
    loaded = sys.modules.get(module)
    if loaded is not None and not hasattr(loaded, name):
        return None
    return found.group(1)


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
