"""One file's report page: a summary, the video, the time axis with its lanes, and a card per person."""

from __future__ import annotations

from html import escape
from pathlib import Path

from dfer_cli.colours import class_colour
from dfer_cli.report.document import document, json_block, static
from dfer_cli.report.spans import FileSpans, PersonSpans, file_spans
from dfer_cli.report.timeline import person_name, timeline_svg

CAVEAT = ("dfer reads expressions, not felt emotions: each label says what a face and a voice show, as the "
          "model learned it from labelled film clips, not what the person feels.")
UNTRAINED_BANNER = ("Untrained weights: these results come from random weights, so the emotions are "
                    "meaningless. The page shows the layout and the pipeline, nothing about the people.")
_VOICES = {"own": "own (hears the speech attributed to them)", "none": "none (no speech attributed to them)",
           "all": "all (the whole soundtrack: the only face, or --voice all)"}


def untrained(record: dict) -> bool:
    return str(record.get("weights") or "").startswith("untrained")


def page_html(record: dict, video_href: str | None, faces: dict[int, str],
              version: str, index_href: str | None = None) -> str:
    """The page of one analysed record (status ok or no_face); `video_href` relative to the page."""
    spans = file_spans(record)
    class_names = list(record.get("probabilities") or _first_probabilities(record) or [])
    name = Path(record["path"]).name
    parts = [f'<header><h1>{escape(name)}</h1><p class="path">{escape(record["path"])}</p>']
    if index_href:
        parts.append(f'<p><a href="{escape(index_href)}">all files</a></p>')
    parts.append("</header>")
    if untrained(record):
        parts.append(f'<div class="banner" role="alert"><strong>{escape(UNTRAINED_BANNER)}</strong></div>')
    parts.append(f'<p class="caveat">{escape(CAVEAT)}</p>')
    parts.append('<div class="top">' + _summary(record, spans, version) + _player(video_href) + "</div>")
    parts.append('<section class="over-time"><h2>Over time</h2>' + _legend(class_names) + _source_note(spans)
                 + timeline_svg(spans, class_names, "cuts" in record)
                 + '<p class="readout" aria-live="off">at <span id="now">0.00 s</span></p></section>')
    cards = "".join(_card(record, p, faces.get(p.number), class_names) for p in spans.persons)
    parts.append('<section class="persons"><h2>Persons</h2>'
                 + (f'<div class="cards">{cards}</div>' if cards else '<p class="note">No face was found.</p>')
                 + "</section>")
    parts.append('<footer><p>The whole record is in this page, as JSON in the script block '
                 '<code>dfer-record</code>.</p></footer>' + json_block("dfer-record", record))
    return document(f"dfer: {name}", "".join(parts), static("page.js"), version)


def _first_probabilities(record: dict) -> dict | None:
    return next((p["probabilities"] for p in record.get("people") or [] if p.get("probabilities")), None)


def _summary(record: dict, spans: FileSpans, version: str) -> str:
    people = record.get("people")
    speaker = record.get("speaker")
    rows = [
        ("label", _call(record.get("label"), record.get("confidence")) if record.get("label") else "no face found"),
        ("speaker", person_name(speaker) if speaker is not None
         else "nobody on screen" if people is not None else "not analysed (--people main)"),
        ("speech", _speech(record)),
        ("persons", str(len(people)) if people is not None else "the main face only (--people main)"),
        ("duration", f"{spans.duration:.2f} s" + _size(record.get("media") or {})),
        ("weights", str(record.get("weights") or "not recorded")),
        ("precision", record.get("precision") or "not recorded"),
        ("dfer", version),
    ]
    flags = [k for k, v in (record.get("flags") or {}).items() if v is True]
    if flags:
        rows.append(("flags", ", ".join(flags)))
    return ('<section class="summary"><h2>Summary</h2><dl>'
            + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows) + "</dl></section>")


def _speech(record: dict) -> str:
    if record.get("speech_seconds") is None:
        return "not analysed (--people main)"
    off = record.get("unattributed_speech_seconds")
    return f"{record['speech_seconds']:.2f} s" + (f", {off:.2f} s of it by nobody on screen" if off else "")


def _call(label: str | None, confidence: float | None) -> str:
    return f"{label} ({confidence:.0%})" if label is not None and confidence is not None else "none"


def _size(media: dict) -> str:
    if not media.get("width"):
        return ""
    rate = f", {media['frame_rate']:g} frames/s" if media.get("frame_rate") else ""
    return f", {media['width']}x{media['height']}{rate}"


def _player(video_href: str | None) -> str:
    if video_href is None:
        return '<section class="player"><p class="note">No video beside this page.</p></section>'
    return ('<section class="player">'
            f'<video id="video" src="{escape(video_href)}" controls preload="metadata"></video>'
            '<p id="video-missing" class="note" role="status" hidden>The video could not be played from '
            f'<code>{escape(video_href)}</code>, the path relative to this page: the page or the video was moved, '
            'or this browser does not play its format (MPEG-1, for one). Put them back side by side, rerun with '
            '<code>--copy-video</code>, or use <code>--annotate</code>, which writes H.264.</p></section>')


def _legend(class_names: list[str]) -> str:
    items = "".join(f'<li><span class="swatch" style="background:{class_colour(n, i)}"></span>{escape(n)}</li>'
                    for i, n in enumerate(class_names))
    return (f'<ul class="legend" aria-label="colours of the emotions">{items}'
            '<li class="legend-note">faint: near chance, solid: confident; blank: off screen</li></ul>')


def _source_note(spans: FileSpans) -> str:
    if spans.covered:
        return '<p class="note">A call per window (or clip) of the video, one lane per thing seen or heard.</p>'
    return ('<p class="note">dfer looked at the clips drawn here only; run it with <code>--window SECONDS</code> '
            'for a call across the whole video.</p>')


def _card(record: dict, spans: PersonSpans, face: str | None, class_names: list[str]) -> str:
    person = next((p for p in record.get("people") or [] if p["person"] == spans.number), None)
    source = person or record
    name = person_name(spans.number)
    speaks = spans.number is not None and spans.number == record.get("speaker")
    picture = (f'<img class="face" src="{face}" alt="face of {name}" width="112" height="112">' if face
               else '<div class="face no-face" role="img" aria-label="no picture">no picture</div>')
    head = f'<h3>{escape(name.capitalize())}' + (' <span class="badge">speaks most</span>' if speaks else "") + "</h3>"
    rows = []
    seen = sum(e - s for s, e in spans.appearances)
    rows.append(("on screen", f"{person['seen'] if person and person.get('seen') is not None else seen:.2f} s"))
    if person is not None:
        rows.append(("speaking", f"{person.get('speech_seconds') or 0:.2f} s ({person.get('speaking') or 0:.0%} of "
                                 "the speech)"))
        rows.append(("voice", _VOICES.get(person.get("voice"), str(person.get("voice")))))
    explanation = source.get("explanation")
    if explanation:
        rows.append(("why", _shares(explanation)))
    first = spans.appearances[0][0] if spans.appearances else 0.0
    return (f'<article class="person-card" data-person="{"" if spans.number is None else spans.number}">'
            f'{picture}<div class="card-body">{head}'
            f'<p class="call">{escape(_call(source.get("label"), source.get("confidence")))}</p>'
            + _bars(source.get("probabilities") or {}, class_names)
            + "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows) + "</dl>"
            f'<button type="button" class="seek" data-t="{first:.3f}">play from {first:.2f} s</button>'
            "</div></article>")


def _bars(probabilities: dict[str, float], class_names: list[str]) -> str:
    top = sorted(probabilities.items(), key=lambda kv: -kv[1])[:3]
    index = {n: i for i, n in enumerate(class_names)}
    items = "".join(
        f'<li><span class="bar-name">{escape(n)}</span><span class="bar" role="img" aria-label="{escape(n)} '
        f'{p:.0%}"><span style="width:{p * 100:.1f}%;background:{class_colour(n, index.get(n, 0))}"></span></span>'
        f'<span class="bar-value">{p:.0%}</span></li>' for n, p in top)
    return f'<ol class="bars" aria-label="top three expressions">{items}</ol>'


def _shares(explanation: dict) -> str:
    if explanation.get("no_audio"):
        return "no audio: the face alone"
    if explanation.get("undetermined"):
        return "voice and face shares undetermined (neither removal lowers the call)"
    voice, face = explanation.get("voice_share"), explanation.get("face_share")
    if voice is None or face is None:
        return "not measured"
    return f"voice {voice:.0%}, face {face:.0%} of the call"
