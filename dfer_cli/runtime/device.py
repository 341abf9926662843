"""The device and the numeric precision that goes with it: CUDA or CPU; fp32, bf16 autocast or int8
Linear layers, whichever measures fastest on this CPU."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dfer_cli.atomic import atomic_write_text
from dfer_cli.errors import UsageError
from dfer_cli.paths import probe_file
from dfer_cli.runtime import registry

if TYPE_CHECKING:
    from dfer_cli.model import ModelDims

PRECISIONS = ("auto", "fp32", "bf16", "int8")
# Faster than fp32 by at least this on the probe, or auto keeps fp32.
_WORTH_IT = 1.25
# The probe: the model's first 2 block pairs on one clip, in up to 4 rounds after a warm-up (2 when calm).
_PROBE_DEPTH, _ROUNDS = 2, 4
# A timed run that got less than this share of its threads' CPU time shared the CPU with other work.
_BUSY = 0.75
# Kept for this many runs or days, then measured again; a probe under load is measured again by the
# next run, up to this many times in a row (then kept: on a machine always this busy, it is its speed).
_REPROBE_RUNS, _REPROBE_DAYS, _TRIES = 100, 14, 3


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


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo (Linux); None elsewhere or where it has none."""

    def read() -> str:
        try:
            return Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""

    text = registry.get("cpuinfo", None, read)
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field)), None)


def _cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux); other systems
    report False. Elsewhere bf16 is emulated and always slower than fp32."""
    flags = (_cpuinfo("flags") or "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Probe:
    """How much faster than fp32 the model ran in bf16 and int8 on this CPU, and when that was measured."""

    speedups: dict[str, float]  # "bf16" (native bf16 only) and "int8" (0: no dynamic quantization here)
    measured: float  # time.time() of the measurement
    runs: int  # processes that took it, this one included
    calm: bool  # False: measured under load, so measured again by the next run (at most _TRIES times)


def cpu_probe(dims: ModelDims | None = None) -> Probe:
    """The probe for a model of `dims` (None: the default ViT-B), read from `paths.probe_file()` where it
    was measured on this CPU and torch, calmly, fewer than _REPROBE_RUNS runs and _REPROBE_DAYS days
    ago; measured otherwise (a few seconds for ViT-B) and kept there. A re-measurement lets a pick made
    on a bad day correct itself."""
    dims = dims or _default_dims()
    shape = _shape(dims)
    return registry.get("cpu probe", shape, lambda: _probe(dims, shape))


def cpu_speedups(dims: ModelDims | None = None) -> dict[str, float]:
    """`cpu_probe(dims).speedups`."""
    return cpu_probe(dims).speedups


def _default_dims() -> ModelDims:
    from dfer_cli.model import ModelDims

    return ModelDims()


def _shape(dims: ModelDims) -> str:
    """What the speed depends on, less the depth (the probe runs _PROBE_DEPTH of the blocks, all alike)."""
    return (f"{dims.width}w{dims.heads}h{dims.mlp_ratio}m {dims.image_size}px/{dims.patch_size} "
            f"{dims.num_frames}f {dims.audio_frames}x{dims.mel_bins}a")


def _probe(dims: ModelDims, shape: str) -> Probe:
    key = f"{_cpu_name()} | torch {torch.__version__}"
    try:
        saved = json.loads(probe_file().read_text())
        probes = dict(saved["probes"]) if saved.get("key") == key else {}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        probes = {}
    entry = probes.get(shape)
    try:
        fresh = (entry["runs"] < _REPROBE_RUNS and 0 <= time.time() - entry["measured"] < _REPROBE_DAYS * 86400
                 and (entry["calm"] or entry["tries"] >= _TRIES))
        probe = Probe(dict(entry["speedups"]), float(entry["measured"]), int(entry["runs"]) + 1, bool(entry["calm"]))
    except (TypeError, KeyError, ValueError):
        fresh = False
    if fresh:
        entry = {**entry, "runs": probe.runs}
    else:
        speedups, calm = _measure_speedups(dims)
        tries = 0 if calm or entry is None or entry.get("calm", True) else int(entry.get("tries", 0))
        probe = Probe(speedups, time.time(), 1, calm)
        entry = {"speedups": speedups, "measured": probe.measured, "runs": 1, "calm": calm,
                 "tries": tries + (not calm)}
    with contextlib.suppress(OSError):  # a read-only home: measured again next time
        atomic_write_text(probe_file(), json.dumps({"key": key, "probes": {**probes, shape: entry}}))
    return probe


def _measure_speedups(dims: ModelDims) -> tuple[dict[str, float], bool]:
    """The model as predict runs it: one clip (int8 runs clip by clip, and a clip's 16 frames already
    make large matrix products), with the first _PROBE_DEPTH block pairs. One block at batch 1 misled
    (bf16 0.54x fp32 there where the whole model ran 1.7x faster). Rounds alternate the precisions, each
    keeps its fastest run, and a run that got less than _BUSY of its threads' CPU time was disturbed: the
    figures are calm only where each precision had a run that was not."""
    from dfer_cli.model import MMADFER
    from dfer_cli.runtime.quantize import int8_copy

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = MMADFER(replace(dims, depth=_PROBE_DEPTH, drop_path=0.0)).eval()
        video = torch.randint(0, 256, (1, dims.num_frames, 3, dims.image_size, dims.image_size), dtype=torch.uint8)
        audio = torch.randn(1, 1, dims.audio_frames, dims.mel_bins)
    runs: dict[str, tuple[torch.nn.Module, Callable[[], contextlib.AbstractContextManager]]] = {
        "fp32": (network, contextlib.nullcontext)}
    if cpu_has_bf16():
        runs["bf16"] = (network, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    with contextlib.suppress(UsageError):  # no dynamic quantization in this torch
        runs["int8"] = (int8_copy(network), contextlib.nullcontext)
    best = dict.fromkeys(runs, math.inf)
    calm = dict.fromkeys(runs, False)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        for module, context in runs.values():  # kernel selection and first-touch, not timed
            with context():
                module(video, audio)
        for _ in range(_ROUNDS):
            for name, (module, context) in runs.items():
                with context():
                    wall, cpu = time.perf_counter(), time.process_time()
                    module(video, audio)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                best[name] = min(best[name], wall)
                calm[name] |= cpu >= _BUSY * wall * threads
            if all(calm.values()) and _ > 0:
                break
    speedups = {"int8": 0.0} | {name: best["fp32"] / t for name, t in best.items() if name != "fp32"}
    plausible = all(0.05 < v < 20 for name, v in speedups.items() if name in runs)
    return speedups, all(calm.values()) and plausible


def auto_cpu_precision(dims: ModelDims | None = None) -> tuple[str, str]:
    """What "auto" runs on this CPU for a model of `dims`, and why: the fastest of fp32, bf16 (native
    only) and int8 on the probe, where it is at least 1.25x fp32's speed (int8 over bf16 only at 1.25x
    bf16's)."""
    probe = cpu_probe(dims)
    speed = probe.speedups
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(probe.measured))
    measured = ", ".join(f"{name} {value:.1f}x" for name, value in sorted(speed.items()))
    measured = (f"the model ran at {measured} fp32's speed here" + ("" if "bf16" in speed else "; no native bf16")
                + f"; measured {when}, " + (f"taken by {probe.runs} of {_REPROBE_RUNS} runs before it is measured "
                                            f"again" if probe.calm else "under load: measured again next run"))
    best = max(speed, key=speed.get)
    if speed[best] < _WORTH_IT:
        return "fp32", f"nothing is {_WORTH_IT}x fp32's speed ({measured})"
    if best == "int8" and speed["int8"] < _WORTH_IT * speed.get("bf16", 0):
        # int8 costs its conversion, 1-3 s per process on ViT-B: worth it only when clearly faster.
        return "bf16", f"int8 is not {_WORTH_IT}x bf16's speed, which pays its conversion ({measured})"
    return best, f"the fastest ({measured})"


def resolve_precision(spec: str, device: torch.device, dims: ModelDims | None = None) -> str:
    """"auto" is bf16 on CUDA, and on a CPU the fastest of fp32, bf16 and int8 for a model of `dims`
    (`auto_cpu_precision`; None: the default ViT-B); "fp32", "bf16" and "int8" (CPU only) are kept as
    they are."""
    if spec not in PRECISIONS:
        raise UsageError(f"--precision {spec!r}: expected one of {', '.join(PRECISIONS)}")
    if spec == "int8" and device.type != "cpu":
        raise UsageError(f"--precision int8 runs on CPUs only (dynamic int8 Linear layers); on {device.type} "
                         "use bf16 or auto")
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
