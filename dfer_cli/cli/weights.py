"""`dfer weights`: import official checkpoints (safely), list the entries, choose the default, and say
where the official weights are published."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from dfer_cli.cli.console import err, out
from dfer_cli.cli.startup import heavy_imports


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
    replace: Annotated[bool, typer.Option("--replace", help="overwrite an entry of the same name")] = False,
) -> None:
    """Convert a checkpoint into the weights directory (safely: no pickled code runs).

    A URL is downloaded first into $DFER_HOME/downloads, with a progress bar; an interrupted download
    resumes when the command is run again, and a URL already downloaded is not fetched twice.

    Examples:

      dfer weights import MMA-DFER_DFEW_fold1.pth --name dfew-160-f1

      dfer weights import 'https://drive.usercontent.google.com/download?id=FILE_ID' --name dfew-160-f1
    """
    from dfer_cli.paths import entry_name
    from dfer_cli.weights.digest import parse_sha256

    # Usage errors before the heavy imports below (torch: seconds).
    if name is not None:
        entry_name(name)
    if sha256 is not None:
        parse_sha256(sha256)
    with heavy_imports():
        from dfer_cli.labels import REFERENCE_ORDER
        from dfer_cli.weights.store import import_weights

    entry = import_weights(source, name, default, dataset, fold, sha256, replace)
    dims = entry.config.dims
    err.print(f"imported {source} as '{entry.name}' ({dims.image_size} px, {dims.num_classes} classes)"
              f"{' [default]' if entry.is_default else ''} -> {entry.path}", markup=False, soft_wrap=True)
    if entry.config.frame_order == REFERENCE_ORDER:
        err.print(f"frame order: {REFERENCE_ORDER} (an official MAFW checkpoint: its reference loader fed each "
                  "clip's frames in file-name order, 0, 1, 10, 11, ..., 2, 20, ...; dfer predict and evaluate "
                  "do the same, --frame-order time overrides)", markup=False, soft_wrap=True)


def weights_sources() -> None:
    """Where the official weights are published, and what each file is for.

    Example:

      dfer weights sources
    """
    from dfer_cli.weights.sources import describe

    out.print(describe(), markup=False, soft_wrap=True)


def weights_list() -> None:
    """Show the installed weights.

    Example:

      dfer weights list
    """
    from dfer_cli.paths import weights_dir
    from dfer_cli.weights.store import entries as installed

    entries = installed()
    if not entries:
        err.print(f"no weights in {weights_dir()}; import some with `dfer weights import PATH-OR-URL` "
                  "(`dfer weights sources` says where the official ones are)")
        return
    table = Table("name", "default", "size", "classes", "dataset", "fold", "source")
    for e in entries:
        table.add_row(e.name, "*" if e.is_default else "", f"{e.config.dims.image_size} px",
                      ", ".join(e.config.class_names), e.config.dataset or "", str(e.config.fold or ""),
                      e.config.provenance.get("imported_from", e.config.provenance.get("source", "")))
    out.print(table)


def weights_default(
    name: Annotated[str, typer.Argument(help="entry to use when --weights is not given")],
) -> None:
    """Choose the default weights entry.

    Example:

      dfer weights default dfew-160
    """
    from dfer_cli.weights.store import set_default

    set_default(name)
    err.print(f"default weights: {name}")


def weights_remove(
    name: Annotated[str, typer.Argument(help="entry to delete")],
) -> None:
    """Delete a weights entry.

    Example:

      dfer weights remove dfew-160-old
    """
    from dfer_cli.weights.store import remove_entry

    was_default = remove_entry(name)
    err.print(f"removed weights entry {name}" + (" (it was the default: there is none now; choose one with "
                                                  "`dfer weights default NAME`)" if was_default else ""),
              markup=False)
