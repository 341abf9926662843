"""What this CPU is, and how fast the model runs on it in fp32, bf16 and int8: the probe behind
`--precision auto`. It times the model as predict runs it, keeps a figure in `paths.probe_file()` only
when the CPU was not busy with other work, and measures again when the figure is old or when a run's
own model time contradicts it."""

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

# The model as predict runs it, made shallower: its first 2 block pairs (every pair costs the same) on a
# batch of 2 clips at its own size; a warm-up, then 2 rounds, each precision keeping its faster run
# (25 s in all for ViT-B on 2 busy cores). One ViT-B block at batch 1 misled: bf16 0.54x fp32 there,
# where whole clips ran 1.7x faster.
PROBE_DEPTH, PROBE_CLIPS, _ROUNDS = 2, 2, 2
# A timed run that got less than this share of its threads' CPU time shared the CPU with other work.
BUSY = 0.75
# A calm figure is kept for this many runs or days, then measured again. A figure measured under load is
# not kept, unless this many runs in a row found the CPU busy (busy is then this machine's usual state);
# such a figure is kept for _BUSY_RUNS runs.
_REPROBE_RUNS, _REPROBE_DAYS, _BUSY_TRIES, _BUSY_RUNS = 100, 14, 3, 10
# A calm run whose model time per clip is this many times the figure's (or a run this many times faster)
# contradicts it: the figure is measured again.
CONTRADICTED = 3.0
# The file's format and the probe's method: a figure from another is measured again.
_METHOD = "model probe 2"


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo (Linux); None elsewhere or where it has none."""

    def read() -> str:
        try:
            return Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""

    text = registry.get("cpuinfo", None, read)
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field)), None)


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux); other systems
    report False. Elsewhere bf16 is emulated and always slower than fp32."""
    flags = (_cpuinfo("flags") or "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Probe:
    """The model's seconds per clip in each precision on this CPU (scaled from the probe's depth to the
    model's), and when and how they were measured."""

    seconds: dict[str, float]  # "fp32", "bf16" (native bf16 only), "int8" (where torch can quantize)
    measured: float  # time.time() of the measurement
    runs: int  # processes that took it, this one included
    calm: bool  # False: measured under load (on _BUSY_TRIES runs in a row)
    how: str

    @property
    def speedups(self) -> dict[str, float]:
        """bf16 and int8 against fp32's speed (int8 0 where this torch cannot quantize)."""
        fp32 = self.seconds["fp32"]
        return {"int8": 0.0} | {name: fp32 / t for name, t in self.seconds.items() if name != "fp32"}


def cpu_probe(dims: ModelDims | None = None) -> Probe:
    """The probe for a model of `dims` (None: the default ViT-B): read from `paths.probe_file()` where a
    figure for this CPU, torch and model shape is kept and still current, measured otherwise (a few
    seconds for ViT-B). Once per process."""
    dims = dims or _default_dims()
    return registry.get("cpu probe", _shape(dims), lambda: _read_or_measure(dims))


def check_model_time(dims: ModelDims, precision: str, clips: int, seconds: float, cpu_seconds: float) -> None:
    """A run's own model time for `clips` clips in `precision`: where it is CONTRADICTED times off the
    probe this process took for that model, the figure is dropped, here and in the file, so that the
    next run measures again. A slow run counts only where it had its threads' CPU time."""
    shape = _shape(dims)
    if shape not in registry.held("cpu probe") or clips <= 0 or seconds <= 0:
        return  # no auto pick in this process: nothing to check
    expected = cpu_probe(dims).seconds.get(precision)
    if not expected:
        return
    ratio = seconds / clips / expected
    calm = cpu_seconds >= BUSY * seconds * torch.get_num_threads()
    if ratio < 1 / CONTRADICTED or (ratio > CONTRADICTED and calm):
        registry.drop("cpu probe", shape)
        probes = _saved()
        if shape in probes:
            _save({**probes, shape: {"busy_tries": 0}})


def _default_dims() -> ModelDims:
    from dfer_cli.model import ModelDims

    return ModelDims()


def _shape(dims: ModelDims) -> str:
    """What the model's speed per clip depends on."""
    return (f"{dims.width}w{dims.heads}h{dims.mlp_ratio}m{dims.depth}d {dims.image_size}px/{dims.patch_size} "
            f"{dims.num_frames}f {dims.audio_frames}x{dims.mel_bins}a")


def _key() -> str:
    return f"{cpu_name()} | torch {torch.__version__} | {_METHOD}"


def _saved() -> dict[str, dict]:
    """The kept figures of this CPU and torch, by model shape."""
    try:
        saved = json.loads(probe_file().read_text())
        return dict(saved["probes"]) if saved.get("key") == _key() else {}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def _save(probes: dict[str, dict]) -> None:
    with contextlib.suppress(OSError):  # a read-only home: measured again next time
        atomic_write_text(probe_file(), json.dumps({"key": _key(), "probes": probes}))


def _kept(entry: dict | None) -> Probe | None:
    """The kept figure, taken once more, where it is still current; None where it must be measured."""
    try:
        calm, runs, measured = bool(entry["calm"]), int(entry["runs"]), float(entry["measured"])
        probe = Probe({k: float(v) for k, v in entry["seconds"].items()}, measured, runs + 1, calm, str(entry["how"]))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    current = runs < (_REPROBE_RUNS if calm else _BUSY_RUNS) and 0 <= time.time() - measured < _REPROBE_DAYS * 86400
    return probe if current and probe.seconds.get("fp32", 0) > 0 else None


def _read_or_measure(dims: ModelDims) -> Probe:
    shape, probes = _shape(dims), _saved()
    entry = probes.get(shape)
    probe = _kept(entry)
    if probe is not None:
        _save({**probes, shape: {**entry, "runs": probe.runs}})
        return probe
    seconds, calm = _measure(dims)
    busy = 0 if calm else int((entry or {}).get("busy_tries", 0)) + 1
    how = (f"{PROBE_CLIPS} clips of {dims.num_frames} frames at {dims.image_size} px through the model's first "
           f"{PROBE_DEPTH} of {dims.depth} block pairs, the faster of {_ROUNDS} rounds")
    probe = Probe(seconds, time.time(), 1, calm, how)
    if calm or busy >= _BUSY_TRIES:
        _save({**probes, shape: {"seconds": seconds, "measured": probe.measured, "runs": 1, "calm": calm,
                                 "busy_tries": busy, "how": how}})
    else:  # under load: this process uses it, the next measures again
        _save({**probes, shape: {"busy_tries": busy}})
    return probe


def _timed(call: Callable[[], object]) -> tuple[float, float]:
    """`call()`'s wall seconds and this process's CPU seconds in it."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def _measure(dims: ModelDims) -> tuple[dict[str, float], bool]:
    """Seconds per clip of a model of `dims` in each precision, and whether every precision had a run
    that got BUSY of its threads' CPU time (rounds alternate the precisions, so load hits all alike)."""
    from dfer_cli.model import MMADFER
    from dfer_cli.runtime.quantize import int8_copy

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = MMADFER(replace(dims, depth=PROBE_DEPTH, drop_path=0.0)).eval()
        video = torch.randint(0, 256, (PROBE_CLIPS, dims.num_frames, 3, dims.image_size, dims.image_size),
                              dtype=torch.uint8)
        audio = torch.randn(PROBE_CLIPS, 1, dims.audio_frames, dims.mel_bins)
    runs: dict[str, tuple[torch.nn.Module, Callable[[], contextlib.AbstractContextManager]]] = {
        "fp32": (network, contextlib.nullcontext)}
    if cpu_has_bf16():
        runs["bf16"] = (network, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    with contextlib.suppress(UsageError):  # no dynamic quantization in this torch
        runs["int8"] = (int8_copy(network), contextlib.nullcontext)
    best, calm = dict.fromkeys(runs, math.inf), dict.fromkeys(runs, False)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        for module, context in runs.values():  # kernel selection and first touch, not timed
            with context():
                module(video, audio)
        for _ in range(_ROUNDS):
            for name, (module, context) in runs.items():
                with context():
                    wall, cpu = _timed(lambda m=module: m(video, audio))
                best[name] = min(best[name], wall)
                calm[name] |= cpu >= BUSY * wall * threads
    scale = dims.depth / PROBE_DEPTH / PROBE_CLIPS
    return {name: t * scale for name, t in best.items()}, all(calm.values())
