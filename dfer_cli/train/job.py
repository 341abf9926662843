"""A training run's life cycle: what it trains on and from (`TrainJob`, saved as RUN_DIR/run.json), the
model it starts from, and `train_run`, which prepares the data, builds the model and trains it."""

# A new run refuses a folder that already holds one before it writes anything there, and writes
# run.json only once its data and model are ready, so that a mistyped option leaves no run behind.
# A resumed run reads run.json and builds its model from RUN_DIR/last alone (dims and weights), so the
# encoder or init-weights files it started from may have moved since.

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from dfer_cli import paths
from dfer_cli.atomic import atomic_write_text, recover_dir
from dfer_cli.errors import DferError, UsageError
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.runtime.distributed import ranks
from dfer_cli.train import loader, prepare
from dfer_cli.train.cache import SKIPPED, ClipSet
from dfer_cli.train.datasets import Dataset, open_dataset
from dfer_cli.train.loop import CHECKPOINT_DIR, STATE_FILE, RunConfig, TrainRecipe, build_model, finetune_model, train
from dfer_cli.weights import store
from dfer_cli.weights.format import WeightsConfig, load_dfer

RUN_FILE = "run.json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainJob:
    """What a run trains on and from: saved as RUN_DIR/run.json so that --resume needs only --out.
    Paths are kept as absolute strings (the JSON form); `recipe` is a TrainRecipe as a dict."""

    dataset: str  # dfew, mafw or folder
    data: str
    fold: int
    arch: str  # base: the paper's model; tiny: a small random model for smoke tests
    size: int | None  # face size; None: 160, or the --init-weights model's
    image_encoder: str | None
    audio_encoder: str | None
    init_weights: str | None  # an entry name, an official .pth or a dfer folder
    val_split: str | None  # None: val when the data set has one; "none": no validation
    cache: str | None  # None: the default cache for the model's face size
    recipe: dict
    labels: str | None = None
    val_fraction: float = 0.2

    def open_dataset(self) -> Dataset:
        return open_dataset(self.dataset, Path(self.data), self.fold, Path(self.labels) if self.labels else None,
                            self.val_fraction)


def default_run_dir(dataset: str, fold: int) -> Path:
    """$DFER_HOME/runs/<dataset>-fold<k>-<time>: where a run goes when no folder is named. Under torchrun
    every process must name the same folder, which a clock reading cannot promise."""
    if ranks().world > 1:
        raise UsageError("under torchrun every process must name the same run folder: add --out")
    return paths.runs_dir() / f"{dataset}-fold{fold}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def read_job(out: Path) -> TrainJob:
    """The job of the run in `out` (its run.json), to resume it."""
    path = out / RUN_FILE
    if not path.is_file():
        raise DferError(f"nothing to resume: {path} does not exist")
    try:
        return TrainJob(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise DferError(f"{path}: not a dfer run file ({e})") from None


def train_run(job: TrainJob, run: RunConfig, log: Log | None = None) -> Path:
    """Train `job` in the folder `run.out` and return the final checkpoint folder (RUN_DIR/last).

    A new run refuses a folder that holds a run; with `run.resume`, `job` must be that run's own
    (`read_job(run.out)`) and training continues from its last checkpoint. Clips the cache lacks are
    prepared first. `log` gets the progress lines (default: stderr); under torchrun only rank 0 speaks.
    """
    main = ranks().main
    say = (log or functools.partial(print, file=sys.stderr)) if main else _quiet
    if run.resume and job != read_job(run.out):
        raise DferError(f"{run.out / RUN_FILE} holds another job: resume with the run's own (read_job)")
    if main and not run.resume:
        _refuse_existing_run(run.out)
    recipe = TrainRecipe(**job.recipe)
    adapter = job.open_dataset()
    class_names = list(adapter.class_names)
    if run.resume:
        model, done = _resumed_model(run.out, len(class_names))
        if done >= recipe.epochs:
            final = run.out / CHECKPOINT_DIR
            say(f"{run.out}: the run finished all {recipe.epochs} epochs; nothing to resume\n"
                f"final checkpoint: {final}\n  {evaluate_hint(job, final)}")
            return final
    else:
        model = _starting_model(job, len(class_names), recipe.seed)
    if job.arch == "tiny":
        say("--arch tiny: a small random model without pretrained encoders; for smoke tests only")
    size = model.dims.image_size
    train_set, val_set = _datasets(job, adapter, size, recipe.seed, say)
    if main and not run.resume:
        atomic_write_text(run.out / RUN_FILE, json.dumps(asdict(job), indent=2) + "\n")
    provenance = {"trained_by": "dfer train", "run": str(run.out.resolve()), "arch": job.arch,
                  "init_weights": job.init_weights, "image_encoder": job.image_encoder,
                  "audio_encoder": job.audio_encoder}
    weights = WeightsConfig(model.dims, class_names, job.dataset,
                            job.fold if job.dataset != "folder" else None, provenance)
    say(f"training on {adapter.name}: {len(train_set)} clips, {size} px, {recipe.epochs} epochs, "
        f"batch {recipe.batch_size} -> {run.out}")

    def report(record: dict) -> None:
        val = f"  val UAR {record['val_uar']:.2f} WAR {record['val_war']:.2f}" if "val_uar" in record else ""
        say(f"epoch {record['epoch']}/{recipe.epochs}  loss {record['train_loss']:.4f}  lr {record['lr']:.2e}  "
            f"{record['samples_per_s']:.1f} samples/s{val}")

    final = train(model, train_set, weights, recipe, run, val_set, on_epoch=report)
    say(f"final checkpoint: {final}\n  {evaluate_hint(job, final)}")
    return final


def evaluate_hint(job: TrainJob, weights: Path) -> str:
    """The `dfer evaluate` command line that scores `weights` on the data this run held out."""
    args = ["dfer", "evaluate", "--weights", str(weights), "--dataset", job.dataset, "--data", job.data]
    if job.dataset == "folder":
        args += ["--labels", job.labels] if job.labels else []
        args += ["--val-fraction", f"{job.val_fraction:g}"] if job.val_fraction != 0.2 else []
    else:
        args += ["--fold", str(job.fold)]
    args += ["--cache", job.cache] if job.cache else []
    return shlex.join(args)


def _refuse_existing_run(out: Path) -> None:
    held = [p for p in (out / RUN_FILE, out / CHECKPOINT_DIR / STATE_FILE) if p.exists()]
    if held:
        raise DferError(f"{out} already holds a run ({held[0].name}): pass --resume to continue it, "
                        f"or another --out")


def _datasets(job: TrainJob, adapter: Dataset, size: int, seed: int,
              say: Log) -> tuple[loader.CacheDataset, loader.CacheDataset | None]:
    """The train split, augmented, and the split watched after every epoch (or None)."""
    root = Path(job.cache) if job.cache else prepare.default_cache(adapter, size)
    train_clips = loader.prepare_and_read(adapter, "train", root, size, say)
    _refuse_empty_classes(adapter, train_clips)
    train_set = loader.CacheDataset(train_clips, train=True, size=size, seed=seed)
    val_split = job.val_split or ("val" if "val" in adapter.splits else "none")
    if val_split == "none":
        return train_set, None
    val_clips = loader.prepare_and_read(adapter, val_split, root, size, say)
    return train_set, loader.CacheDataset(val_clips, train=False, size=size)


def _refuse_empty_classes(adapter: Dataset, clips: ClipSet) -> None:
    """A class whose every listed clip was left out (unreadable, no face) trained as an empty class and
    scored "val UAR 100.00"; fewer than two classes with clips cannot be learnt. Both are refused."""
    listed = {s.label for s in adapter.samples("train")}
    usable = set(clips.labels.tolist())
    empty = [adapter.class_names[i] for i in sorted(listed - usable)]
    if empty:
        raise DferError(f"{adapter.name} train: class {', '.join(map(repr, empty))} has no usable clip (every "
                        f"one was left out: see {clips.root / SKIPPED}); fix or remove its videos")
    if len(usable) < 2:
        raise DferError(f"{adapter.name} train: clips of {len(usable)} class only; training needs two at least")


def _resumed_model(out: Path, num_classes: int) -> tuple[MMADFER, int]:
    """The model of the run's last checkpoint, dims and weights, whatever it was first built from, and
    the epochs it has finished."""
    checkpoint = out / CHECKPOINT_DIR
    # Under torchrun every process may try to put back a checkpoint that a kill left aside: one
    # rename wins, and the others find it already in place.
    with contextlib.suppress(FileNotFoundError):
        recover_dir(checkpoint)
    if not (checkpoint / STATE_FILE).is_file():
        raise DferError(f"nothing to resume: {checkpoint / STATE_FILE} does not exist")
    loaded = load_dfer(checkpoint)
    model = loaded.model
    if model.dims.num_classes != num_classes:
        raise DferError(f"{checkpoint} has {model.dims.num_classes} classes, the data set now has {num_classes}")
    return model, int(loaded.config.provenance.get("epoch", 0))


def _starting_model(job: TrainJob, num_classes: int, seed: int) -> MMADFER:
    if job.arch not in ("base", "tiny"):
        raise UsageError(f"--arch {job.arch!r}: expected base or tiny")
    encoders = job.image_encoder or job.audio_encoder
    if job.arch == "tiny":
        if encoders or job.init_weights:
            raise UsageError("--arch tiny has no pretrained encoders: drop --image-encoder, --audio-encoder "
                             "and --init-weights (or use --arch base)")
        sized = {"image_size": job.size} if job.size else {}
        return build_model(ModelDims.tiny(num_classes=num_classes, **sized), seed)
    if job.init_weights:
        if encoders:
            raise UsageError("--init-weights already holds both encoders: drop --image-encoder and "
                             "--audio-encoder")
        loaded = store.resolve(job.init_weights)
        if job.size and job.size != loaded.config.dims.image_size:
            raise UsageError(f"--size {job.size}, but {job.init_weights} is a "
                             f"{loaded.config.dims.image_size} px model")
        return finetune_model(loaded, num_classes, seed)
    if not (job.image_encoder and job.audio_encoder):
        raise UsageError("--arch base starts from the pretrained encoders: pass --image-encoder "
                         "mae_face_pretrain_vit_base.pth and --audio-encoder audiomae_pretrained.pth, or "
                         "--init-weights to fine-tune trained weights (--arch tiny: a random smoke-test "
                         "model)")
    try:
        dims = ModelDims(image_size=job.size or 160, num_classes=num_classes)
    except ValueError as e:
        raise UsageError(f"--size {job.size}: {e}") from None
    return build_model(dims, seed, Path(job.image_encoder), Path(job.audio_encoder))


def _quiet(line: str) -> None:
    pass
