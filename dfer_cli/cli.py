"""The `dfer` command line. Commands parse options into config objects and hand over to the
pipeline modules; all user-facing errors become one line on stderr and a non-zero exit code."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import DferError, UsageError
from .options import DeviceOpt, PrecisionOpt
from .progress import progress_bar

if TYPE_CHECKING:
    from .api import PredictConfig
    from .results import FileResult
    from .runtime import Ranks

app = typer.Typer(
    name="dfer",
    help="Audio-visual emotion recognition for videos (MMA-DFER: face + voice).\n\n"
         "Examples:\n\n"
         "  dfer weights import mma_dfer_dfew_fold1.pth --name dfew-160\n\n"
         "  dfer predict interview.mp4\n\n"
         "  dfer predict --json videos/ > emotions.json\n\n"
         "  dfer predict talk.mkv --window 5 --plot timeline.png\n\n"
         "  dfer train --dataset dfew --data ~/DFEW --fold 1\n\n"
         "  dfer evaluate --dataset dfew --data ~/DFEW --fold 1 --out report/",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(
    help="Manage model weights (official MMA-DFER checkpoints and dfer's own).\n\n"
         "Examples:\n\n"
         "  dfer weights sources\n\n"
         "  dfer weights import DFEW_fold1_160.pth --name dfew-160\n\n"
         "  dfer weights list\n\n"
         "  dfer weights default dfew-160",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

F = TypeVar("F", bound=Callable)


def reports_errors(fn: F) -> F:
    """DferError -> one line on stderr; exit 2 for usage problems, 1 for bad input."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            err.print(f"dfer: error: {e}", markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except DferError as e:
            err.print(f"dfer: error: {e}", markup=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@app.command()
@reports_errors
def info() -> None:
    """Versions, device, media and face-detection back ends, weights directory, model size.

    Example:

      dfer info
    """
    import av
    import torch

    from . import checkpoints
    from .model import MMADFER, ModelDims, count_parameters
    from .runtime import pick_device, resolve_precision

    with torch.device("meta"):
        model = MMADFER(ModelDims())
    trainable, total = count_parameters(model)
    device = pick_device("auto")
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    ffmpeg_libs = av.library_versions.get("libavformat", ())
    rows = [
        ("dfer", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("timm", f"{_version('timm')} (dfer uses its own timm-compatible ViT blocks)"),
        ("device", f"{device}{gpu}"),
        ("precision", f"predict: {resolve_precision('auto', device)} (auto; --precision fp32|bf16 overrides), "
                      f"evaluate: fp32{_bf16_note(device)}"),
        ("decoder", f"PyAV {av.__version__}, bundled FFmpeg libavformat "
                    f"{'.'.join(map(str, ffmpeg_libs))}"),
        ("face detector", "BlazeFace short/full range, mediapipe 0.10.14's weights in dfer's torch port (bundled)"),
        ("weights dir", str(checkpoints.weights_dir())),
        ("default weights", checkpoints.default_name() or "none (see `dfer weights import`)"),
        ("model (default)", f"MMA-DFER ViT-B/16 x 2, {ModelDims().image_size} px, 7 classes: "
                            f"{trainable:,} trainable / {total:,} parameters"),
    ]
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def _bf16_note(device) -> str:
    from .runtime import cpu_bf16_speedup, cpu_has_bf16

    if device.type == "cuda":
        return ""
    if not cpu_has_bf16():
        return "; this CPU has no native bf16"
    return f"; bf16 measured {cpu_bf16_speedup():.1f}x fp32's speed on this CPU"


@app.command()
@reports_errors
def predict(
    inputs: Annotated[list[str], typer.Argument(help="video files and/or folders", show_default=False)],
    weights: Annotated[str | None, typer.Option(
        help="weights entry name or path (default: the default entry); 'untrained' runs random "
             "weights to check the pipeline, and says so")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="a JSON array on stdout")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="one JSON object per line, streamed")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
    window: Annotated[float | None, typer.Option(
        help="timeline: one prediction per WINDOW seconds", min=0.5)] = None,
    plot: Annotated[Path | None, typer.Option(help="with --window: draw the timeline to this PNG")] = None,
    clips: Annotated[int, typer.Option(help="clips per file, averaged", min=1)] = 2,
    explain: Annotated[bool, typer.Option(
        "--explain", help="add why: the voice's and the face's shares of the call, which frames, face "
                          "regions and voice moments drove it (about 5x the model's time)")] = False,
    explain_dir: Annotated[Path | None, typer.Option(
        help="with or without --explain: also draw each file's explanation to DIR/<name>.png")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="clips per model call", min=1)] = 8,
    workers: Annotated[int | None, typer.Option(
        help="decoding processes (default: 0 for 1-2 files, else up to 4, fewer than the cores)", min=0)] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="walk sub-folders")] = True,
    ext: Annotated[str | None, typer.Option(
        help="comma-separated extensions to pick from folders, e.g. mp4,mkv")] = None,
    frame_order: Annotated[str | None, typer.Option(
        help="order of each clip's 16 frames: time, or reference (the file-name order that the official "
             "MAFW checkpoints were trained with); default: the order the weights record")] = None,
) -> None:
    """Recognise the emotion in videos from the face and the voice.

    Examples:

      dfer predict interview.mp4

      dfer predict --json clips/ > emotions.json

      dfer predict --jsonl --ext mp4,mov phone_videos/ | jq .label

      dfer predict lecture.mkv --window 5 --plot timeline.png

      dfer predict interview.mp4 --explain --explain-dir why/

    Exit codes: 0 all files analysed, 1 some files failed (each has an error record), 2 usage error.
    """

    from .api import PredictConfig, collect_inputs, video_extensions
    from .clips import ClipConfig, parse_frame_order
    from .runtime import process_group

    formats = [f for f, on in (("json", json_out), ("jsonl", jsonl), ("csv", csv_out)) if on]
    if len(formats) > 1:
        raise UsageError("choose one of --json, --jsonl, --csv")
    if plot and not window:
        raise UsageError("--plot draws a timeline: add --window SECONDS")
    if plot and not plot.parent.exists():
        raise UsageError(f"{plot}: folder {plot.parent} does not exist")
    order = parse_frame_order(frame_order) if frame_order else None
    paths = collect_inputs(inputs, recursive, video_extensions(ext.split(",") if ext else None))
    if explain_dir is not None:
        if explain_dir.exists() and not explain_dir.is_dir():
            raise UsageError(f"--explain-dir {explain_dir}: exists and is not a folder")
        explain_dir.mkdir(parents=True, exist_ok=True)
    config = PredictConfig(clips=ClipConfig(clips=clips, frame_order=order), window=window, batch_size=batch_size,
                           workers=workers, explain=explain or explain_dir is not None, explain_dir=explain_dir)
    with process_group(device) as (ranks, torch_device):
        results = _predict_and_write(weights, str(torch_device), precision, paths, config, ranks,
                                     formats[0] if formats else "table")
    if plot and ranks.main:
        _plot_first_timeline(results, plot)
    if any(r.status == "error" for r in results):
        raise typer.Exit(1)


def _predict_and_write(weights: str | None, device: str, precision: str, paths: list[str],
                       config: PredictConfig, ranks: Ranks, fmt: str) -> list[FileResult]:
    """Records through the writer as they come; under torchrun, each rank analyses its share of the
    files and rank 0 alone writes all the records, in input order."""
    import warnings

    from .api import UNTRAINED, UntrainedWeightsWarning, load_model
    from .results import make_writer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)  # said below, in the CLI's words
        model = load_model(weights, device, precision)
    if weights == UNTRAINED and ranks.main:
        err.print("[bold yellow]warning:[/bold yellow] untrained random weights: the pipeline runs, "
                  "the emotions are meaningless. Import real weights with `dfer weights import`.")
    records = model.analyse(paths, config) if ranks.world == 1 else model.analyse_sharded(paths, config, ranks)
    if not ranks.main:
        return list(records)
    writer = make_writer(fmt, sys.stdout, model.class_names, config.window is not None, config.explain)
    results = []
    with progress_bar("analysing", len(paths)) as advance:
        try:
            for result in records:
                results.append(result)
                if result.status == "error":
                    err.print(f"dfer: {result.path}: {result.error}", markup=False, soft_wrap=True)
                writer.write(result)
                advance(description=result.path[-40:])
        finally:
            writer.close()
    return results


def _plot_first_timeline(results: list, plot: Path) -> None:
    import numpy as np

    from .plots import plot_timeline, timeline_arrays

    shown = next((r for r in results if r.probabilities), None)
    if shown is None:
        raise DferError(f"{plot}: nothing to plot (no file had a face)")
    class_names = list(shown.probabilities)
    times, probs = timeline_arrays(shown, class_names)
    voice = None
    if shown.explanation is not None:  # NaN where a window had no face, or the file no audio
        voice = np.repeat([np.nan if c.voice_share is None else c.voice_share for c in shown.clips], 2)
    plot_timeline(times, probs, class_names, plot, title=shown.path, voice=voice)
    err.print(f"timeline of {shown.path} -> {plot}", markup=False)


@weights_app.command("import")
@reports_errors
def weights_import(
    source: Annotated[str, typer.Argument(
        help="official MMA-DFER .pth, bare state dict or dfer folder: a path, or an http(s) URL "
             "(Google Drive file links work)", show_default=False)],
    name: Annotated[str | None, typer.Option(help="entry name (default: the file's stem)")] = None,
    default: Annotated[bool | None, typer.Option(
        "--default/--no-default", help="make it the default entry (the first import is)")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset it was trained on, for the record")] = None,
    fold: Annotated[int | None, typer.Option(help="fold it was trained on, for the record")] = None,
    sha256: Annotated[str | None, typer.Option(
        help="refuse the file unless its SHA-256 is this (checked before anything is installed)")] = None,
) -> None:
    """Convert a checkpoint into the weights directory (safely: no pickled code runs).

    A URL is downloaded first into $DFER_HOME/downloads, with a progress bar; an interrupted download
    resumes when the command is run again, and a URL already downloaded is not fetched twice.

    Examples:

      dfer weights import MMA-DFER_DFEW_fold1.pth --name dfew-160-f1

      dfer weights import 'https://drive.usercontent.google.com/download?id=FILE_ID' --name dfew-160-f1
    """
    from . import checkpoints
    from .clips import REFERENCE_ORDER

    entry = checkpoints.import_weights(source, name, default, dataset, fold, sha256)
    dims = entry.config.dims
    err.print(f"imported {source} as '{entry.name}' ({dims.image_size} px, {dims.num_classes} classes)"
              f"{' [default]' if entry.is_default else ''} -> {entry.path}", markup=False, soft_wrap=True)
    if entry.config.frame_order == REFERENCE_ORDER:
        err.print(f"frame order: {REFERENCE_ORDER} (an official MAFW checkpoint: its reference loader fed each "
                  "clip's frames in file-name order, 0, 1, 10, 11, ..., 2, 20, ...; dfer predict and evaluate "
                  "do the same, --frame-order time overrides)", markup=False, soft_wrap=True)


@weights_app.command("sources")
@reports_errors
def weights_sources() -> None:
    """Where the official weights are published, and what each file is for.

    Example:

      dfer weights sources
    """
    from .sources import describe

    out.print(describe(), markup=False, soft_wrap=True)


@weights_app.command("list")
@reports_errors
def weights_list() -> None:
    """Show the installed weights.

    Example:

      dfer weights list
    """
    from . import checkpoints

    entries = checkpoints.entries()
    if not entries:
        err.print(f"no weights in {checkpoints.weights_dir()}; import some with `dfer weights import PATH-OR-URL` "
                  "(`dfer weights sources` says where the official ones are)")
        return
    table = Table("name", "default", "size", "classes", "dataset", "fold", "source")
    for e in entries:
        table.add_row(e.name, "*" if e.is_default else "", f"{e.config.dims.image_size} px",
                      ", ".join(e.config.class_names), e.config.dataset or "", str(e.config.fold or ""),
                      e.config.provenance.get("imported_from", e.config.provenance.get("source", "")))
    out.print(table)


@weights_app.command("default")
@reports_errors
def weights_default(
    name: Annotated[str, typer.Argument(help="entry to use when --weights is not given")],
) -> None:
    """Choose the default weights entry.

    Example:

      dfer weights default dfew-160
    """
    from . import checkpoints

    checkpoints.set_default(name)
    err.print(f"default weights: {name}")


def _register_training_commands() -> None:
    # Their option definitions live beside the code they drive; each keeps its heavy imports inside.
    from .commands_train import evaluate_command, prepare_command, train_command

    app.command("prepare")(reports_errors(prepare_command))
    app.command("train")(reports_errors(train_command))
    app.command("evaluate")(reports_errors(evaluate_command))


_register_training_commands()


def main() -> None:
    app(prog_name="dfer")


if __name__ == "__main__":
    sys.exit(main())
