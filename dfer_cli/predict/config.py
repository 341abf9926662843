"""PredictConfig: everything that shapes a predict run, in one object (the API's keywords override it)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from dfer_cli.clips.plan import ClipConfig
from dfer_cli.errors import UsageError, check_count
from dfer_cli.faces.config import FaceConfig
from dfer_cli.labels import parse_frame_order
from dfer_cli.people.config import PeopleConfig

MIN_WINDOW_S = 0.5  # a timeline window: shorter ones hold a few frames, each sampled as a whole clip


@dataclass(frozen=True)
class PredictConfig:
    clips: ClipConfig = field(default_factory=ClipConfig)  # how many clips, of which frames and audio
    face: FaceConfig = field(default_factory=FaceConfig)
    people: PeopleConfig = field(default_factory=PeopleConfig)  # every person and whose voice, or the main face
    window: float | None = None  # seconds per timeline window; None: `clips.clips` clips per file
    batch_size: int = 8
    workers: int | None = None  # decoding processes; 0: in this one; None: by the number of files
    recursive: bool = True  # folders: walk their sub-folders too
    extensions: tuple[str, ...] | None = None  # folders: the video extensions to pick; None: all dfer reads
    from_list: Path | None = None  # a text file of more inputs, one per line
    explain: bool = False  # add an explanation of each file's label (explain/): about 5x the model's time
    explain_dir: Path | None = None  # one explanation PNG per file there (implies explain)
    # Seconds a worker may spend on one file (or timeline part) before it is killed and the file gets
    # an error record: a file on a dead mount never delivers its data. None: no limit.
    time_limit: float | None = 900.0

    def __post_init__(self) -> None:
        for name, least in (("window", MIN_WINDOW_S), ("time_limit", 0.0)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"{name.replace('_', '-')} {value!r}: expected a number of seconds")
            if not math.isfinite(value):  # inf ran for minutes and then crashed, nan compares false
                raise UsageError(f"{name.replace('_', '-')} {value}: expected a finite number of seconds")
            if value < least:
                raise UsageError(f"{name.replace('_', '-')} {value:g}: expected at least {least:g} seconds")
        check_count("batch_size", self.batch_size, least=1)
        if self.workers is not None:
            check_count("workers", self.workers, least=0)
        if self.people.people == "main" and self.people.max_people not in (1, PeopleConfig.max_people):
            raise UsageError(f"--max-people {self.people.max_people} with --people main: main analyses one "
                             "face; leave out --max-people, or use --people all")
        if self.explain_dir is not None:
            object.__setattr__(self, "explain_dir", Path(self.explain_dir))
            object.__setattr__(self, "explain", True)
        if self.from_list is not None:
            object.__setattr__(self, "from_list", Path(self.from_list))
        if self.extensions is not None:
            object.__setattr__(self, "extensions", video_extensions(self.extensions))

    def updated(self, **options: object) -> PredictConfig:
        """A copy with `options` changed: any field, plus `clips` as a count and `frame_order` as a
        name ("time" or "reference"), the two clip settings a user sets most, and `people` ("all" or
        "main"), `voice` ("auto" or "all") and `max_people` as PeopleConfig's fields."""
        clips, people = self.clips, options.pop("people", self.people)
        if isinstance(people, str):
            people = replace(self.people, people=people)
        people = replace(people, **{k: options.pop(k) for k in ("voice", "max_people") if k in options})
        if "clips" in options and not isinstance(options["clips"], ClipConfig):
            clips = replace(clips, clips=options.pop("clips"))  # a count: ClipConfig checks it
        if "frame_order" in options:
            order = options.pop("frame_order")
            clips = replace(clips, frame_order=parse_frame_order(order) if order else None)
        unknown = sorted(set(options) - {f.name for f in fields(self)})
        if unknown:
            raise UsageError(f"unknown predict option {unknown[0]!r}")
        return replace(self, **{"clips": clips, "people": people, **options})


def video_extensions(extensions: Iterable[str] | None) -> tuple[str, ...] | None:
    """"mp4", ".MOV" -> (".mp4", ".mov"); None stays None (every extension dfer reads)."""
    if extensions is None:
        return None
    if isinstance(extensions, str | os.PathLike):
        extensions = str(extensions).split(",")
    return tuple("." + e.strip().lstrip(".").lower() for e in extensions if e.strip())
