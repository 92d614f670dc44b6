"""Multi-step commands (``demo``, ``reproduce``): each step is a run directory of its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeconn.attacks.config import AttackConfig
from modeconn.errors import InvalidArgument
from modeconn.io import read_json
from modeconn.models.registry import check_model_kwargs
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


def resume_flags(resume: bool) -> dict[str, bool]:
    """The ``force``/``resume`` arguments of a step's command: resume an unfinished run, else
    start afresh (a finished one never reaches the step: :func:`run_step` reuses it)."""
    return {"force": not resume, "resume": resume}


def check_experiment(
    model: str,
    model_kwargs: dict[str, Any],
    seeds: tuple[int, ...],
    attack: AttackConfig | None = None,
) -> None:
    """The checks every multi-step experiment's settings share, made before anything is written:
    a known architecture that takes the options given, at least one seed and none negative, and
    a valid attack if it has one."""
    check_model_kwargs(model, model_kwargs)
    if not seeds:
        raise InvalidArgument("seeds", "give at least one seed")
    if any(s < 0 for s in seeds):
        raise InvalidArgument("seeds", f"seeds must be non-negative, got {seeds}")
    if attack is not None:
        attack.validate()
