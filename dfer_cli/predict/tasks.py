"""The front end's tasks: a whole file, or one part of a long timeline, probed and planned once here."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dfer_cli.clips.plan import ClipConfig, ClipPlan, plan_file
from dfer_cli.media import decode

# Windows per part of a long timeline: about 50 MB of face crops and fbanks at 160 px (1.5 MB a
# window), and enough parts for the workers to share even a 10-minute video at --window 2.
TIMELINE_PART = 32


@dataclass(frozen=True)
class FilePart:
    """One task of the predict pipeline: a whole file (`info` None: the worker probes and plans it),
    or part `index` of `count` of a long timeline, which the main process probes and plans once. A
    timeline goes through in parts so that no process holds more than a part's crops at once."""

    path: str
    info: decode.VideoInfo | None = None
    plans: tuple[ClipPlan, ...] = ()
    index: int = 0
    count: int = 1


def file_tasks(paths: Sequence[str], cfg: ClipConfig, window: float | None) -> Iterator[FilePart]:
    """The predict pipeline's tasks: whole files, or with `window` the parts of each timeline, probed
    and planned here. A file that fails to probe stays whole: its worker meets the failure again and
    records it."""
    for path in paths:
        try:
            info = decode.probe(path, list_frames_up_to=0.0) if window else None
        except Exception:
            info = None
        if info is None:
            yield FilePart(path)
            continue
        plans = plan_file(info, cfg, window)
        count = max(1, math.ceil(len(plans) / TIMELINE_PART))
        for k in range(count):
            yield FilePart(path, info, tuple(plans[k * TIMELINE_PART:(k + 1) * TIMELINE_PART]), k, count)
