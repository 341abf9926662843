"""The device and the numeric precision that goes with it: CUDA or CPU; fp32, bf16 autocast or int8
Linear layers, whichever measures fastest on this CPU."""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
from pathlib import Path

import torch

from dfer_cli.atomic import atomic_write_text
from dfer_cli.errors import UsageError
from dfer_cli.paths import probe_file

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


@functools.cache
def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo (Linux); None elsewhere or where it has none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field)), None)


def _cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux); other systems
    report False. Elsewhere bf16 is emulated and always slower than fp32."""
    flags = (_cpuinfo("flags") or "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def cpu_speedups() -> dict[str, float]:
    """How much faster one ViT-B block runs in bf16 autocast (native bf16 only) and with int8 Linear
    layers than in fp32 on this CPU (int8 0 where this torch has no dynamic quantization). Measured
    once per machine and torch (about 0.5 s), then read from `paths.probe_file()`."""
    key = f"{_cpu_name()} | torch {torch.__version__}"
    try:
        saved = json.loads(probe_file().read_text())
        if saved.get("key") == key:
            return saved["speedups"]
    except (OSError, ValueError, AttributeError):
        pass
    speedups = _measure_speedups()
    with contextlib.suppress(OSError):  # a read-only home: measured again next time
        atomic_write_text(probe_file(), json.dumps({"key": key, "speedups": speedups}))
    return speedups


def _measure_speedups() -> dict[str, float]:
    """A whole block, not one matrix product: attention stays fp32 under int8, and native bf16 is not
    enough (on one AVX512-BF16 machine without AMX torch 2.13 ran the ViT-B forward 1.6x slower in
    bf16, where another was 2.7x faster). The best of 5 runs each, the least disturbed by other load."""
    from dfer_cli.model import Block
    from dfer_cli.runtime.quantize import quantize_linears

    block = Block(768, 12, 4.0, 0.0).eval()
    runs: dict[str, tuple[torch.nn.Module, contextlib.AbstractContextManager]] = {
        "fp32": (block, contextlib.nullcontext())}
    if cpu_has_bf16():
        runs["bf16"] = (block, torch.autocast("cpu", dtype=torch.bfloat16))
    with contextlib.suppress(UsageError):  # no dynamic quantization in this torch
        runs["int8"] = (quantize_linears(block), contextlib.nullcontext())
    x = torch.randn(1, 197, 768)
    seconds = {}
    with torch.inference_mode():
        for name, (module, context) in runs.items():
            with context:
                module(x)  # kernel selection and first-touch, not timed
                times = []
                for _ in range(5):
                    start = time.perf_counter()
                    module(x)
                    times.append(time.perf_counter() - start)
                seconds[name] = min(times)
    return {"int8": 0.0} | {name: seconds["fp32"] / t for name, t in seconds.items() if name != "fp32"}


def auto_cpu_precision() -> tuple[str, str]:
    """What "auto" runs on this CPU, and why: the fastest of fp32, bf16 (native only) and int8 on the
    probe, where it is at least 1.25x fp32's speed (int8 over bf16 only at 1.25x bf16's)."""
    speed = cpu_speedups()
    measured = ", ".join(f"{name} {value:.1f}x" for name, value in sorted(speed.items()))
    measured = f"a ViT-B block ran at {measured} fp32's speed here" + ("" if "bf16" in speed else "; no native bf16")
    best = max(speed, key=speed.get)
    if speed[best] < _WORTH_IT:
        return "fp32", f"nothing is {_WORTH_IT}x fp32's speed ({measured})"
    if best == "int8" and speed["int8"] < _WORTH_IT * speed.get("bf16", 0):
        # int8 costs its conversion, 1-3 s per process on ViT-B: worth it only when clearly faster.
        return "bf16", f"int8 is not {_WORTH_IT}x bf16's speed, which pays its conversion ({measured})"
    return best, f"the fastest ({measured})"


def resolve_precision(spec: str, device: torch.device) -> str:
    """"auto" is bf16 on CUDA, and on a CPU the fastest of fp32, bf16 and int8 (`auto_cpu_precision`);
    "fp32", "bf16" and "int8" (CPU only) are kept as they are."""
    if spec not in PRECISIONS:
        raise UsageError(f"--precision {spec!r}: expected one of {', '.join(PRECISIONS)}")
    if spec == "int8" and device.type != "cpu":
        raise UsageError(f"--precision int8 runs on CPUs only (dynamic int8 Linear layers); on {device.type} "
                         "use bf16 or auto")
    if spec != "auto":
        return spec
    if device.type == "cuda":
        return "bf16"
    return auto_cpu_precision()[0]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where `precision` resolves to bf16 (the frozen ViTs dominate and are bf16-safe),
    exact fp32 otherwise (int8 is in the model's layers: runtime/quantize.py)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
