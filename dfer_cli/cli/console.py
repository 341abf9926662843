"""The CLI's two consoles: results on stdout, messages (progress, warnings, errors) on stderr."""

from __future__ import annotations

from rich.console import Console

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)
