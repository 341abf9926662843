"""The one worker pool (predict, prepare), the one rule for how many workers to start (predict, prepare,
the training loader) and the one thread limiter: each worker, and each small CPU network, computes with
one thread."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TypeVar

import torch

from dfer_cli.errors import DferWarning, UsageError

T = TypeVar("T")
R = TypeVar("R")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 2, ordered: bool = True,
                limit: float | None = None, late: Callable[[T], R] | None = None, *,
                lost: Callable[[T, str], R]) -> Iterator[R]:
    """fn(item) for every item, computed by `workers` processes (0: in this one) with at most
    `ahead` tasks per worker in flight. Results come in input order, or as they finish when
    `ordered` is False. `fn` and the items must pickle (a module-level function, or a partial of one).

    An item whose worker dies (a crash, out of memory, killed) gives `lost(item, reason)`, and the
    items that were in flight beside it run again on fresh workers. With `limit` (s, ordered): an item not
    done `limit` s after its turn came gives `late(item)` (a worker stuck in a read is killed and the
    workers start again; in this process, the item is interrupted where Python code runs).
    """
    if workers <= 0:
        yield from _here(fn, items, limit, late)
        return
    queue = iter(items)
    pending: deque[_Task] = deque()
    with _one_thread_each():
        pool = _Workers(workers)
        try:
            while True:
                for item in queue:
                    pending.append(pool.submit(fn, item))
                    if len(pending) >= ahead * workers:
                        break
                if not pending:
                    return
                waited = [pending[0].future] if ordered else [t.future for t in pending]
                done, _ = wait(waited, timeout=limit if ordered else None, return_when=FIRST_COMPLETED)
                if not done:  # ordered, past the limit
                    overdue = pending.popleft()
                    pool.stop(kill=True)
                    pool = _Workers(workers)
                    pending = deque(pool.submit(fn, t.item) for t in pending)
                    yield late(overdue.item)
                    continue
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    pool, pending = pool.recover(fn, pending, lost)
                    continue
                if ordered:
                    yield pending.popleft().future.result()
                    continue
                finished = [t for t in pending if t.future in done]
                pending = deque(t for t in pending if t.future not in done)  # by the future: items need no ==
                for task in finished:
                    yield task.future.result()
        finally:
            for task in pending:
                task.future.cancel()
            pool.stop(kill=bool(pending))  # left early (Ctrl-C, an error): the work in flight is unwanted


@dataclass
class _Task:
    item: object
    future: Future
    key: int
    deaths: int = 0  # deaths of workers that had begun it, where the one that crashed was not told apart


class _Workers:
    """A process pool that knows which task each worker began: when one dies, the executor fails every
    task in flight, and only the dead worker's own task is lost."""

    def __init__(self, workers: int) -> None:
        self._begun = get_context("spawn").SimpleQueue()
        # spawn: torch holds threads that a forked child would inherit in a broken state.
        self._pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                                         initargs=(self._begun,))
        self._keys = itertools.count()
        self._running: dict[int, int] = {}  # worker pid -> the key of the task it began last

    def submit(self, fn: Callable, item: object, deaths: int = 0) -> _Task:
        key = next(self._keys)
        self._drain()
        try:
            future = self._pool.submit(_run, fn, key, item)
        except BrokenProcessPool as e:  # broken before its failed futures were seen: recover() sees this one
            future = Future()
            future.set_exception(e)
        return _Task(item, future, key, deaths)

    def _drain(self) -> None:
        while not self._begun.empty():  # read as it goes: a full pipe would block the workers
            pid, key = self._begun.get()
            self._running[pid] = key

    def recover(self, fn: Callable, pending: deque[_Task], lost: Callable) -> tuple[_Workers, deque[_Task]]:
        """After a worker died: the dead worker's task gives `lost`, the other unfinished tasks go to
        fresh workers. Where no worker died of its own (one killed with SIGTERM looks like those the
        executor stopped), every task begun then is suspect, and one begun at two such deaths is lost."""
        processes = list(self._pool._processes.values())  # the executor exposes them no other way
        for process in processes:
            process.join()  # the executor is ending the others (SIGTERM)
        # The executor's own thread may reap a worker first: its exit status then shows a moment later.
        for _ in range(200):
            if all(p.exitcode is not None for p in processes):
                break
            time.sleep(0.005)
        self._drain()
        exits = {p.pid: p.exitcode for p in processes}
        if not any(pid in self._running for pid in exits):
            # The executor ends the other workers once one has left: theirs may read SIGTERM.
            if _IMPORTING_MAIN in exits.values() and set(exits.values()) <= {_IMPORTING_MAIN, -signal.SIGTERM}:
                raise UsageError("worker processes import the main script, and this one starts dfer as it is "
                                 "imported: put its calls under `if __name__ == \"__main__\":` (as in the "
                                 "README's example), or pass workers=0")
            raise BrokenProcessPool("the worker processes died before they began a task")
        crashed = {self._running[pid]: code for pid, code in exits.items()
                   if code not in (0, -signal.SIGTERM) and pid in self._running}
        begun = {self._running[pid]: code for pid, code in exits.items() if pid in self._running}
        self.stop()
        fresh = _Workers(len(processes))
        tasks: deque[_Task] = deque()
        for task in pending:
            if task.future.done() and not isinstance(task.future.exception(), BrokenProcessPool):
                tasks.append(task)  # finished before the death
                continue
            deaths = task.deaths + (not crashed and task.key in begun)
            code = crashed.get(task.key, begun.get(task.key) if deaths >= 2 else None)
            if code is None:
                tasks.append(fresh.submit(fn, task.item, deaths))
                continue
            done: Future = Future()
            done.set_result(lost(task.item, f"the worker analysing it died ({_exit_reason(code)})"))
            tasks.append(_Task(task.item, done, task.key))
        return fresh, tasks

    def stop(self, kill: bool = False) -> None:
        """Shut the pool down and join every worker, so that none outlives the run; `kill` first ends
        workers stuck in a task (the executor has no other way to abandon one)."""
        processes = list(self._pool._processes.values())
        if kill:
            for process in processes:
                process.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for process in processes:
            process.join()
        self._begun.close()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {-code}"
    return f"exit status {code}"


_IMPORTING_MAIN = 86  # a worker's exit status: it was importing a script that starts dfer at import


def leave_if_importing_main() -> None:
    """In a worker process still importing the main script (spawn runs it again in each worker; one
    without the `__main__` guard would load a model there and start workers of its own): exit at once,
    with the status that the parent reports as that."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        os._exit(_IMPORTING_MAIN)


_begun_tasks = None  # in a worker: where it says which task it begins


def _start_worker(begun: object) -> None:
    """Ctrl-C reaches the whole process group: the parent stops the workers, which would otherwise each
    print a KeyboardInterrupt traceback."""
    global _begun_tasks
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _begun_tasks = begun


def _run(fn: Callable[[T], R], key: int, item: T) -> R:
    _begun_tasks.put((os.getpid(), key))  # written through before fn runs: a crash in fn cannot lose it
    return fn(item)


class _Late(BaseException):
    """Raised into an item's work in this process at its time limit; a BaseException, so that the
    work's own `except Exception` does not take it for the item's error."""


def _here(fn: Callable[[T], R], items: Iterable[T], limit: float | None, late: Callable[[T], R] | None,
          ) -> Iterator[R]:
    """bounded_map in this process. The limit is an interval timer (SIGALRM), from the main thread
    only, and only where nothing else uses that signal."""
    if not limit or threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        yield from map(fn, items)
        return
    for item in items:
        previous = signal.signal(signal.SIGALRM, _raise_late)
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            result = fn(item)
        except _Late:
            result = late(item)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        yield result


def _raise_late(signum: int, frame: object) -> None:
    raise _Late


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
