"""The one worker pool of dfer: a bounded number of tasks in flight over spawned processes.

`dfer predict` and `dfer prepare` both decode and detect faces in workers. A bounded window (not
`pool.map`) keeps memory flat whatever the number of inputs, and each worker computes with a single
thread, as it is one of `workers` parallel jobs.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing import get_context
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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


@contextmanager
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
