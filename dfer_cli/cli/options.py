"""Command-line options that several `dfer` commands share, defined once."""

from __future__ import annotations

import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dfer_cli.errors import UsageError


class DatasetName(str, Enum):
    dfew = "dfew"
    mafw = "mafw"
    folder = "folder"


DatasetOpt = Annotated[DatasetName | None, typer.Option(
    help="dfew, mafw, or folder (one sub-folder of videos per class, or a labels CSV)")]
DataOpt = Annotated[Path | None, typer.Option(help="the data set's root folder")]
FoldOpt = Annotated[int, typer.Option(help="DFEW / MAFW fold", min=1, max=5)]
CacheOpt = Annotated[Path | None, typer.Option(
    help="prepared clip cache (default: $DFER_HOME/cache/<dataset>-<size>, shared by all folds)")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")]
PrecisionOpt = Annotated[str, typer.Option(
    help="auto (bf16 autocast on CUDA; on a CPU the fastest of fp32, bf16 and int8 on a probe: `dfer info` says "
         "which), fp32, bf16, or int8 (CPU: int8 Linear layers in the encoders and fusion)")]
LabelsOpt = Annotated[Path | None, typer.Option(
    help="folder data set: a CSV of path,label[,split] instead of one sub-folder per class")]
ValFractionOpt = Annotated[float, typer.Option(
    help="folder data set: share of each class held out as val (stratified, seeded)", min=0.0, max=0.9)]
WorkersOpt = Annotated[int | None, typer.Option(
    help="data loading processes (default: one per core but one, at most 4; none on 1-2 cores)", min=0)]
FrameOrderOpt = Annotated[str | None, typer.Option(
    help="order of each clip's 16 frames: time, or reference (the file-name order that the official "
         "MAFW checkpoints were trained with); default: the order the weights record")]


def check_writable_file(path: Path, option: str) -> None:
    """A UsageError unless a file can be written at `path`, checked before the work whose result it
    holds (a read-only place, /proc, a folder gave a traceback after the whole analysis)."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; name a file")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: folder {path.parent} does not exist")
    try:  # access() says yes to root on read-only mounts and in /proc: try a file instead
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.check-"):
            pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
