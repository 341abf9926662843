"""`dfer prepare`, `dfer train` and `dfer evaluate`: options in, config objects out, then prepare.py,
train.py / evaluate.py. Heavy imports stay inside the commands, so that `dfer --help` is quick.

Both read clips through a prepared cache (decoded, face-cropped, fbank computed once): `--cache DIR`,
or by default $DFER_HOME/cache/<dataset>-<size>/, shared by every fold; what a split lacks is
prepared on the fly.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import DferError, UsageError
from .options import (
    CacheOpt,
    DataOpt,
    DatasetName,
    DatasetOpt,
    DeviceOpt,
    FoldOpt,
    LabelsOpt,
    ValFractionOpt,
    WorkersOpt,
)

if TYPE_CHECKING:
    from .evaluate import Evaluation
    from .model import MMADFER
    from .train import RunConfig

RUN_FILE = "run.json"


class Arch(str, Enum):
    base = "base"
    tiny = "tiny"



@dataclass(frozen=True)
class TrainJob:
    """What a run trains on and from: saved as RUN_DIR/run.json so that --resume needs only --out."""

    dataset: str
    data: str
    fold: int
    arch: str
    size: int | None
    image_encoder: str | None
    audio_encoder: str | None
    init_weights: str | None
    val_split: str | None
    cache: str | None  # None: the default cache for the model's face size
    recipe: dict
    labels: str | None = None
    val_fraction: float = 0.2


# Options that define a run: with --resume they come from run.json and may not be given again.
_JOB_OPTIONS = ("dataset", "data", "fold", "arch", "size", "image_encoder", "audio_encoder", "init_weights",
                "val_split", "cache", "labels", "val_fraction", "epochs", "batch_size", "lr", "weight_decay", "seed")


def prepare_command(
    dataset: Annotated[DatasetName, typer.Option(help="dfew, mafw, or folder (one sub-folder of videos per class)")],
    data: Annotated[Path, typer.Option(help="the data set's root folder")],
    fold: FoldOpt = 1,
    split: Annotated[str, typer.Option(help="train, test, val, or all the data set has")] = "all",
    size: Annotated[int, typer.Option(help="face size in px: 112, 160 or 224 (the model's)")] = 160,
    cache: CacheOpt = None,
    workers: Annotated[int | None, typer.Option(
        help="decoding processes (0: in this one; default: the cores, at most 8)", min=0)] = None,
    max_frames: Annotated[int, typer.Option(
        help="face frames kept per clip (an odd multiple of 16); more gives training more choice")] = 48,
    labels: LabelsOpt = None,
    val_fraction: ValFractionOpt = 0.2,
) -> None:
    """Decode, crop faces and compute audio features once, so that training never decodes video.

    One cache per data set and face size holds each clip's face frames and audio input; every fold
    reads from it, so DFEW's five folds are prepared once. An interrupted run resumes where it
    stopped when run again; clips without a face (folder data sets) or with unreadable media are
    skipped and listed.

    Examples:

      dfer prepare --dataset dfew --data ~/DFEW --fold 1

      dfer prepare --dataset mafw --data ~/MAFW --fold 2 --size 224 --workers 16

      dfer prepare --dataset folder --data my_clips/ --val-fraction 0.2
    """
    from .cache import SKIPPED
    from .datasets import open_dataset
    from .prepare import PrepareConfig, default_cache, prepare

    adapter = open_dataset(dataset.value, data, fold, labels, val_fraction)
    splits = list(adapter.splits) if split == "all" else [split]
    if split != "all" and split not in adapter.splits:
        raise DferError(f"{adapter.name} has no split {split!r} (it has {', '.join(adapter.splits)})")
    config = PrepareConfig(size=size, max_frames=max_frames)
    if workers is not None:
        config = replace(config, workers=workers)
    root = cache or default_cache(adapter, size)
    for name in splits:
        summary = prepare(adapter, name, root, config)
        typer.echo(f"{adapter.name} {name}: {summary.prepared} clips prepared, {summary.cached} already cached, "
                   f"{len(summary.skipped)} skipped -> {summary.root}", err=True)
        for line in summary.skipped[:10]:
            typer.echo(f"  skipped {line}", err=True)
        if len(summary.skipped) > 10:
            typer.echo(f"  ... and {len(summary.skipped) - 10} more (listed in {summary.root / SKIPPED})",
                       err=True)
        for line in summary.audio_errors[:10]:
            typer.echo(f"  kept without sound: {line}", err=True)


def train_command(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    fold: FoldOpt = 1,
    out: Annotated[Path | None, typer.Option(
        help="run folder (default: $DFER_HOME/runs/<dataset>-fold<k>-<time>)")] = None,
    arch: Annotated[Arch, typer.Option(
        help="base: the paper's model (2 x ViT-B/16), from --image-encoder + --audio-encoder or "
             "--init-weights. tiny: a small random model without pretrained encoders, for smoke "
             "tests and CPU demos only (its accuracy means nothing)")] = Arch.base,
    size: Annotated[int | None, typer.Option(
        help="face size in px: 112, 160 or 224 (default 160; with --init-weights, its size)")] = None,
    image_encoder: Annotated[Path | None, typer.Option(
        help="MAE-Face ViT-B/16 checkpoint (mae_face_pretrain_vit_base.pth)")] = None,
    audio_encoder: Annotated[Path | None, typer.Option(
        help="AudioMAE ViT-B/16 checkpoint (audiomae_pretrained.pth)")] = None,
    init_weights: Annotated[str | None, typer.Option(
        help="fine-tune from trained weights: an entry name, an official MMA-DFER .pth or a dfer "
             "folder (a new classifier when the class count differs)")] = None,
    val_split: Annotated[str | None, typer.Option(
        help="split evaluated after every epoch (UAR/WAR in the log); default: val when the data set "
             "has one, else none. 'test' watches DFEW/MAFW's test set as the reference scripts did; "
             "'none' skips it")] = None,
    cache: CacheOpt = None,
    labels: LabelsOpt = None,
    val_fraction: ValFractionOpt = 0.2,
    epochs: Annotated[int, typer.Option(help="epochs (cosine schedule to 0 over them)", min=1)] = 25,
    batch_size: Annotated[int, typer.Option(
        help="global batch; under torchrun each of N processes takes batch/N", min=1)] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate", min=0.0)] = 1e-4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay", min=0.0)] = 1e-2,
    seed: Annotated[int, typer.Option(help="seed of the initialisation, shuffling and augmentation")] = 1,
    resume: Annotated[bool, typer.Option(
        "--resume", help="continue the run in --out exactly where it stopped, with its saved settings")] = False,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 4,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model")] = False,
    log_every: Annotated[int, typer.Option(help="steps between loss / throughput log records", min=1)] = 50,
) -> None:
    """Train MMA-DFER with the paper's recipe: AdamW lr 1e-4, weight decay 1e-2, cosine to 0 over 25
    epochs, batch 8, seed 1; the final epoch's checkpoint is the result.

    The run folder gets last/ (dfer weights + the training state, rewritten after every epoch),
    log.jsonl, curves.png and run.json. Multi-GPU: launch with torchrun; the global batch stays 8.

    Examples:

    \b
      dfer train --dataset dfew --data ~/DFEW --fold 1 --out runs/dfew-f1 \\
          --image-encoder mae_face_pretrain_vit_base.pth --audio-encoder audiomae_pretrained.pth

      dfer train --resume --out runs/dfew-f1

    \b
      torchrun --nproc-per-node 4 -m dfer_cli train --dataset dfew --data ~/DFEW \\
          --init-weights dfew-160 --out runs/dfew-ft

    \b
      dfer train --dataset folder --data my_clips/ --arch tiny --epochs 3 --device cpu
    """
    from . import store
    from .atomic import atomic_write_text
    from .train import RunConfig, TrainRecipe

    world = int(os.environ.get("WORLD_SIZE", "1"))
    given = _on_command_line(ctx, _JOB_OPTIONS)
    if resume:
        if out is None:
            raise UsageError("--resume continues a run: give its folder with --out RUN_DIR")
        if given:
            raise UsageError(f"--resume reuses the run's saved settings ({out / RUN_FILE}); drop "
                             + ", ".join("--" + n.replace("_", "-") for n in given))
        job = _read_job(out)
    else:
        if dataset is None or data is None:
            raise UsageError("--dataset and --data are required (or --resume --out RUN_DIR)")
        if out is None:
            if world > 1:
                raise UsageError("under torchrun every process must name the same run folder: add --out")
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            out = store.home() / "runs" / f"{dataset.value}-fold{fold}-{stamp}"
        job = TrainJob(dataset.value, str(data.expanduser().resolve()), fold, arch.value, size,
                       _path_str(image_encoder), _path_str(audio_encoder), init_weights, val_split,
                       _path_str(cache), asdict(TrainRecipe(epochs, batch_size, lr, weight_decay, seed)),
                       _path_str(labels), val_fraction)
    main = int(os.environ.get("RANK", "0")) == 0
    err = Console(stderr=True, highlight=False, quiet=not main)
    run = RunConfig(out=out, device=device, workers=workers, compile=compile_model, resume=resume,
                    log_every=log_every, progress=True)
    if main and not resume:
        atomic_write_text(out / RUN_FILE, json.dumps(asdict(job), indent=2) + "\n")
    final = _run_job(job, run, err)
    err.print(f"final checkpoint: {final}\n  {_evaluate_hint(job, final)}", markup=False, soft_wrap=True)


def _evaluate_hint(job: TrainJob, weights: Path) -> str:
    """The `dfer evaluate` command line that scores `weights` on the data this run held out."""
    args = ["dfer", "evaluate", "--weights", str(weights), "--dataset", job.dataset, "--data", job.data]
    if job.dataset == "folder":
        args += ["--labels", job.labels] if job.labels else []
        args += ["--val-fraction", f"{job.val_fraction:g}"] if job.val_fraction != 0.2 else []
    else:
        args += ["--fold", str(job.fold)]
    args += ["--cache", job.cache] if job.cache else []
    return shlex.join(args)


def _run_job(job: TrainJob, run: RunConfig, err: Console) -> Path:
    from .cache import CacheDataset
    from .checkpoints import WeightsConfig
    from .datasets import open_dataset
    from .prepare import default_cache, open_split
    from .train import TrainRecipe, train

    recipe = TrainRecipe(**job.recipe)
    adapter = open_dataset(job.dataset, Path(job.data), job.fold, Path(job.labels) if job.labels else None,
                           job.val_fraction)
    class_names = list(adapter.class_names)
    model = _job_model(job, len(class_names), recipe.seed)
    if job.arch == Arch.tiny.value:
        err.print("[yellow]--arch tiny:[/yellow] a small random model without pretrained encoders; "
                  "for smoke tests only")
    size = model.dims.image_size
    root = Path(job.cache) if job.cache else default_cache(adapter, size)
    train_set = CacheDataset(open_split(adapter, "train", root, size), train=True, size=size, seed=recipe.seed)
    val_split = job.val_split or ("val" if "val" in adapter.splits else "none")
    val_set = None
    if val_split != "none":
        val_set = CacheDataset(open_split(adapter, val_split, root, size), train=False, size=size)
    provenance = {"trained_by": "dfer train", "run": str(run.out.resolve()), "arch": job.arch,
                  "init_weights": job.init_weights, "image_encoder": job.image_encoder,
                  "audio_encoder": job.audio_encoder}
    weights = WeightsConfig(model.dims, class_names, job.dataset,
                            job.fold if job.dataset != "folder" else None, provenance)
    err.print(f"training on {adapter.name}: {len(train_set)} clips, {size} px, {recipe.epochs} epochs, "
              f"batch {recipe.batch_size} -> {run.out}", markup=False)

    def report(record: dict) -> None:
        val = (f"  val UAR {record['val_uar']:.2f} WAR {record['val_war']:.2f}"
               if "val_uar" in record else "")
        err.print(f"epoch {record['epoch']}/{recipe.epochs}  loss {record['train_loss']:.4f}  "
                  f"lr {record['lr']:.2e}  {record['samples_per_s']:.1f} samples/s{val}", markup=False)

    return train(model, train_set, weights, recipe, run, val_set, on_epoch=report)


def _job_model(job: TrainJob, num_classes: int, seed: int) -> MMADFER:
    from . import store
    from .model import ModelDims
    from .train import build_model, finetune_model

    encoders = job.image_encoder or job.audio_encoder
    if job.arch == Arch.tiny.value:
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


def evaluate_command(
    weights: Annotated[str | None, typer.Option(
        help="weights entry name or path (a run's RUN_DIR/last too); default: the default entry. "
             "With --all-folds, a pattern holding {fold}")] = None,
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    fold: FoldOpt = 1,
    split: Annotated[str | None, typer.Option(
        help="split to evaluate (default: test; val for folder)")] = None,
    all_folds: Annotated[bool, typer.Option("--all-folds", help="evaluate folds 1-5 and report their mean")] = False,
    two_clips: Annotated[bool, typer.Option(
        "--two-clips/--one-clip", help="also run the 2-clip protocol (3 passes instead of 1)")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="the report as JSON on stdout")] = False,
    out: Annotated[Path | None, typer.Option(help="write report.json and confusion PNGs here")] = None,
    cache: CacheOpt = None,
    labels: LabelsOpt = None,
    val_fraction: ValFractionOpt = 0.2,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="clips per model call", min=1)] = 16,
    workers: WorkersOpt = 4,
) -> None:
    """UAR, WAR and per-class recall of trained weights on a labelled split.

    1 clip: the middle frame of each of 16 equal segments. 2 clips: frames at 1/4 and 3/4 of each
    segment, softmax probabilities averaged (the paper's 2-clip protocol).

    Examples:

      dfer evaluate --weights dfew-160 --dataset dfew --data ~/DFEW --fold 1

    \b
      dfer evaluate --weights runs/dfew-f1/last --dataset dfew --data ~/DFEW --fold 1 --out report/

    \b
      dfer evaluate --weights 'dfew-160-f{fold}' --dataset dfew --data ~/DFEW --all-folds --json
    """
    from . import store
    from .cache import CacheDataset
    from .datasets import open_dataset
    from .evaluate import evaluate, report_dict, write_outputs
    from .prepare import default_cache, open_split
    from .runtime import pick_device

    if dataset is None or data is None:
        raise UsageError("--dataset and --data are required")
    if all_folds and dataset is DatasetName.folder:
        raise UsageError("--all-folds is for DFEW and MAFW; a folder data set has no folds")
    if all_folds and (weights is None or "{fold}" not in weights):
        raise UsageError("--all-folds needs one model per fold: --weights with {fold} in it, "
                         "e.g. 'dfew-160-f{fold}' or 'runs/dfew-fold{fold}/last'")
    err = Console(stderr=True, highlight=False)
    torch_device = pick_device(device)
    split_name = split or ("val" if dataset is DatasetName.folder else "test")
    evaluations, sources = [], []
    for k in range(1, 6) if all_folds else [fold]:
        spec = weights.format(fold=k) if all_folds else weights
        loaded = store.resolve(spec)
        adapter = open_dataset(dataset.value, data, k, labels, val_fraction)
        if loaded.config.dims.num_classes != len(adapter.class_names):
            raise DferError(f"{spec or 'the default weights'} has {loaded.config.dims.num_classes} classes, "
                            f"{adapter.name} has {len(adapter.class_names)}")
        size = loaded.config.dims.image_size
        clip_cache = open_split(adapter, split_name, cache or default_cache(adapter, size), size)
        err.print(f"evaluating {spec or store.default_name()} on {adapter.name}, {split_name}", markup=False)
        def view(position: float, c=clip_cache, s=size) -> CacheDataset:
            return CacheDataset(c, train=False, size=s, position=position)

        evaluations.append(evaluate(loaded.model, view, adapter.class_names, f"{adapter.name}, {split_name}",
                                    torch_device, two_clips, batch_size, workers))
        sources.append({"weights": spec or store.default_name(), **loaded.config.provenance})
    report = report_dict(evaluations, sources)
    if out is not None:
        written = write_outputs(evaluations, report, out)
        err.print(f"wrote {', '.join(p.name for p in written)} -> {out}", markup=False)
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        Console(highlight=False).print(_table(evaluations, report))


def _table(evaluations: list[Evaluation], report: dict) -> Table:
    protocols = list(evaluations[0].protocols())
    if len(evaluations) > 1:
        table = Table("fold", *(f"{p} {m}" for p in protocols for m in ("UAR", "WAR")))
        for e in evaluations:
            scores = [f"{getattr(r, m):.2f}" for r in e.protocols().values() for m in ("uar", "war")]
            table.add_row(e.name, *scores)
        mean = report["mean"]
        table.add_row("mean", *(f"{mean[p][m]:.2f}" for p in protocols for m in ("uar", "war")), style="bold")
        return table
    e = evaluations[0]
    table = Table("class", "clips", *(f"recall {p}" for p in protocols), title=e.name)
    reports = list(e.protocols().values())
    for i, name in enumerate(e.one_clip.class_names):
        recalls = [float(r.per_class_recall[i]) for r in reports]
        shown = ["-" if math.isnan(x) else f"{x:.2f}" for x in recalls]  # "-": no clips of the class
        table.add_row(name, str(int(e.one_clip.counts[i])), *shown)
    table.add_row("UAR", "", *(f"{r.uar:.2f}" for r in reports), style="bold")
    table.add_row("WAR", str(e.one_clip.num_samples), *(f"{r.war:.2f}" for r in reports), style="bold")
    return table


def _read_job(out: Path) -> TrainJob:
    path = out / RUN_FILE
    if not path.is_file():
        raise DferError(f"nothing to resume: {path} does not exist")
    try:
        return TrainJob(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise DferError(f"{path}: not a dfer run file ({e})") from None


def _on_command_line(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    # Typer vendors its own click, so its ParameterSource enum is matched by name.
    sources = [(n, ctx.get_parameter_source(n)) for n in names]
    return [n for n, source in sources if source is not None and source.name == "COMMANDLINE"]


def _path_str(path: Path | None) -> str | None:
    return str(path.expanduser().resolve()) if path else None
