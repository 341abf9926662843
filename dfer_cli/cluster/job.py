"""`predict_on_ray`: the predict pipeline on a Ray cluster, composed in one place. Inputs -> CPU tasks
(decode, faces, fbank, people) -> model actors (one per GPU, or on CPU) -> the driver, which joins a
timeline's parts and writes rows to the output folder as they come; a rerun skips what is there."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from dfer_cli.cluster.config import RayConfig
from dfer_cli.cluster.inputs import list_inputs
from dfer_cli.cluster.reaper import descendants, start_reaper, stop_reaper
from dfer_cli.cluster.sink import RowSink, finished_rows, holds_rows
from dfer_cli.errors import DferError, UsageError
from dfer_cli.predict.config import PredictConfig
from dfer_cli.predict.setup import RunSetup

INSTALL = "pip install 'dfer[ray]'"


@dataclass(frozen=True)
class RaySummary:
    """What a Ray job did: rows written now, inputs skipped as already in the output, and how many of
    this job's inputs (written now or before) have an error row; where and how the model ran ("" when
    every input was done before)."""

    output: Path
    written: int
    skipped: int
    failed: int
    precision: str
    device: str


def predict_on_ray(inputs: Sequence[str], output: str | os.PathLike, weights: str | None = None,
                   config: PredictConfig | None = None, ray: RayConfig | None = None, device: str = "auto",
                   precision: str = "auto", on_start: Callable[[int, int], None] | None = None,
                   on_row: Callable[[dict], None] | None = None) -> RaySummary:
    """Every input analysed once on Ray, its row (`cluster/rows.py`) in Parquet under `output`; a rerun
    skips the inputs already there. `inputs`: files, folders and URIs (paths seen alike by every node),
    plus `config.from_list`. `on_start(to_do, skipped)` hears the counts, `on_row(row)` each row written."""
    ray_lib = _import_ray()
    ray = ray or RayConfig()
    config = config or PredictConfig()
    output = Path(output)
    todo = list_inputs(inputs, config.recursive, config.extensions, config.from_list)
    # Ray's start (seconds of its own processes starting) overlaps the loading of the weights; not where
    # the output holds rows already, as a rerun with nothing left to do starts no cluster.
    starting = None if holds_rows(output) else _Starting(ray_lib, ray.address)
    stop = None
    try:
        from dfer_cli.api import load_model

        # Loaded once here, then shared by every actor through Ray's object store: all of them hold the
        # same weights (random ones included) without a shared file system.
        model = load_model(weights, "cpu", "fp32", warn=False)
        setup = model.setup(config)
        config = setup.config
        run = _run_key(model.weights, config)
        done = finished_rows(output, run)
        keys = {i.key for i in todo}
        todo_now = [i for i in todo if i.key not in done]
        if on_start is not None:
            on_start(len(todo_now), len(todo) - len(todo_now))
        failed = sum(1 for key, status in done.items() if key in keys and status == "error")
        if not todo_now:  # all done before: no cluster needed
            return RaySummary(output, 0, len(todo), failed, "", "")
        stop = _start(ray_lib, ray.address) if starting is None else starting.result()
        starting = None
        gpus = int(ray_lib.cluster_resources().get("GPU", 0))
        actor_device = ("cuda" if gpus else "cpu") if device == "auto" else device
        import torch

        from dfer_cli.runtime.device import resolve_precision

        settled = resolve_precision(precision, torch.device(actor_device))  # once, for every actor
        # The actors get a reference to one copy in the object store, which each node holds once, rather
        # than the model pickled into every actor's arguments; the driver's own copy goes.
        shared, size, class_names = ray_lib.put(model), model.image_size, model.class_names
        del model
        sink = RowSink(output, run, ray.flush_files, ray.flush_seconds)
        try:
            stages = _Stages(shared, size, class_names, setup, ray, gpus, actor_device, settled)
            for row in _rows(ray_lib, todo_now, stages):
                sink.add(row)
                failed += row["status"] == "error"
                if on_row is not None:
                    on_row(row)
        finally:
            sink.close()
    finally:
        if starting is not None:  # started early, then not needed (all done, or an error before the job)
            stop = starting.result()
        if stop is not None:
            stop()
    return RaySummary(output, sink.written, len(todo) - len(todo_now), failed, settled, actor_device)


@dataclass(frozen=True)
class _Stages:
    """What sizes and feeds the job's two stages."""

    weights: object  # the Model, in Ray's object store
    image_size: int
    class_names: list[str]
    setup: RunSetup
    ray: RayConfig
    gpus: int
    device: str
    precision: str


def _rows(ray_lib, todo: list, s: _Stages) -> Iterator[dict]:
    """The finished rows as the pipeline gives them (in no set order): a Ray task per file (the CPU
    stage) and model actors fed batches of prepared files. Plain tasks and actors rather than a Ray Data
    job: Ray Data starts three helper actors of its own first, seconds of a short job (docs/benchmarks.md)."""
    from dfer_cli.cluster.stages import DferPredictor, PartJoiner

    config = s.setup.config
    pictures = s.setup.pictures([i.source for i in todo]) or [None] * len(todo)
    items = [{"input": i.key, "source": i.source, "picture": None if pic is None else str(pic)}
             for i, pic in zip(todo, pictures, strict=True)]
    files_per_call = s.ray.files_per_call or max(1, config.batch_size // max(1, config.clips.clips))
    nodes = max(1, sum(1 for n in ray_lib.nodes() if n.get("Alive")))
    count = s.ray.actors or max(1, s.gpus)
    # A killed actor is started again and its calls rerun; a task whose worker died runs again (Ray's default).
    actor = ray_lib.remote(num_cpus=1, num_gpus=1 if s.gpus and s.device != "cpu" else 0, max_restarts=-1,
                           max_task_retries=-1)(DferPredictor)
    actors = [actor.remote(s.weights, config, s.device, s.precision, -(-count // nodes)) for _ in range(count)]
    task = ray_lib.remote(num_cpus=s.ray.cpus_per_task, scheduling_strategy="SPREAD")(_prepare)
    # Files decoding or decoded ahead of the model are bounded (the driver holds the decoded ones): two
    # per CPU, and a model call's worth.
    ahead = 2 * max(1, int(ray_lib.cluster_resources().get("CPU", 1))) + files_per_call
    waiting, preparing, calls, ready = iter(items), [], {}, []
    joiner = PartJoiner(s.class_names, s.setup)
    try:
        while True:
            room = max(0, ahead - len(preparing) - len(ready))
            preparing += [task.remote(item, config, s.image_size) for item in islice(waiting, room)]
            idle = [a for a in actors if sum(1 for b in calls.values() if b is a) < 2]
            while idle and (len(ready) >= files_per_call or (ready and not preparing)):
                batch, ready = ready[:files_per_call], ready[files_per_call:]
                columns = {k: np.array([r[k] for r in batch], dtype=object) for k in batch[0]}
                chosen = idle.pop(0)
                calls[chosen.__call__.remote(columns)] = chosen
            if not preparing and not calls:
                return
            done, _ = ray_lib.wait([*preparing, *calls], num_returns=1)
            for ref in done:
                if ref in calls:
                    del calls[ref]
                    for row in ray_lib.get(ref).to_pylist():
                        finished = joiner.add(row)
                        if finished is not None:
                            yield finished
                else:
                    preparing.remove(ref)
                    ready += ray_lib.get(ref)
    except Exception as e:  # Ray's own (a task that kept failing, a lost cluster): what is written stays
        raise DferError(f"the Ray job stopped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "rerun the same command to resume") from None


def _prepare(row: dict, config: PredictConfig, size: int) -> list[dict]:
    """The CPU stage of one file, as a Ray task: its prepared rows (several for a timeline in parts)."""
    from dfer_cli.cluster.stages import prepare

    return list(prepare(row, config, size, parts=True))


def _run_key(weights: str, config: PredictConfig) -> dict:
    """What shapes a row beyond its file: a run resumed with other weights or options would mix records."""
    c = config
    return {"weights": weights, "window": c.window, "clips": c.clips.clips, "frame_order": c.clips.frame_order,
            **c.people.record_options(), "explain": c.explain}


def _import_ray():
    try:
        import pyarrow.parquet  # noqa: F401  (the rows' format)
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray and pyarrow, which dfer does not install by default: {INSTALL}") from None
    return ray


class _Starting:
    """`_start` in a thread of its own, which lives until the returned stop has run: Ray's head
    processes end with the thread that started them (Linux's parent-death signal is per thread)."""

    def __init__(self, ray_lib, address: str) -> None:
        self._ready: Future = Future()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ray_lib, address), name="ray-start", daemon=True)
        self._thread.start()

    def _run(self, ray_lib, address: str) -> None:
        try:
            stop = _start(ray_lib, address)
        except BaseException as e:  # raised in the driver's thread by `result`
            self._ready.set_exception(e)
            return
        self._ready.set_result(stop)
        self._done.wait()
        if stop is not None:
            stop()

    def result(self) -> Callable[[], None]:
        """Once Ray is there (its start's error raised here): what stops it and ends the thread."""
        self._ready.result()

        def stop() -> None:
            self._done.set()
            self._thread.join()

        return stop


def _start(ray_lib, address: str) -> Callable[[], None] | None:
    """Connects to (or with "local" starts) Ray, quietly; where this call did, what ends it (a local Ray
    stops, and nothing of it outlives the driver: cluster/reaper.py; a cluster is only left)."""
    if ray_lib.is_initialized():
        return None
    # Ray's C++ core logs to the driver's stderr: an error-level line for every actor pool of Ray Data
    # (about its constructor arguments, which Ray Data itself puts in the object store) and, when this
    # level is set, one line saying so. Only fatal ones are shown, and that one line is hidden.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    spared = descendants()
    try:
        with _stderr_hidden():
            ray_lib.init(address=address, **kwargs)  # "local" always starts a new one, as Ray reads it
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise DferError(f"--ray {address}: cannot connect ({str(e).splitlines()[0]})") from None
    reaper = start_reaper(spared) if address == "local" else None

    def stop() -> None:
        ray_lib.shutdown()
        stop_reaper(reaper)

    return stop


@contextmanager
def _stderr_hidden() -> Iterator[None]:
    """File descriptor 2 points at /dev/null meanwhile (C++ writes there directly, past sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
