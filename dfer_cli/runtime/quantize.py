"""int8 on CPUs: dynamic quantization of the Linear layers of the two encoders and the fusion blocks
(weights int8 once, activations quantized per clip), where nearly all of the model's work is. The
joint projection, the temporal transformer and the classifier stay fp32: they are small, and the
probabilities come out of them."""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from collections.abc import Callable

import torch

from dfer_cli.errors import UsageError
from dfer_cli.runtime import registry

# torch 2.13 marks torch.ao.quantization and its quantized tensors deprecated (for torchao, which dfer does
# not depend on); they are still its CPU path for int8 Linear layers, and where they are gone int8 is refused
# and auto never picks it. Filters by where the warning is raised (torch.ao, or this module for the ones
# torch raises from C++), set once: a catch_warnings() in the thread that makes the int8 copy would swap the
# whole process's filters meanwhile (warnings are not thread-local) and hide dfer's own.
for _category in (UserWarning, DeprecationWarning):
    warnings.filterwarnings("ignore", category=_category, module=rf"torch\.ao(\.|$)|{__name__}$")

# The submodules whose Linear layers go int8 (MMADFER's names).
QUANTIZED = ("image", "audio", "fusion")


def int8_copy(model: torch.nn.Module) -> PerClip:
    """The model with those Linear layers dynamically quantized, run one clip at a time: made once per
    model and kept while it lives (the model itself stays fp32, for explanations and anything that
    needs gradients); made again where its weights changed since, in place or replaced. A caller waits
    for a conversion under way."""
    names = {name for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and name.split(".")[0] in QUANTIZED}
    return registry.get("int8 copy", None, lambda: PerClip(quantize_linears(model, names)), owner=model,
                        version=_weights_version(model, names))


def _weights_version(model: torch.nn.Module, names: set[str]) -> tuple:
    """Which tensors those layers hold, and how often each was changed in place (torch counts it, but
    not for tensors made under inference mode, which cannot be changed outside it)."""
    layers = dict(model.named_modules())
    return tuple((id(p), p.data_ptr(), 0 if p.is_inference() else p._version)
                 for name in sorted(names) for p in layers[name].parameters(recurse=False))


def int8_copy_soon(model: torch.nn.Module) -> None:
    """Start int8_copy in a background thread: a cold run's front end (decoding, faces) then overlaps the
    conversion (0.5 s for ViT-B), and the first model call takes the copy, or waits for it. A failure
    is left for that call to raise."""

    def convert() -> None:
        with contextlib.suppress(Exception):
            int8_copy(model)

    # Not a daemon: the interpreter waits for it at exit, where a daemon thread still inside torch's C++
    # code aborted the process ("terminate called without an active exception", exit -6).
    threading.Thread(target=convert, name="dfer-int8-copy").start()


class Int8Linear(torch.nn.Module):
    """A Linear layer as torch's dynamic int8 one computes it (weights per-tensor symmetric int8, the input
    quantized per call, fbgemm's reduced range), packed once. torch.ao's DynamicLinear packs a zero weight
    twice in its constructor before the real one: two thirds of a ViT-B's conversion time (0.55 of 0.8 s
    measured), which a cold one-clip run pays."""

    def __init__(self, linear: torch.nn.Linear, observer: Callable[[], torch.nn.Module]) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        seen = observer()
        seen(weight)
        scale, zero = seen.calculate_qparams()
        qweight = torch.quantize_per_tensor(weight, float(scale), int(zero), torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=True).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class PerClip(torch.nn.Module):
    """`network` run on one clip (one row of its inputs) at a time. Dynamic int8 scales a Linear layer's
    input by that input's range: over a batch the range is every clip's, so a clip's probabilities
    would depend on the clips beside it (1e-3 apart alone and in a folder); over one clip it is its own.
    It costs nothing: 4 clips one by one took 0.94 s of CPU against 1.11 s batched (ViT-B, 2 block
    pairs, 160 px, one thread), the smaller products staying in cache."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.network(*(x[i:i + 1] for x in inputs)) for i in range(len(inputs[0]))])


def quantize_linears(model: torch.nn.Module, names: set[str] | None = None) -> torch.nn.Module:
    """A copy with the Linear layers `names` (None: all of them) as Int8Linear; every other tensor is
    shared with `model`, not copied (quantize_dynamic's deep copy took 4x as long on ViT-B)."""
    try:
        from torch.ao.quantization import default_dynamic_qconfig
    except ImportError:
        raise UsageError(f"--precision int8: torch {torch.__version__} has no dynamic quantization") from None

    def swap(module: torch.nn.Module, name: str) -> torch.nn.Module:
        if isinstance(module, torch.nn.Linear) and (names is None or name in names):
            return Int8Linear(module, default_dynamic_qconfig.weight)
        clone = copy.copy(module)
        clone._parameters, clone._buffers = dict(module._parameters), dict(module._buffers)
        clone._modules = {key: swap(child, f"{name}.{key}" if name else key)
                          for key, child in module._modules.items()}
        return clone

    return swap(model, "").eval()
