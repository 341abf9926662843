"""A timeline's parts, classified in turn, joined back into one file's record."""

from __future__ import annotations

import numpy as np

from dfer_cli.clips.flags import merge_flags
from dfer_cli.predict.frontend import PreparedFile
from dfer_cli.results.records import FileResult


class TimelineJoiner:
    """Joins the parts of a timeline, classified in turn, back into one file's record; the parts'
    model inputs are dropped as they come, so a long video never holds more than a part of them."""

    def __init__(self) -> None:
        self.file: PreparedFile | None = None
        self.flags: list[dict] = []
        self.seen: list[np.ndarray] = []

    def add(self, p: PreparedFile) -> PreparedFile | None:
        """The whole file once its last part is in, else None."""
        if p.part is None or p.part.count == 1:
            return p
        p.videos = p.audios = None
        if p.part.index == 0:
            self.file, self.flags, self.seen = p, [], []
        whole = self.file.result
        if p.result.status == "error":  # a part that fails fails the file, with its reason
            if whole.status != "error":
                self.file.result = FileResult.failed(whole.path, p.result.error)
        else:
            self.flags.append(p.result.flags)
            self.seen.append(p.seen_times)
            if p is not self.file:
                whole.clips += p.result.clips
                whole.cuts = sorted({*whole.cuts, *p.result.cuts})
                whole.timings = {k: round(whole.timings.get(k, 0) + p.result.timings.get(k, 0), 4)
                                 for k in whole.timings | p.result.timings}
        if p.part.index < p.part.count - 1:
            return None
        if self.file.result.status != "error":
            self.file.result.flags = merge_flags(self.flags, self.seen)
        return self.file
