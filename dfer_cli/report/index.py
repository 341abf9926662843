"""The index page of a report folder: a sortable row per file, and the files that failed with their reasons."""

from __future__ import annotations

from html import escape

from dfer_cli.report.document import document, static
from dfer_cli.report.page import CAVEAT, UNTRAINED_BANNER, untrained
from dfer_cli.report.timeline import person_name

_COLUMNS = (("file", "text"), ("label", "text"), ("confidence", "number"), ("speaker", "text"),
            ("persons", "number"), ("speech (s)", "number"), ("flags", "text"))


def index_html(entries: list[tuple[dict, str | None]], version: str) -> str:
    """`entries`: each record with the href of its page (None for a failed file)."""
    analysed = [(r, href) for r, href in entries if r.get("status") != "error"]
    failed = [r for r, _ in entries if r.get("status") == "error"]
    parts = [f"<header><h1>dfer report: {len(entries)} files</h1>"
             f'<p class="path">{len(analysed)} analysed, {len(failed)} failed</p></header>']
    if any(untrained(r) for r, _ in entries):
        parts.append(f'<div class="banner" role="alert"><strong>{escape(UNTRAINED_BANNER)}</strong></div>')
    parts.append(f'<p class="caveat">{escape(CAVEAT)}</p>')
    head = "".join(f'<th scope="col" data-type="{kind}"><button type="button" class="sort">{escape(name)}</button></th>'
                   for name, kind in _COLUMNS)
    rows = "".join(_row(r, href) for r, href in analysed)
    parts.append(f'<table id="files"><caption class="note">Press a column\'s name to sort by it.</caption>'
                 f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    if failed:
        items = "".join(f"<li><code>{escape(r['path'])}</code>: {escape(str(r.get('error')))}</li>" for r in failed)
        parts.append(f'<section class="failed"><h2>Failed ({len(failed)})</h2><ul>{items}</ul></section>')
    return document("dfer report", "".join(parts), static("index.js"), version)


def _row(record: dict, href: str | None) -> str:
    people = record.get("people")
    speaker = record.get("speaker")
    confidence = record.get("confidence")
    flags = ", ".join(k for k, v in (record.get("flags") or {}).items() if v is True)
    name = escape(record["path"])
    cells = [
        (f'<a href="{escape(href)}">{name}</a>' if href else name, record["path"]),
        (escape(record.get("label") or "no face"), record.get("label") or ""),
        (f"{confidence:.0%}" if confidence is not None else "", f"{confidence}" if confidence is not None else ""),
        (escape(person_name(speaker)) if speaker is not None else "", "" if speaker is None else person_name(speaker)),
        (str(len(people)) if people is not None else "main face", str(len(people)) if people is not None else ""),
        (f"{record['speech_seconds']:.2f}" if record.get("speech_seconds") is not None else "",
         str(record.get("speech_seconds") or "")),
        (escape(flags), flags),
    ]
    return "<tr>" + "".join(
        f'<td{" class=num" if kind == "number" else ""} data-value="{escape(value)}">{html}</td>'
        for (html, value), (_, kind) in zip(cells, _COLUMNS, strict=True)) + "</tr>"
