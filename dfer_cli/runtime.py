"""Where the model runs: device choice and the matching numeric precision."""

from __future__ import annotations

import contextlib

import torch

from .errors import UsageError


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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the frozen ViTs dominate and are bf16-safe); exact fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
