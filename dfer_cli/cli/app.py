"""The `dfer` Typer app: its commands registered from their modules (predict, weights, train), `dfer info`,
and the rule that user-facing errors become one line on stderr and an exit code."""

from __future__ import annotations

import errno
import functools
import gc
import importlib.metadata
import os
import platform
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.table import Table

from dfer_cli import __version__
from dfer_cli.cli import predict, train, weights
from dfer_cli.cli.console import err, out
from dfer_cli.errors import DferError, DferWarning, UsageError, one_line

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
         "  dfer weights default dfew-160\n\n"
         "  dfer weights remove dfew-160",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")

F = TypeVar("F", bound=Callable)


def reports_errors(fn: F) -> F:
    """DferError -> one line on stderr; exit 2 for usage problems, 1 for bad input. A DferWarning
    -> one line too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
                return fn(*args, **kwargs)
        except UsageError as e:
            err.print(f"dfer: error: {one_line(str(e))}", markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except DferError as e:
            err.print(f"dfer: error: {one_line(str(e))}", markup=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # A full disk is the place's fault, not dfer's: one line, as for bad input. Files are named;
            # the one stream without a name is stdout (predict --json > file), which then goes nowhere,
            # so that the interpreter's last flush fails silently instead of with a second traceback.
            if e.filename is None:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            err.print(f"dfer: error: {one_line(str(e.filename or 'standard output'))}: {e.strerror.lower()}",
                      markup=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(default: Callable, message, category, *args, **kwargs) -> None:
    """dfer's own warnings as one line, like its errors; any other library's as Python shows them."""
    if issubclass(category, DferWarning):
        err.print(f"dfer: warning: {one_line(str(message))}", markup=False, soft_wrap=True)
    else:
        default(message, category, *args, **kwargs)


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

    from dfer_cli.model import MMADFER, ModelDims, count_parameters
    from dfer_cli.paths import weights_dir
    from dfer_cli.runtime.device import pick_device
    from dfer_cli.weights.store import default_name

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
        ("precision", f"predict: {_auto_precision(device)}; --precision fp32|bf16|int8 overrides; evaluate: fp32"),
        ("decoder", f"PyAV {av.__version__}, bundled FFmpeg libavformat "
                    f"{'.'.join(map(str, ffmpeg_libs))}"),
        ("face detector", "BlazeFace short/full range, mediapipe 0.10.14's weights in dfer's torch port (bundled)"),
        ("weights dir", str(weights_dir())),
        ("default weights", default_name() or "none (see `dfer weights import`)"),
        ("model (default)", f"MMA-DFER ViT-B/16 x 2, {ModelDims().image_size} px, 7 classes: "
                            f"{trainable:,} trainable / {total:,} parameters"),
    ]
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def _auto_precision(device) -> str:
    """What --precision auto runs here, and why."""
    from dfer_cli.runtime.device import auto_cpu_precision

    if device.type == "cuda":
        return "bf16 (auto: bf16 autocast on CUDA)"
    chosen, why = auto_cpu_precision()
    return f"{chosen} (auto: {why})"


# Registered here, in the order `dfer --help` lists them; each module keeps its heavy imports inside its
# commands, so that `dfer --help` starts without torch.
app.command("predict")(reports_errors(predict.predict))
weights_app.command("import")(reports_errors(weights.weights_import))
weights_app.command("sources")(reports_errors(weights.weights_sources))
weights_app.command("list")(reports_errors(weights.weights_list))
weights_app.command("default")(reports_errors(weights.weights_default))
weights_app.command("remove")(reports_errors(weights.weights_remove))
app.command("prepare")(reports_errors(train.prepare_command))
app.command("train")(reports_errors(train.train_command))
app.command("evaluate")(reports_errors(train.evaluate_command))


def main() -> None:
    try:
        app(prog_name="dfer")
        code = 0
    except SystemExit as e:  # how the app ends; outside this block its traceback, and the pools, are freed
        code = e.code
    _join_resource_tracker()
    sys.exit(code)


def _join_resource_tracker() -> None:
    """Worker pools (spawn) start multiprocessing's resource tracker, which outlived dfer by a moment (a
    harness waiting on the process group saw it): stopped and joined once the pools' semaphores are
    collected (a live one it would unlink, and warn). Only here, at the command's end: in a library it
    would unlink the caller's semaphores."""
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    if tracker is None or tracker._resource_tracker._pid is None:
        return
    gc.collect()
    tracker._resource_tracker._stop()


if __name__ == "__main__":
    sys.exit(main())
