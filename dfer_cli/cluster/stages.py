"""The predict pipeline's stages as Ray Data callables: `prepare` (CPU tasks: decode, faces, fbank, people),
`DferPredictor` (actors: the model) and, on the driver, `PartJoiner` (a long timeline's parts made whole).

    ds = ray.data.from_items([{"input": uri, "source": uri} for uri in uris])
    ds = ds.flat_map(prepare, fn_kwargs={"config": config, "size": model.image_size})
    ds = ds.map_batches(DferPredictor, fn_constructor_kwargs={"weights": model, "config": config},
                        batch_size=4, compute=ActorPoolStrategy(size=2), num_gpus=1)
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from dfer_cli.api import Model, load_model
from dfer_cli.cluster.inputs import read_source
from dfer_cli.cluster.rows import STAGE_SCHEMA, to_row
from dfer_cli.errors import DferError
from dfer_cli.predict.classifier import Classifier, classify
from dfer_cli.predict.config import PredictConfig
from dfer_cli.predict.frontend import PreparedFile, failed
from dfer_cli.predict.pipeline import complete, guarded_prepare
from dfer_cli.predict.setup import RunSetup
from dfer_cli.predict.tasks import file_tasks
from dfer_cli.predict.timeline import TimelineJoiner
from dfer_cli.runtime.pool import share_cores


def prepare(row: dict, config: PredictConfig, size: int, parts: bool = False) -> Iterator[dict]:
    """The CPU stage (`Dataset.flat_map`): an input row {"input": key, "source": path or URI, and
    optionally "picture": where its explanation is drawn} to its prepared row: the record so far and the
    face crops and fbanks (not frames), pickled. With `parts`, a long timeline (`config.window`) gives a
    row per part of 32 windows, which bounds a row's size, and `PartJoiner` makes it whole again."""
    node = _node()
    try:
        source = read_source(row["source"])
    except DferError as e:
        yield _prepared_row(row, failed(row["source"], e), node)
        return
    window = config.window if parts and not config.explain else None
    for part in file_tasks([source], config.clips, window):
        prepared = guarded_prepare(part, config, size)
        # The part keeps its place, not the file's bytes (a URI's), nor its probe.
        prepared.part = replace(part, path=row["source"], info=None, plans=())
        if part.index == 0 and row.get("picture"):
            prepared.picture = Path(row["picture"])
        yield _prepared_row(row, prepared, node)


class DferPredictor:
    """The model stage (`Dataset.map_batches` on an actor pool): the weights loaded once per actor, then
    batches of prepared rows, several files to a model call, to finished rows (`rows.ROW_SCHEMA`, plus
    `payload`, set only on a timeline's parts). `weights`: a loaded `Model`, or a reference to one in
    Ray's object store (the driver's: every actor then holds the same weights), or what `load_model` takes.
    On CPU, `actors_per_node` shares each node's cores among its actors' torch threads."""

    def __init__(self, weights: Model | ray.ObjectRef | str | None = None, config: PredictConfig | None = None,
                 device: str = "auto", precision: str = "auto", actors_per_node: int | None = None) -> None:
        import torch

        from dfer_cli.runtime.device import pick_device, resolve_precision

        if isinstance(weights, ray.ObjectRef):
            weights = ray.get(weights)
        if isinstance(weights, Model):
            target = pick_device(device)
            self.model = replace(weights, network=weights.network.to(target).eval(), device=target,
                                 precision=resolve_precision(precision, target))
        else:
            self.model = load_model(weights, device, precision, warn=False)
        self.setup = self.model.setup(config)
        if actors_per_node and self.model.device.type == "cpu":  # else Ray's one thread per reserved CPU
            share_cores(actors_per_node)
        self.classifier = Classifier(self.model.network, self.model.device, self.setup.config.batch_size,
                                     self.model.precision)
        self.node = _node()
        torch.set_grad_enabled(False)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        model, names = self.model, self.model.class_names
        prepared = [pickle.loads(blob) for blob in batch["prepared"]]
        classify([p for p in prepared if p.videos is not None], self.classifier, names)
        rows = []
        for key, decode_node, p in zip(batch["input"], batch["decode_node"], prepared, strict=True):
            where = (model.precision, str(model.device), str(decode_node), self.node)
            if p.part is not None and p.part.count > 1:
                p.videos = p.audios = None
                rows.append({"input": str(key), "path": p.result.path, "status": "part", "weights": model.weights,
                             "precision": where[0], "device": where[1], "decode_node": where[2],
                             "model_node": where[3], "payload": pickle.dumps(p)})
                continue
            result = complete(p, self.classifier, names, self.setup)
            rows.append(to_row(result, str(key), *where))
        return pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)


class PartJoiner:
    """On the driver: the model stage's rows to finished rows, a timeline's parts (which may come in any
    order, from several actors) held until the last is in, then joined and finished as plain predict does."""

    def __init__(self, class_names: list[str], setup: RunSetup) -> None:
        self.class_names, self.setup = class_names, setup
        self.parts: dict[str, dict[int, dict]] = {}

    def add(self, row: dict) -> dict | None:
        """The finished row, or None while a timeline waits for its other parts."""
        if row["status"] != "part":
            return {k: v for k, v in row.items() if k != "payload"}
        held = self.parts.setdefault(row["input"], {})
        p: PreparedFile = pickle.loads(row["payload"])
        held[p.part.index] = {**row, "payload": p}
        if len(held) < p.part.count:
            return None
        del self.parts[row["input"]]
        joiner, whole = TimelineJoiner(), None
        for index in sorted(held):
            whole = joiner.add(held[index]["payload"]) or whole
        first = held[0]
        result = complete(whole, None, self.class_names, self.setup)
        return to_row(result, first["input"], first["precision"], first["device"], first["decode_node"],
                      first["model_node"])


def _prepared_row(row: dict, prepared: PreparedFile, node: str) -> dict:
    return {"input": row["input"], "decode_node": node, "prepared": pickle.dumps(prepared)}


def _node() -> str:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
