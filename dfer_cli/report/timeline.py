"""The page's one time axis, as inline SVG: a lane of cuts, one of speech, and per person a lane of when they
speak and a strip of their expression (the top class's colour, its confidence as opacity, gaps where they
are off screen). The page's script seeks the video where a lane is clicked and moves the cursor."""

from __future__ import annotations

from html import escape

from dfer_cli.colours import class_colour
from dfer_cli.report.palette import OFF_SCREEN, SPEECH, text_colour
from dfer_cli.report.spans import FileSpans, PersonSpans, visible

WIDTH, LABEL_W, RIGHT = 1200, 150, 16
TRACK_W = WIDTH - LABEL_W - RIGHT
AXIS_H, LANE_H, GAP = 26, 22, 5
_STEPS = (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def person_name(number: int | None) -> str:
    return "main face" if number is None else f"person {number}"


def timeline_svg(spans: FileSpans, class_names: list[str], has_cuts: bool) -> str:
    """The lanes over [0, duration]; `has_cuts`: the record carries cuts (a lane even when none was found)."""
    duration = max(spans.duration, 1e-3)
    lanes: list[tuple[str, str, list[str]]] = []  # (kind, label, shapes)
    if has_cuts:
        lanes.append(("cuts", "cuts" if spans.cuts else "cuts (none found)", _cuts(spans.cuts, duration)))
    lanes.append(("speech", "speech", _speech(spans.speech, duration)))
    colours = {n: class_colour(n, i) for i, n in enumerate(class_names)}
    for person in spans.persons:
        name = person_name(person.number)
        if person.number is not None:
            lanes.append(("speaks", f"{name} speaks",
                          [_bar(s, e, duration, SPEECH, f"{name} speaks {s:.2f}-{e:.2f} s") for s, e in person.turns]))
        lanes.append(("face", f"{name} face", _moods(person, duration, colours, len(class_names))))
    height = AXIS_H + len(lanes) * (LANE_H + GAP) + 4
    body = [_axis(duration, height)]
    for row, (kind, label, shapes) in enumerate(lanes):
        y = AXIS_H + row * (LANE_H + GAP)
        body.append(f'<g class="lane lane-{kind}" transform="translate(0 {y})">'
                    f'<text class="lane-label" x="{LABEL_W - 8}" y="{LANE_H * 0.7:.1f}" text-anchor="end">'
                    f'{escape(label)}</text>'
                    f'<rect class="lane-bg" x="{LABEL_W}" y="0" width="{TRACK_W}" height="{LANE_H}"/>'
                    + "".join(shapes) + "</g>")
    body.append(f'<line id="cursor" x1="{LABEL_W}" x2="{LABEL_W}" y1="{AXIS_H - 6}" y2="{height}"/>')
    return (f'<svg id="timeline" class="timeline" viewBox="0 0 {WIDTH} {height}" role="slider" tabindex="0" '
            f'aria-label="timeline: click or use the arrow keys to move the video" aria-valuemin="0" '
            f'aria-valuemax="{duration:.3f}" aria-valuenow="0" data-duration="{duration:.6f}" '
            f'data-x0="{LABEL_W}" data-width="{TRACK_W}" xmlns="http://www.w3.org/2000/svg">'
            + "".join(body) + "</svg>")


def x_of(t: float, duration: float) -> float:
    """The SVG x of time t."""
    return LABEL_W + TRACK_W * min(max(t / duration, 0.0), 1.0)


def strength(confidence: float, classes: int) -> float:
    """Opacity for a confidence: 0.2 at chance (1 / classes) or below, 1 at certainty."""
    chance = 1.0 / max(classes, 1)
    return 0.2 + 0.8 * min(max((confidence - chance) / (1.0 - chance), 0.0), 1.0) if classes > 1 else 1.0


def blend(colour: str, alpha: float) -> str:
    """`colour` at opacity `alpha` over white, as #RRGGBB."""
    channels = (round(alpha * int(colour[i:i + 2], 16) + (1 - alpha) * 255) for i in (1, 3, 5))
    return "#" + "".join(f"{c:02X}" for c in channels)


def _axis(duration: float, height: int) -> str:
    step = next((s for s in _STEPS if duration / s <= 12), _STEPS[-1])
    ticks, t = [], 0.0
    while t <= duration + 1e-9:
        x = x_of(t, duration)
        ticks.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{AXIS_H - 6}" y2="{height}"/>'
                     f'<text class="tick-label" x="{x:.1f}" y="{AXIS_H - 10}" text-anchor="middle">'
                     f'{_clock(t, step)}</text>')
        t += step
    return '<g class="axis" aria-hidden="true">' + "".join(ticks) + "</g>"


def _clock(t: float, step: float) -> str:
    if t >= 60 or step >= 60:
        return f"{int(t // 60)}:{int(t % 60):02d}"
    return f"{t:g} s"


def _bar(start: float, end: float, duration: float, colour: str, title: str, extra: str = "") -> str:
    x0, x1 = x_of(start, duration), x_of(end, duration)
    return (f'<rect x="{x0:.2f}" y="2" width="{max(x1 - x0, 0.8):.2f}" height="{LANE_H - 4}" fill="{colour}"'
            f'{extra} data-start="{start:.3f}"><title>{escape(title)}</title></rect>')


def _cuts(cuts: tuple[float, ...], duration: float) -> list[str]:
    return [f'<line class="cut" x1="{x_of(t, duration):.2f}" x2="{x_of(t, duration):.2f}" y1="1" y2="{LANE_H - 1}">'
            f'<title>cut at {t:.2f} s</title></line>' for t in cuts]


def _speech(speech: tuple, duration: float) -> list[str]:
    return [_bar(s, e, duration, SPEECH if p is not None else OFF_SCREEN,
                 f"speech {s:.2f}-{e:.2f} s: {person_name(p) if p is not None else 'nobody on screen'}")
            for s, e, p in speech]


def _moods(person: PersonSpans, duration: float, colours: dict[str, str], classes: int) -> list[str]:
    shapes = []
    for mood in person.moods:
        alpha = strength(mood.confidence, classes)
        colour = colours.get(mood.label, "#000000")
        for start, end in visible(mood, person.appearances):
            title = f"{person_name(person.number)} {start:.2f}-{end:.2f} s: {mood.label} {mood.confidence:.0%}"
            shapes.append(_bar(start, end, duration, colour, title, f' fill-opacity="{alpha:.2f}" class="mood"'))
            x0, x1 = x_of(start, duration), x_of(end, duration)
            if x1 - x0 > 7 * len(mood.label) + 6:  # the class named inside the bar where it fits
                shapes.append(f'<text class="mood-label" x="{(x0 + x1) / 2:.1f}" y="{LANE_H * 0.68:.1f}" '
                              f'text-anchor="middle" fill="{text_colour(blend(colour, alpha))}">'
                              f'{escape(mood.label)}</text>')
    return shapes
