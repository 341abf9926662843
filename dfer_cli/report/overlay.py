"""What the annotated video draws on each frame: every person's box, number, label and confidence in the
colour of their label, a mark on whoever speaks, and under the picture the timeline strip with a cursor."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from dfer_cli.colours import class_colour
from dfer_cli.report.palette import OFF_SCREEN, SPEECH, text_colour
from dfer_cli.report.spans import FileSpans, mood_at, visible
from dfer_cli.report.timeline import blend, person_name, strength


@dataclass
class Overlay:
    """The drawing of one file at one picture size: `draw(image, t)` paints a frame (width x height + the
    strip, the picture at the top) for time t."""
    spans: FileSpans
    class_names: list[str]
    width: int
    height: int
    box_scale: float  # the record's box pixels -> this picture's pixels
    notice: str | None = None  # a line under the strip on every frame (untrained weights)

    def __post_init__(self) -> None:
        self.font = ImageFont.load_default(size=max(11, min(self.width, self.height) // 26))
        self.line = max(2, round(min(self.width, self.height) / 180))
        self.lane = max(12, self.height // 24)
        self.colours = {n: class_colour(n, i) for i, n in enumerate(self.class_names)}
        self.strip = self._strip()

    @property
    def strip_height(self) -> int:
        return self.strip.height

    @property
    def lanes_height(self) -> int:
        return (len(self.spans.persons) + 1) * self.lane + 2

    def draw(self, picture: Image.Image, t: float) -> Image.Image:
        canvas = Image.new("RGB", (self.width, self.height + self.strip.height), "white")
        canvas.paste(picture, (0, 0))
        canvas.paste(self.strip, (0, self.height))
        ink = ImageDraw.Draw(canvas)
        for person in self.spans.persons:
            mood = mood_at(person, t)
            if mood is None or mood.box is None:
                continue
            x0, y0, x1, y1 = (v * self.box_scale for v in mood.box)
            colour = self.colours.get(mood.label, "#000000")
            ink.rectangle((x0, y0, x1, y1), outline=colour, width=self.line)
            speaks = any(s <= t < e for s, e in person.turns)
            tag = f"P{person.number} {mood.label} {mood.confidence:.0%}" + (" speaks" if speaks else "")
            left, top, right, bottom = ink.textbbox((0, 0), tag, font=self.font)
            pad = 2
            tag_h = bottom - top + 2 * pad
            ty = y0 - tag_h if y0 - tag_h >= 0 else y1  # above the box, or below it at the top edge
            ink.rectangle((x0, ty, x0 + right - left + 2 * pad, ty + tag_h), fill=colour)
            ink.text((x0 + pad - left, ty + pad - top), tag, fill=text_colour(colour), font=self.font)
            if speaks:  # a solid bar along the box's bottom: whoever speaks now
                ink.rectangle((x0, y1 - 3 * self.line, x1, y1), fill=SPEECH, outline="#FFFFFF")
        x = round(self._x(t))
        ink.line((x, self.height, x, self.height + self.lanes_height), fill="#D55E00", width=2)
        return canvas

    def _x(self, t: float) -> float:
        return self.width * min(max(t / max(self.spans.duration, 1e-3), 0.0), 1.0)

    def _strip(self) -> Image.Image:
        """A lane per person (their expression, and a bar above it where they speak), speech by nobody
        seen in grey on a lane of its own, and the cuts as black ticks."""
        rows = len(self.spans.persons) + 1
        lanes = rows * self.lane + 2
        height = lanes + (self.lane + 4 if self.notice else 0)
        height += (self.height + height) % 2  # H.264 in 4:2:0 needs an even height
        strip = Image.new("RGB", (self.width, height), "#F3F3F3")
        ink = ImageDraw.Draw(strip)
        if self.notice:
            ink.rectangle((0, lanes, self.width, height), fill="#F0E442")
            ink.text((4, lanes + 2), self.notice, fill="#000000", font=ImageFont.load_default(size=self.lane))
        classes = len(self.class_names)
        for row, person in enumerate(self.spans.persons):
            top = row * self.lane + 1
            for mood in person.moods:
                colour = blend(self.colours.get(mood.label, "#000000"), strength(mood.confidence, classes))
                for start, end in visible(mood, person.appearances):
                    ink.rectangle((self._x(start), top + self.lane // 3, self._x(end), top + self.lane - 2),
                                  fill=colour)
            for start, end in person.turns:
                ink.rectangle((self._x(start), top, self._x(end), top + self.lane // 3 - 1), fill=SPEECH)
            label = person_name(person.number).replace("person ", "")
            ink.text((2, top), label, fill="#000000", font=ImageFont.load_default(size=self.lane))
        top = (rows - 1) * self.lane + 1
        for start, end, who in self.spans.speech:
            if who is None:
                ink.rectangle((self._x(start), top + 2, self._x(end), top + self.lane - 2), fill=OFF_SCREEN)
        for cut in self.spans.cuts:
            ink.line((self._x(cut), 0, self._x(cut), lanes), fill="#000000", width=1)
        return strip
