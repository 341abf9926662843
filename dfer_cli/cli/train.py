"""`dfer prepare`, `dfer train` and `dfer evaluate`: options in, config objects out, then the train
package (prepare, job, evaluate). Heavy imports stay inside the commands, so that `dfer --help` is quick."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dfer_cli.cli.options import (
    CacheOpt,
    DataOpt,
    DatasetName,
    DatasetOpt,
    DeviceOpt,
    FoldOpt,
    FrameOrderOpt,
    LabelsOpt,
    PrecisionOpt,
    ValFractionOpt,
    WorkersOpt,
)
from dfer_cli.cli.startup import heavy_imports
from dfer_cli.errors import DferError, UsageError


class Arch(str, Enum):
    base = "base"
    tiny = "tiny"


# Options that define a run: with --resume they come from run.json and may not be given again.
_JOB_OPTIONS = ("dataset", "data", "fold", "arch", "size", "image_encoder", "audio_encoder", "init_weights",
                "val_split", "cache", "labels", "val_fraction", "epochs", "batch_size", "lr", "weight_decay", "seed")

_OutOpt = Annotated[Path | None, typer.Option(help="run folder (default: $DFER_HOME/runs/<dataset>-fold<k>-<time>)")]
_ArchOpt = Annotated[Arch, typer.Option(
    help="base: the paper's model (2 x ViT-B/16), from --image-encoder + --audio-encoder or --init-weights. "
         "tiny: a small random model without pretrained encoders, for smoke tests and CPU demos only (its "
         "accuracy means nothing)")]
_SizeOpt = Annotated[int | None, typer.Option(
    help="face size in px: 112, 160 or 224 (default 160; with --init-weights, its size)")]
_ImageEncoderOpt = Annotated[Path | None, typer.Option(
    help="MAE-Face ViT-B/16 checkpoint (mae_face_pretrain_vit_base.pth)")]
_AudioEncoderOpt = Annotated[Path | None, typer.Option(help="AudioMAE ViT-B/16 checkpoint (audiomae_pretrained.pth)")]
_InitWeightsOpt = Annotated[str | None, typer.Option(
    help="fine-tune from trained weights: an entry name, an official MMA-DFER .pth or a dfer folder (a new "
         "classifier when the class count differs)")]
_ValSplitOpt = Annotated[str | None, typer.Option(
    help="split evaluated after every epoch (UAR/WAR in the log); default: val when the data set has one, "
         "else none. 'test' watches DFEW/MAFW's test set as the reference scripts did; 'none' skips it")]
_EpochsOpt = Annotated[int, typer.Option(help="epochs (cosine schedule to 0 over them)", min=1)]
_BatchOpt = Annotated[int, typer.Option(help="global batch; under torchrun each of N processes takes batch/N", min=1)]
_LrOpt = Annotated[float, typer.Option(help="AdamW learning rate", min=0.0)]
_DecayOpt = Annotated[float, typer.Option(help="AdamW weight decay", min=0.0)]
_SeedOpt = Annotated[int, typer.Option(help="seed of the initialisation, shuffling and augmentation")]
_ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="continue the run in --out exactly where it stopped, with its saved settings")]
_CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model")]
_LogEveryOpt = Annotated[int, typer.Option(help="steps between loss / throughput log records", min=1)]
_WeightsOpt = Annotated[str | None, typer.Option(
    help="weights entry name or path (a run's RUN_DIR/last too); default: the default entry. With --all-folds, "
         "a pattern holding {fold}")]
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
    verify: Annotated[bool, typer.Option(
        "--verify", help="read every cached clip to check it (else its size only) and rebuild damaged ones")] = False,
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
    with heavy_imports():
        from dfer_cli.train.cache import SKIPPED, no_audio_note, read_split
        from dfer_cli.train.datasets import open_dataset, summarize
        from dfer_cli.train.prepare import PrepareConfig, default_cache, prepare

    adapter = open_dataset(dataset.value, data, fold, labels, val_fraction)
    splits = list(adapter.splits) if split == "all" else [split]
    if split != "all" and split not in adapter.splits:
        raise DferError(f"{adapter.name} has no split {split!r} (it has {', '.join(adapter.splits)})")
    config = PrepareConfig(size=size, max_frames=max_frames, verify=verify)
    if workers is not None:
        config = replace(config, workers=workers)
    root = cache or default_cache(adapter, size)
    for name in splits:
        typer.echo(str(summarize(adapter, name)), err=True)
        summary = prepare(adapter, name, root, config)
        repaired = f" ({summary.repaired} of them damaged in the cache, rebuilt)" if summary.repaired else ""
        typer.echo(f"{adapter.name} {name}: {summary.prepared} clips prepared{repaired}, {summary.cached} already "
                   f"cached, {len(summary.skipped)} skipped -> {summary.root}", err=True)
        for line in summary.skipped[:10]:
            typer.echo(f"  skipped {line}", err=True)
        if len(summary.skipped) > 10:
            typer.echo(f"  ... and {len(summary.skipped) - 10} more (listed in {summary.root / SKIPPED})",
                       err=True)
        for line in summary.audio_errors[:10]:
            typer.echo(f"  kept without sound: {line}", err=True)
        if note := no_audio_note(f"{adapter.name} {name}", read_split(root, adapter, name)):
            typer.echo(note, err=True)


def train_command(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    fold: FoldOpt = 1,
    out: _OutOpt = None,
    arch: _ArchOpt = Arch.base,
    size: _SizeOpt = None,
    image_encoder: _ImageEncoderOpt = None,
    audio_encoder: _AudioEncoderOpt = None,
    init_weights: _InitWeightsOpt = None,
    val_split: _ValSplitOpt = None,
    cache: CacheOpt = None,
    labels: LabelsOpt = None,
    val_fraction: ValFractionOpt = 0.2,
    epochs: _EpochsOpt = 25,
    batch_size: _BatchOpt = 8,
    lr: _LrOpt = 1e-4,
    weight_decay: _DecayOpt = 1e-2,
    seed: _SeedOpt = 1,
    resume: _ResumeOpt = False,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    compile_model: _CompileOpt = False,
    log_every: _LogEveryOpt = 50,
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
    with heavy_imports():
        from dfer_cli.train.job import RUN_FILE, TrainJob, default_run_dir, read_job, train_run
        from dfer_cli.train.loader import loader_workers
        from dfer_cli.train.loop import RunConfig, TrainRecipe

    if resume:
        if out is None:
            raise UsageError("--resume continues a run: give its folder with --out RUN_DIR")
        if given := _on_command_line(ctx, _JOB_OPTIONS):
            raise UsageError(f"--resume reuses the run's saved settings ({out / RUN_FILE}); drop "
                             + ", ".join("--" + n.replace("_", "-") for n in given))
        job = read_job(out)
    else:
        if dataset is None or data is None:
            raise UsageError("--dataset and --data are required (or --resume --out RUN_DIR)")
        if out is None:
            out = default_run_dir(dataset.value, fold)
        job = TrainJob(dataset.value, str(data.expanduser().resolve()), fold, arch.value, size,
                       _path_str(image_encoder), _path_str(audio_encoder), init_weights, val_split,
                       _path_str(cache), asdict(TrainRecipe(epochs, batch_size, lr, weight_decay, seed)),
                       _path_str(labels), val_fraction)
    run = RunConfig(out=out, device=device, workers=loader_workers() if workers is None else workers,
                    compile=compile_model, resume=resume, log_every=log_every, progress=True)
    err = Console(stderr=True, highlight=False)
    train_run(job, run, log=lambda line: err.print(line, markup=False, soft_wrap=True))  # rank 0 alone logs


def evaluate_command(
    weights: _WeightsOpt = None,
    dataset: DatasetOpt = None,
    data: DataOpt = None,
    fold: FoldOpt = 1,
    split: Annotated[str | None, typer.Option(help="split to evaluate (default: test; val for folder)")] = None,
    all_folds: Annotated[bool, typer.Option("--all-folds", help="evaluate folds 1-5 and report their mean")] = False,
    two_clips: Annotated[bool, typer.Option(
        "--two-clips/--one-clip", help="also run the 2-clip protocol (3 passes instead of 1)")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="the report as JSON on stdout")] = False,
    out: Annotated[Path | None, typer.Option(help="write report.json and confusion PNGs here")] = None,
    cache: CacheOpt = None,
    labels: LabelsOpt = None,
    val_fraction: ValFractionOpt = 0.2,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    batch_size: Annotated[int, typer.Option(help="clips per model call", min=1)] = 16,
    workers: WorkersOpt = None,
    frame_order: FrameOrderOpt = None,
) -> None:
    """UAR, WAR and per-class recall of trained weights on a labelled split.

    1 clip: the middle frame of each of 16 equal segments. 2 clips: frames at 1/4 and 3/4 of each
    segment, softmax probabilities averaged (the paper's 2-clip protocol). The model runs in fp32
    unless --precision says otherwise; the report states the precision used.

    Examples:

      dfer evaluate --weights dfew-160 --dataset dfew --data ~/DFEW --fold 1

    \b
      dfer evaluate --weights runs/dfew-f1/last --dataset dfew --data ~/DFEW --fold 1 --out report/

    \b
      dfer evaluate --weights 'dfew-160-f{fold}' --dataset dfew --data ~/DFEW --all-folds --json
    """
    with heavy_imports():
        from dfer_cli.labels import parse_frame_order
        from dfer_cli.train.evaluate import EvalConfig, evaluate_run, results_table, write_outputs
        from dfer_cli.train.loader import loader_workers

    if dataset is None or data is None:
        raise UsageError("--dataset and --data are required")
    config = EvalConfig(dataset.value, data, weights, tuple(range(1, 6)) if all_folds else (fold,), split,
                        two_clips, cache, labels, val_fraction, device, precision, batch_size,
                        loader_workers() if workers is None else workers,
                        parse_frame_order(frame_order) if frame_order else None)
    err = Console(stderr=True, highlight=False)
    result = evaluate_run(config, log=lambda line: err.print(line, markup=False, soft_wrap=True))
    if out is not None:
        written = write_outputs(result.evaluations, result.report, out)
        err.print(f"wrote {', '.join(p.name for p in written)} -> {out}", markup=False)
    if json_out:
        typer.echo(json.dumps(result.report, indent=2))
    else:
        Console(highlight=False).print(results_table(result.evaluations, result.report))


def _on_command_line(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    # Typer vendors its own click, so its ParameterSource enum is matched by name.
    sources = [(n, ctx.get_parameter_source(n)) for n in names]
    return [n for n, source in sources if source is not None and source.name == "COMMANDLINE"]


def _path_str(path: Path | None) -> str | None:
    return str(path.expanduser().resolve()) if path else None
