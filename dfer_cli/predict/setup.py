"""What one run of a model goes by, here and on Ray alike (`Model.setup` makes it): its settings, the name
of the weights each record carries, the note on its explanation pictures, and those pictures' names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dfer_cli.predict.config import PredictConfig


@dataclass(frozen=True)
class RunSetup:
    config: PredictConfig  # with the weights' own frame order where none was asked for
    weights: str | None = None  # stamped on every record: which weights classified it
    note: str = ""  # drawn on the explanation pictures: that the weights are untrained

    def pictures(self, paths: Sequence[str]) -> list[Path] | None:
        """Where each path's explanation is drawn (with `config.explain_dir`; else None), named over all
        of the run's paths at once, so that processes sharing the files never draw over each other."""
        if self.config.explain_dir is None:
            return None
        from dfer_cli.explain.plot import picture_paths  # matplotlib: only for pictures

        return picture_paths(self.config.explain_dir, paths)
