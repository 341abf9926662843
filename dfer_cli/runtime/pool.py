"""The one worker pool (predict, prepare), the one rule for how many workers to start (predict, prepare,
the training loader) and the one thread limiter: each worker, and each small CPU network, computes with
one thread."""

from __future__ import annotations

import contextlib
import os
import signal
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import TypeVar

import torch

from dfer_cli.errors import DferWarning

T = TypeVar("T")
R = TypeVar("R")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 2,
                ordered: bool = True, limit: float | None = None, late: Callable[[T], R] | None = None,
                ) -> Iterator[R]:
    """fn(item) for every item, computed by `workers` processes (0: in this one) with at most
    `ahead` tasks per worker in flight. Results come in input order, or as they finish when
    `ordered` is False. `fn` and the items must pickle (a module-level function, or a partial of one).
    With `limit` (ordered, workers only): an item not done `limit` s after its turn came gives
    `late(item)`, and the workers are replaced (one stuck in a read is killed; the rest start again).

    A worker that dies (out of memory, say) raises concurrent.futures.process.BrokenProcessPool.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    queue = iter(items)
    pending: deque[tuple[T, Future]] = deque()
    with _one_thread_each():
        pool = _pool(workers)
        try:
            while True:
                for item in queue:
                    pending.append((item, pool.submit(fn, item)))
                    if len(pending) >= ahead * workers:
                        break
                if not pending:
                    return
                if ordered:
                    item, future = pending.popleft()
                    try:
                        result = future.result(timeout=limit)
                    except TimeoutError:
                        _stop(pool, kill=True)
                        pool = _pool(workers)
                        pending = deque((i, pool.submit(fn, i)) for i, _ in pending)
                        result = late(item)
                    yield result
                    continue
                done, _ = wait([f for _, f in pending], return_when=FIRST_COMPLETED)
                pending = deque(e for e in pending if e[1] not in done)  # by the future: items need no ==
                for future in done:
                    yield future.result()
        finally:
            for _, future in pending:
                future.cancel()
            _stop(pool, kill=bool(pending))  # left early (Ctrl-C, an error): the work in flight is unwanted


def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn: torch holds threads that a forked child would inherit in a broken state.
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_leave_interrupts_to_parent)


def _leave_interrupts_to_parent() -> None:
    """Ctrl-C reaches the whole process group: the parent stops the workers, which would otherwise each
    print a KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(pool: ProcessPoolExecutor, kill: bool = False) -> None:
    """Shut the pool down and join every worker, so that none outlives the run; `kill` first ends
    workers stuck in a task (the executor has no other way to abandon one)."""
    processes = list(pool._processes.values())  # the executor exposes them no other way
    if kill:
        for process in processes:
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        process.join()


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


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the system tells it, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_count(tasks: int | None = None, *, per_worker: int = 1, cap: int = 8, reserve: int = 1,
                 least: int = 1) -> int:
    """How many worker processes to start: never more than the usable cores less `reserve` kept for
    this process's own work, nor `cap`, nor one per `per_worker` tasks (a worker pays seconds of
    start-up: imports, the face detector); 0 (work here) when that leaves fewer than `least`."""
    count = min(cap, usable_cores() - reserve)
    if tasks is not None:
        count = min(count, tasks // max(1, per_worker))
    return count if count >= least else 0


def clamp_workers(asked: int) -> int:
    """An asked worker count, at most one per usable core (each worker holds a core and about 250 MB;
    more only queue for the cores); a DferWarning says when it is lowered."""
    cores = usable_cores()
    if asked > cores:
        warnings.warn(f"{asked} workers asked, {cores} started: one per usable core",
                      DferWarning, stacklevel=2)
    return min(asked, cores)


@contextlib.contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """torch on one thread in this process for the block, on a CPU. Small networks' tensors (the
    face detector's) cost more in synchronisation than threads save (measured on 2 busy cores: 3-30x
    slower wall time with 2 threads)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def share_cores(sharers: int) -> int:
    """Sets torch's threads in this process to its share of the usable cores among `sharers` model
    processes on one machine, and returns it. A Ray actor starts with one thread per CPU it reserved
    (Ray sets OMP_NUM_THREADS), where plain predict's model uses every core beside its decoders."""
    threads = max(1, usable_cores() // max(1, sharers))
    torch.set_num_threads(threads)
    return threads
