"""Progress display for long work, in one place.

rich is imported when a display is made, not when modeconn is: the algorithm packages take a
``progress`` flag and stay importable (and fast to import) without the display code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress


def make_progress(enabled: bool) -> Progress:
    """A rich progress bar (description, bar, count, status, time left); disabled when not
    ``enabled`` (it then draws nothing)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def spinner(message: str):
    """A spinner with ``message`` on stderr while a block runs (a context manager)."""
    from rich.console import Console

    return Console(stderr=True).status(message)


__all__ = ["make_progress", "spinner"]
