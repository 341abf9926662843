"""The device and the numeric precision that goes with it: CUDA or CPU; fp32, bf16 autocast or int8
Linear layers, whichever measures fastest on this CPU."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import torch

from dfer_cli.errors import UsageError
from dfer_cli.runtime.probe import cpu_probe

if TYPE_CHECKING:
    from dfer_cli.model import ModelDims

PRECISIONS = ("auto", "fp32", "bf16", "int8")
# Faster than fp32 by at least this on the probe, or auto keeps fp32.
_WORTH_IT = 1.25


def pick_device(spec: str = "auto") -> torch.device:
    """"auto" is CUDA when present, else CPU; "cuda", "cuda:1" and "cpu" are taken as they are."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {spec}: CUDA is not available on this machine")
    return device


def frontend_device(model_device: torch.device, workers: int) -> torch.device:
    """Where the front end's networks that can run batched (the landmark model) run: the model's device
    when the front end runs in this process, the CPU in worker processes, so that none of them starts CUDA."""
    return model_device if workers == 0 else torch.device("cpu")


def auto_cpu_precision(dims: ModelDims | None = None) -> tuple[str, str]:
    """What "auto" runs on this CPU for a model of `dims`, and why: the fastest of fp32, bf16 (native
    only) and int8 on the probe, where it is at least 1.25x fp32's speed (int8 over bf16 only at 1.25x
    bf16's)."""
    probe = cpu_probe(dims)
    speed = probe.speedups
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(probe.measured))
    measured = ", ".join(f"{name} {value:.1f}x" for name, value in sorted(speed.items()))
    measured = (f"the model ran at {measured} fp32's speed here" + ("" if "bf16" in speed else "; no native bf16")
                + f"; measured {when} on {probe.how}, " + ("with the CPU to itself" if probe.calm else
                                                           "while other work shared the CPU"))
    best = max(speed, key=speed.get)
    if speed[best] < _WORTH_IT:
        return "fp32", f"nothing is {_WORTH_IT}x fp32's speed ({measured})"
    if best == "int8" and speed["int8"] < _WORTH_IT * speed.get("bf16", 0):
        # int8 costs its conversion, 1-3 s per process on ViT-B: worth it only when clearly faster.
        return "bf16", f"int8 is not {_WORTH_IT}x bf16's speed, which pays its conversion ({measured})"
    return best, f"the fastest ({measured})"


def check_precision(spec: str, device: torch.device) -> None:
    """A UsageError where `spec` is not a precision, or int8 off a CPU."""
    if spec not in PRECISIONS:
        raise UsageError(f"--precision {spec!r}: expected one of {', '.join(PRECISIONS)}")
    if spec == "int8" and device.type != "cpu":
        raise UsageError(f"--precision int8 runs on CPUs only (dynamic int8 Linear layers); on {device.type} "
                         "use bf16 or auto")


def resolve_precision(spec: str, device: torch.device, dims: ModelDims | None = None) -> str:
    """"auto" is bf16 on CUDA, and on a CPU the fastest of fp32, bf16 and int8 for a model of `dims`
    (`auto_cpu_precision`; None: the default ViT-B); "fp32", "bf16" and "int8" (CPU only) are kept as
    they are."""
    check_precision(spec, device)
    if spec != "auto":
        return spec
    if device.type == "cuda":
        return "bf16"
    return auto_cpu_precision(dims)[0]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where `precision` resolves to bf16 (the frozen ViTs dominate and are bf16-safe),
    exact fp32 otherwise (int8 is in the model's layers: runtime/quantize.py)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
