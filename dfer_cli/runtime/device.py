"""The device and the numeric precision that goes with it: CUDA or CPU, fp32 or bf16 autocast where it
measures faster."""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path

import torch

from dfer_cli.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16")


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


@functools.cache
def frontend_device(model_device: torch.device, workers: int) -> torch.device:
    """Where the front end's networks that can run batched (the landmark model) run: the model's device
    when the front end runs in this process, the CPU in worker processes, so that none of them starts CUDA."""
    return model_device if workers == 0 else torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux); other systems
    report False. Elsewhere bf16 is emulated and always slower than fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def cpu_bf16_speedup() -> float:
    """How much faster a ViT-B-sized matrix product runs in bf16 than in fp32 on this CPU, measured
    once per process (about 0.1 s). Native bf16 is not enough: on one AVX512-BF16 machine (no AMX)
    torch 2.13 ran the ViT-B forward 1.6x slower in bf16, where another was 2.7x faster."""
    x, w = torch.randn(512, 768), torch.randn(3072, 768)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = x.to(dtype), w.to(dtype)
        torch.nn.functional.linear(a, b)  # kernel selection and first-touch, not timed
        start = time.perf_counter()
        for _ in range(3):
            torch.nn.functional.linear(a, b)
        seconds[dtype] = time.perf_counter() - start
    return seconds[torch.float32] / seconds[torch.bfloat16]


def resolve_precision(spec: str, device: torch.device) -> str:
    """"auto" is bf16 on CUDA, and on CPUs with native bf16 where it measures at least 1.25x faster
    than fp32; else fp32. "fp32" and "bf16" are kept as they are."""
    if spec not in PRECISIONS:
        raise UsageError(f"--precision {spec!r}: expected one of {', '.join(PRECISIONS)}")
    if spec != "auto":
        return spec
    if device.type == "cuda":
        return "bf16"
    return "bf16" if cpu_has_bf16() and cpu_bf16_speedup() >= 1.25 else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where `precision` resolves to bf16 (the frozen ViTs dominate and are bf16-safe),
    exact fp32 otherwise."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
