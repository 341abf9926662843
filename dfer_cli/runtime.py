"""Where and how the work runs: the device and the numeric precision that goes with it, the one
batched-inference loop (predict and evaluate), and the one worker pool (predict and prepare).

The pool keeps a bounded number of tasks in flight over spawned processes: a bounded window (not
`pool.map`) keeps memory flat whatever the number of inputs, and each worker computes with a single
thread, as it is one of `workers` parallel jobs.

Under torchrun several processes share the work (`process_group`, `gather`): nccl on CUDA, gloo on
CPU, each process on the GPU of its local rank.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from .errors import DferError, UsageError

PRECISIONS = ("auto", "fp32", "bf16")
T = TypeVar("T")
R = TypeVar("R")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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


def softmax_batches(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    device: torch.device, precision: str = "fp32") -> np.ndarray:
    """Class probabilities (N, C) for batches of (video (B, T, 3, S, S) uint8 or float, audio
    (B, 1, frames, mels)), in order; the model is left in eval mode.

    Videos travel as uint8 where they can (4x fewer bytes than floats) and the model scales them on
    its device; on CUDA the host tensors are pinned so that the copy overlaps the previous batch.
    """
    model.eval()
    cuda = device.type == "cuda"
    out = []
    with torch.inference_mode():
        for video, audio in batches:
            if cuda:
                video, audio = video.pin_memory(), audio.pin_memory()
            video, audio = video.to(device, non_blocking=True), audio.to(device, non_blocking=True)
            with autocast(device, precision):
                out.append(model(video, audio).float().softmax(-1))
    if not out:
        raise DferError("no clips to classify")
    return torch.cat(out).cpu().numpy()


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 2,
                ordered: bool = True) -> Iterator[R]:
    """fn(item) for every item, computed by `workers` processes (0: in this one) with at most
    `ahead` tasks per worker in flight. Results come in input order, or as they finish when
    `ordered` is False. `fn` and the items must pickle (a module-level function, or a partial of one).

    A worker that dies (out of memory, say) raises concurrent.futures.process.BrokenProcessPool.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    # spawn: torch holds threads that a forked child would inherit in a broken state.
    with _one_thread_each(), ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        queue = iter(items)
        pending: deque[Future] = deque()
        try:
            while True:
                for item in queue:
                    pending.append(pool.submit(fn, item))
                    if len(pending) >= ahead * workers:
                        break
                if not pending:
                    return
                if ordered:
                    yield pending.popleft().result()
                    continue
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.remove(future)
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


@contextlib.contextmanager
def _one_thread_each() -> Iterator[None]:
    """Spawned workers inherit these while the pool lives: a BLAS and torch pool of one thread per
    process (measured: 20% faster with 2 workers on 2 cores, and oversubscription only grows with
    the core count)."""
    names = [n for n in _THREAD_VARIABLES if n not in os.environ]
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)


def default_workers(tasks: int, per_worker: int = 1, cap: int = 8) -> int:
    """Worker processes pay a start-up cost of a few seconds (imports, the face detector): one is
    worth it only for `per_worker` tasks or more. Never more than the cores this process may use,
    less one for the main process, nor `cap`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(cap, cores - 1, tasks // max(1, per_worker)))


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def process_group(device_spec: str) -> Iterator[tuple[Ranks, torch.device]]:
    """This process's rank and device, from torchrun's environment; joins the process group for the
    block when launched by torchrun (and not already in one), and leaves it cleanly after."""
    world = world_size()
    device = pick_device(device_spec)
    if world == 1:
        yield Ranks(), device
        return
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Ranks(rank, world), device
        # The last collective holds no tensors: gloo's worker frees an all_gather_object's
        # Python-backed tensors a moment after wait() returns, and a rank that exited at once
        # reached interpreter shutdown first and aborted in that decref.
        dist.barrier()
    finally:
        if owns:
            dist.destroy_process_group()


def gather(obj: object, ranks: Ranks) -> list:
    """`obj` from every rank, in rank order, on every rank."""
    if ranks.world == 1:
        return [obj]
    gathered: list = [None] * ranks.world
    dist.all_gather_object(gathered, obj)
    return gathered
