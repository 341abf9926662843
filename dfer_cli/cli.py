"""The `dfer` command line. Commands parse options into config objects and hand over to the
pipeline modules; all user-facing errors become one line on stderr and a non-zero exit code."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import DferError, UsageError
from .progress import progress_bar

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

    from . import store
    from .model import MMADFER, ModelDims, count_parameters
    from .runtime import pick_device

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
        ("decoder", f"PyAV {av.__version__}, bundled FFmpeg libavformat "
                    f"{'.'.join(map(str, ffmpeg_libs))}"),
        ("face detector", "BlazeFace short/full range, mediapipe 0.10.14's weights in dfer's torch port (bundled)"),
        ("weights dir", str(store.weights_dir())),
        ("default weights", store.default_name() or "none (see `dfer weights import`)"),
        ("model (default)", f"MMA-DFER ViT-B/16 x 2, {ModelDims().image_size} px, 7 classes: "
                            f"{trainable:,} trainable / {total:,} parameters"),
    ]
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


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
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    batch_size: Annotated[int, typer.Option(help="clips per model call", min=1)] = 8,
    workers: Annotated[int | None, typer.Option(
        help="decoding processes (default: 0 for 1-2 files, else up to 4)", min=0)] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="walk sub-folders")] = True,
    ext: Annotated[str | None, typer.Option(
        help="comma-separated extensions to pick from folders, e.g. mp4,mkv")] = None,
) -> None:
    """Recognise the emotion in videos from the face and the voice.

    Examples:

      dfer predict interview.mp4

      dfer predict --json clips/ > emotions.json

      dfer predict --jsonl --ext mp4,mov phone_videos/ | jq .label

      dfer predict lecture.mkv --window 5 --plot timeline.png

    Exit codes: 0 all files analysed, 1 some files failed (each has an error record), 2 usage error.
    """

    from . import predict as pipeline
    from . import store
    from .checkpoints import LoadedWeights, WeightsConfig
    from .clips import ClipConfig
    from .labels import default_class_names
    from .model import MMADFER, ModelDims
    from .runtime import pick_device
    from .writers import make_writer

    formats = [f for f, on in (("json", json_out), ("jsonl", jsonl), ("csv", csv_out)) if on]
    if len(formats) > 1:
        raise UsageError("choose one of --json, --jsonl, --csv")
    if plot and not window:
        raise UsageError("--plot draws a timeline: add --window SECONDS")
    if plot:
        pipeline.ensure_writable_parent(plot)
    extensions = tuple("." + e.strip().lstrip(".").lower() for e in ext.split(",")) if ext else None
    paths = pipeline.collect_inputs(inputs, recursive, extensions or pipeline.VIDEO_EXTENSIONS)
    torch_device = pick_device(device)
    if weights == "untrained":
        dims = ModelDims()
        loaded = LoadedWeights(MMADFER(dims).eval(), WeightsConfig(
            dims, list(default_class_names(dims.num_classes)), provenance={"source": "untrained"}))
        err.print("[bold yellow]warning:[/bold yellow] untrained random weights: the pipeline runs, "
                  "the emotions are meaningless. Import real weights with `dfer weights import`.")
        weights_label = "untrained (random weights: the emotions are meaningless)"
    else:
        loaded = store.resolve(weights)
        weights_label = weights or store.default_name()
    class_names = list(loaded.config.class_names)
    if workers is None:
        workers = pipeline.default_workers(len(paths))
    config = pipeline.PredictConfig(clips=ClipConfig(clips=clips), window=window, batch_size=batch_size,
                                    workers=workers)
    classifier = pipeline.Classifier(loaded.model, torch_device, batch_size)
    writer = make_writer(formats[0] if formats else "table", sys.stdout, class_names, window is not None)
    failures = 0
    with progress_bar("analysing", len(paths)) as advance:
        def emit(result) -> None:
            nonlocal failures
            result.weights = weights_label
            if result.status == "error":
                failures += 1
                err.print(f"dfer: {result.path}: {result.error}", markup=False, soft_wrap=True)
            writer.write(result)
            advance(description=result.path[-40:])

        try:
            size = loaded.model.dims.image_size
            results = pipeline.predict(paths, classifier, class_names, config, size, emit)
        finally:
            writer.close()
    if plot:
        from .plots import plot_timeline

        shown = next((r for r in results if r.probabilities), None)
        if shown is None:
            raise DferError(f"{plot}: nothing to plot (no file had a face)")
        times, probs = pipeline.timeline_arrays(shown, class_names)
        plot_timeline(times, probs, class_names, plot, title=shown.path)
        err.print(f"timeline of {shown.path} -> {plot}", markup=False)
    if failures:
        raise typer.Exit(1)


@weights_app.command("import")
@reports_errors
def weights_import(
    path: Annotated[Path, typer.Argument(help="official MMA-DFER .pth, bare state dict, or dfer folder")],
    name: Annotated[str | None, typer.Option(help="entry name (default: the file's stem)")] = None,
    default: Annotated[bool | None, typer.Option(
        "--default/--no-default", help="make it the default entry (the first import is)")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset it was trained on, for the record")] = None,
    fold: Annotated[int | None, typer.Option(help="fold it was trained on, for the record")] = None,
) -> None:
    """Convert a checkpoint into the weights directory (safely: no pickled code runs).

    Example:

      dfer weights import MMA-DFER_DFEW_fold1.pth --name dfew-160-f1
    """
    from . import store

    entry = store.import_weights(path, name, default, dataset, fold)
    dims = entry.config.dims
    err.print(f"imported {path} as '{entry.name}' ({dims.image_size} px, {dims.num_classes} classes)"
              f"{' [default]' if entry.is_default else ''} -> {entry.path}")


@weights_app.command("list")
@reports_errors
def weights_list() -> None:
    """Show the installed weights.

    Example:

      dfer weights list
    """
    from . import store

    entries = store.entries()
    if not entries:
        err.print(f"no weights in {store.weights_dir()}; import some with `dfer weights import PATH`")
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
    from . import store

    store.set_default(name)
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
