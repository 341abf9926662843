"""The HTML shell every report page shares: one self-contained document with its style and script inline,
and a generator mark that says dfer wrote it (so that a rerun may replace it and nothing else)."""

from __future__ import annotations

import json
import math
from html import escape
from importlib import resources

GENERATOR = "dfer report"  # the <meta name="generator"> of every page; its presence lets a rerun replace the page


def static(name: str) -> str:
    """A file of the package's static/ folder (the pages' CSS and scripts)."""
    return resources.files("dfer_cli.report").joinpath("static", name).read_text(encoding="utf-8")


def document(title: str, body: str, script: str, version: str) -> str:
    """A whole page: `body` HTML, `script` run at its end; nothing is fetched from anywhere."""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"generator\" content=\"{GENERATOR} {escape(version)}\">"
            # Nothing but the page itself, data URLs and the relative video may load.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "media-src 'self' file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            f"<title>{escape(title)}</title><style>{static('page.css')}</style></head>\n"
            f"<body>{body}\n<script>{script}</script></body></html>\n")


def json_block(element_id: str, data: object) -> str:
    """`data` as a JSON script block a reader (or a program) can take from the page."""
    text = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _finite(data: object) -> object:
    """NaN and infinities as null: JSON has no word for them."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def is_report(path) -> bool:
    """Whether the file at `path` is a page dfer wrote (its generator mark in its first 2 KB)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR} '.encode() in head
