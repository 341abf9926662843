"""`write_report`: records (as `Model.predict` returns them, or their JSON) to report pages, a page for one
file, or a folder with `index.html` and a page per file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from dfer_cli.atomic import atomic_path, atomic_write_text
from dfer_cli.report.document import is_report
from dfer_cli.report.index import index_html
from dfer_cli.report.page import page_html
from dfer_cli.report.spans import file_spans
from dfer_cli.report.targets import check_folder, check_replaceable, is_folder_target, names_in_folder
from dfer_cli.report.thumbnails import thumbnails

INDEX = "index.html"


def as_records(records: Iterable) -> list[dict]:
    """FileResults or their dicts, as the JSON records (a single record alone is one too)."""
    if isinstance(records, dict) or hasattr(records, "to_dict"):
        records = [records]
    return [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in records]


def write_report(records: Iterable, path: str | os.PathLike[str], *, copy_video: bool = False,
                 folder: bool | None = None) -> list[Path]:
    """Write the HTML report of `records` to `path` and return the pages written (the index last).

    One record: the page at `path`; several, or `folder=True`, or an existing folder: `path` is a folder
    with `index.html` and a page per file. Each page plays its video by a path relative to the page, so
    the page keeps working moved together with its video; `copy_video` copies each video beside its
    page first. A path that exists is replaced only when it is a page dfer wrote."""
    from dfer_cli import __version__

    records = as_records(records)
    target = Path(path)
    if not is_folder_target(target, len(records), folder):
        pages = [(records[0], target)]
        index = None
    else:
        check_folder(target)
        names = names_in_folder([r["path"] for r in records], ".html", reserved=[INDEX])
        pages = [(r, target / n) for r, n in zip(records, names, strict=True)]
        index = target / INDEX
    shown = [(r, p) for r, p in pages if r.get("status") != "error"]
    check_replaceable([p for _, p in shown] + ([index] if index else []), is_report, "a report page")
    copies = [_copy_target(r, p) for r, p in shown] if copy_video else [None] * len(shown)
    sizes = {c: Path(r["path"]).stat().st_size for (r, _), c in zip(shown, copies, strict=True) if c is not None}
    # A copy of the same size is the one an earlier run made: replaced; any other file is the user's.
    check_replaceable(list(sizes), lambda c: c.stat().st_size == sizes[c], "a copied video")
    written = []
    for (record, page), copy in zip(shown, copies, strict=True):
        video = Path(record["path"]).absolute()
        if copy is not None:
            with atomic_path(copy) as tmp:
                shutil.copyfile(video, tmp)
            video = copy
        faces = thumbnails(str(record["path"]), file_spans(record))
        href = quote(Path(os.path.relpath(video, page.absolute().parent)).as_posix())
        atomic_write_text(page, page_html(record, href, faces, __version__,
                                          index_href=INDEX if index else None))
        written.append(page)
    if index is not None:
        entries = [(r, p.name if r.get("status") != "error" else None) for r, p in pages]
        atomic_write_text(index, index_html(entries, __version__))
        written.append(index)
    return written


def _copy_target(record: dict, page: Path) -> Path | None:
    """Where a page's video is copied: beside the page, named for it (`talk.html` -> `talk-video.mp4`, so
    that an annotated `talk.mp4` can sit beside it too); None when it is there already."""
    video = Path(record["path"])
    copy = page.with_name(f"{page.stem}-video{video.suffix.lower()}")
    return None if copy.absolute() == video.absolute() else copy
