"""The one progress bar of long work (files analysed, clips prepared, samples trained), on stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text


class _Rate(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.1f} {self.unit}/s" if task.speed else "")


@contextmanager
def progress_bar(description: str, total: int, done: int = 0, enabled: bool = True,
                 rate_unit: str | None = None) -> Iterator[Callable[..., None]]:
    """Yields `advance(n=1, description=None)`. Nothing is drawn when disabled or when stderr is not a
    terminal (a log file or a pipe gets no bar codes). With `rate_unit` the bar shows a rate (e.g.
    samples/s) instead of the done/total count; the ETA covers all of `total`."""
    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield lambda n=1, description=None: None
        return
    count = _Rate(rate_unit) if rate_unit else MofNCompleteColumn()
    with Progress(TextColumn("{task.description}"), BarColumn(), count, TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(description, total=total, completed=done)

        def advance(n: int = 1, description: str | None = None) -> None:
            bar.update(task, advance=n, **({"description": description} if description else {}))

        yield advance
