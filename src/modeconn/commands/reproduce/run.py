"""The claims by name and :func:`run_reproduce`, which runs one of them into a run directory."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from modeconn.commands.reproduce.awp import AWP
from modeconn.commands.reproduce.claim import Claim, StepOptions
from modeconn.commands.reproduce.robust_barrier import ROBUST_BARRIER
from modeconn.commands.reproduce.settings import with_overrides
from modeconn.commands.reproduce.surface import SURFACE
from modeconn.data.registry import load_dataset
from modeconn.errors import InvalidArgument
from modeconn.rundir import RunDir, run_status

#: Every reproducible claim, by the name ``modeconn reproduce NAME`` takes.
CLAIMS: dict[str, Claim] = {
    "robust-barrier": ROBUST_BARRIER,
    "awp": AWP,
    "surface": SURFACE,
}


def run_reproduce(
    name: str,
    out: str | Path,
    *,
    quick: bool = False,
    settings: Any = None,
    seeds: tuple[int, ...] | None = None,
    overrides: dict[str, Any] | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run experiment ``name`` (one of :data:`CLAIMS`) into ``out``; return its summary.

    ``settings`` replaces the experiment's defaults (its settings dataclass); ``quick`` takes
    the small setting instead; ``seeds`` overrides the settings' seeds; ``overrides`` replaces
    single fields of the settings (:func:`with_overrides`; the CLI's ``--set NAME=VALUE``).
    A finished run is re-aggregated from its finished steps; ``force`` redoes every step. The
    summary's ``seconds`` is the wall time of the calls that produced it: a call that only
    re-aggregates adds its own time to the finished run's.
    """
    if name not in CLAIMS:
        raise InvalidArgument("name", f"unknown experiment '{name}' (use {', '.join(CLAIMS)})")
    claim = CLAIMS[name]
    if settings is None:
        settings = claim.settings(quick)
    chosen = with_overrides(settings, overrides) if overrides else settings
    if seeds is not None:
        chosen = replace(chosen, seeds=tuple(seeds))
    chosen.validate()
    # An unknown or missing data set is reported before the run directory is written.
    load_dataset(chosen.dataset, data_dir)
    started = time.perf_counter()
    earlier = "new" if force else run_status(out)
    run = RunDir(out, force=force, resume=True)
    # A run that was started (or finished) before is continued only with the same settings: its
    # finished steps are reused, and steps of other settings must not be mixed in.
    run.resuming = earlier != "new"
    run.write_config(
        {"command": "reproduce", "experiment": name, "quick": quick, "settings": asdict(chosen)}
    )
    options = StepOptions(data_dir=data_dir, device=device, force=force, progress=progress)
    summary = claim.run(run, chosen, options)
    before = run.read_summary().get("seconds", 0.0) if earlier == "finished" else 0.0
    summary["seconds"] = before + time.perf_counter() - started
    run.write_summary(summary)
    return summary
