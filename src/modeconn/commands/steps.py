"""Multi-step commands (``demo``, ``reproduce``): each step is a run directory of its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeconn.io import read_json
from modeconn.rundir import SUMMARY, run_status


def run_step(
    path: Path, force: bool, run: Callable[[Path, bool], dict[str, Any]]
) -> dict[str, Any]:
    """Reuse a finished step, resume an interrupted one, or run it afresh.

    ``run(path, resume)`` does the step; ``resume`` is true when ``path`` holds an unfinished run.
    """
    status = "new" if force else run_status(path)
    if status == "finished":
        return read_json(path / SUMMARY)
    return run(path, status == "started")
