"""int8 on CPUs: dynamic quantization of the Linear layers of the two encoders and the fusion blocks
(weights int8 once, activations quantized per batch), where nearly all of the model's work is. The
joint projection, the temporal transformer and the classifier stay fp32: they are small, and the
probabilities come out of them."""

from __future__ import annotations

import copy
import warnings
import weakref

import torch

from dfer_cli.errors import UsageError

# The submodules whose Linear layers go int8 (MMADFER's names).
QUANTIZED = ("image", "audio", "fusion")

_copies: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = weakref.WeakKeyDictionary()


def int8_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model with those Linear layers dynamically quantized: made once per model and kept while it
    lives (the model itself stays fp32, for explanations and anything that needs gradients)."""
    if model not in _copies:
        names = {name for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and name.split(".")[0] in QUANTIZED}
        _copies[model] = quantize_linears(model, names)
    return _copies[model]


def quantize_linears(model: torch.nn.Module, names: set[str] | None = None) -> torch.nn.Module:
    """A copy with the Linear layers `names` (None: all of them) as dynamic int8 ones; every other
    tensor is shared with `model`, not copied (quantize_dynamic's deep copy took 4x as long on ViT-B)."""
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import default_dynamic_qconfig
    except ImportError:
        raise UsageError(f"--precision int8: torch {torch.__version__} has no dynamic quantization") from None

    def swap(module: torch.nn.Module, name: str) -> torch.nn.Module:
        clone = copy.copy(module)
        if isinstance(module, torch.nn.Linear) and (names is None or name in names):
            clone.qconfig = default_dynamic_qconfig
            return DynamicLinear.from_float(clone)
        clone._parameters, clone._buffers = dict(module._parameters), dict(module._buffers)
        clone._modules = {key: swap(child, f"{name}.{key}" if name else key) for key, child in module._modules.items()}
        return clone

    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization and its quantized tensors deprecated (for torchao, which
        # dfer does not depend on); they are still its CPU path for int8 Linear layers, and where they
        # are gone int8 is refused and auto never picks it.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return swap(model, "").eval()
