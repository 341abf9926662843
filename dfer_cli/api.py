"""dfer from Python: `load_model()`, then `predict()` or `stream()`; the CLI is a thin layer over these.

    import dfer_cli as dfer
    model = dfer.load_model("dfew-160")     # an entry, a path, an http(s) URL, or "untrained"
    records = model.predict(["talk.mp4", "clips/"], window=5)"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from dfer_cli.labels import TIME_ORDER
from dfer_cli.predict.classifier import Classifier
from dfer_cli.predict.config import PredictConfig
from dfer_cli.predict.files import collect_inputs
from dfer_cli.predict.pipeline import iter_predict, sharded
from dfer_cli.predict.setup import RunSetup
from dfer_cli.results.records import FileResult
from dfer_cli.runtime.device import check_precision, pick_device, resolve_precision
from dfer_cli.runtime.distributed import local_device, process_group, ranks
from dfer_cli.runtime.pool import leave_if_importing_main
from dfer_cli.runtime.quantize import int8_copy_soon

UNTRAINED = "untrained"
UNTRAINED_SEED = 0
Inputs = str | os.PathLike | Iterable[str | os.PathLike]


class UntrainedWeightsWarning(UserWarning):
    """Random weights: the pipeline runs, the emotions are meaningless."""


class Records(Iterator[FileResult]):
    """The records of a `Model.stream`, one per file as each finishes, in input order. `len()` is how
    many this process will yield: every file's, or none in a torchrun process other than rank 0."""

    def __init__(self, records: Generator[FileResult, None, None], count: int) -> None:
        self._records, self._count = records, count

    def __len__(self) -> int:
        return self._count

    def __next__(self) -> FileResult:
        return next(self._records)

    def close(self) -> None:
        """Stops the run where it is: its worker processes and threads end now, not when the iterator is
        garbage-collected. Leaving a `with model.stream(...) as records:` block closes it too."""
        self._records.close()

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Model:
    """A loaded MMA-DFER model ready to analyse videos (made by `load_model`)."""

    network: torch.nn.Module
    class_names: list[str]
    weights: str  # what classified the records: entry name, path or URL, or the untrained notice
    device: torch.device
    precision: str  # "fp32", "bf16" (autocast) or "int8" (CPU: runtime/quantize.py)
    untrained: bool = False
    frame_order: str = TIME_ORDER  # the order of the frames the weights were trained with (labels.py)

    @property
    def image_size(self) -> int:
        return self.network.dims.image_size

    def predict(self, inputs: Inputs, config: PredictConfig | None = None, **options: object) -> list[FileResult]:
        """The emotion of each video (files, or folders searched for videos): one record per file, in
        input order. `config` (a PredictConfig) or its fields as keywords shape the run: `window=5`
        gives a timeline of one clip per 5 s, `clips=1` one clip per file, `explain=True` adds why
        (voice or face, which moments and face regions), `frame_order="time"` overrides the weights'.
        A file that cannot be analysed gets a record with status "error" and the reason."""
        return list(self.stream(inputs, config, **options))

    def setup(self, config: PredictConfig | None = None, **options: object) -> RunSetup:
        """What a run of these weights goes by, here and on Ray alike: `config` (or the defaults) with
        `options`, the weights' own frame order where none is asked for; the weights' name for every
        record, and on the explanation pictures the notice of untrained weights."""
        config = (config or PredictConfig()).updated(**options)
        if config.clips.frame_order is None:
            config = replace(config, clips=replace(config.clips, frame_order=self.frame_order))
        return RunSetup(config, self.weights, self.weights if self.untrained else "")

    def stream(self, inputs: Inputs, config: PredictConfig | None = None, **options: object) -> Records:
        """Like `predict`, one record at a time as each file finishes. The inputs are listed at once
        (a usage error is raised here, not on the first record). Under torchrun each process analyses
        its share of the files and rank 0 yields all the records."""
        leave_if_importing_main()
        setup = self.setup(config, **options)
        config = setup.config
        paths = collect_inputs(inputs, config.recursive, config.extensions, config.from_list)
        return Records(self._records(paths, setup), len(paths) if ranks().main else 0)

    def _records(self, paths: list[str], setup: RunSetup) -> Iterator[FileResult]:
        classifier = Classifier(self.network, self.device, setup.config.batch_size, self.precision)
        with process_group(str(self.device)) as (here, _):
            if here.world == 1:
                yield from iter_predict(paths, classifier, self.class_names, setup, self.image_size)
            else:
                yield from sharded(paths, classifier, self.class_names, setup, self.image_size, here)


def load_model(weights: str | os.PathLike | None = None, device: str = "auto", precision: str = "auto",
               warn: bool = True) -> Model:
    """The model to analyse videos with.

    weights: an installed entry name (`dfer weights list`), a path to a dfer folder or an official
    MMA-DFER checkpoint, an http(s) URL (downloaded once, then converted), "untrained" (random weights,
    the same on every call, to check the pipeline: a warning says the emotions mean nothing), or None
    for the default entry.
    device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    precision: "auto" (bf16 on CUDA; on a CPU the fastest of fp32, bf16 and int8 on a probe), "fp32",
    "bf16" or "int8" (CPU only: the encoders' and fusion's Linear layers in int8).
    warn: False leaves out the UntrainedWeightsWarning, for a caller that says it in its own words
    (the CLI) or where every record names the weights anyway (Ray's driver and actors).
    """
    from dfer_cli.labels import default_class_names
    from dfer_cli.model import MMADFER, ModelDims
    from dfer_cli.weights import store
    from dfer_cli.weights.format import LoadedWeights, WeightsConfig

    leave_if_importing_main()
    torch_device = local_device(pick_device(device))  # under torchrun: this process's GPU
    check_precision(precision, torch_device)  # before the weights load
    if weights == UNTRAINED:
        dims = ModelDims()
        # Seeded, so that two runs (two processes, two Ray actors) give one file the same labels; the
        # caller's random state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            network = MMADFER(dims).eval()
        loaded = LoadedWeights(network, WeightsConfig(
            dims, list(default_class_names(dims.num_classes)), provenance={"source": UNTRAINED}))
        if warn:
            warnings.warn("untrained random weights: the pipeline runs, the emotions are meaningless",
                          UntrainedWeightsWarning, stacklevel=2)
        label = "untrained (random weights: the emotions are meaningless)"
    else:
        spec = os.fspath(weights) if weights is not None else None
        loaded = store.resolve(spec)
        label = spec or store.default_name()
    network = loaded.model.to(torch_device).eval()
    chosen = resolve_precision(precision, torch_device, loaded.config.dims)  # auto: measured on this model's shape
    if chosen == "int8":
        int8_copy_soon(network)
    return Model(network, list(loaded.config.class_names), label, torch_device, chosen, weights == UNTRAINED,
                 loaded.config.frame_order)
