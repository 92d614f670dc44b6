"""``modeconn reproduce``: a published landscape claim end to end, with a verdict."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import DataDir, Device, Force, Out, Quiet, parse_int_list, print_summary
from modeconn.commands.reproduce import EXPERIMENTS, run_reproduce


@app.command("reproduce")
def reproduce_command(
    name: Annotated[str, typer.Argument(help=f"The experiment: {', '.join(EXPERIMENTS)}.")],
    out: Out,
    quick: Annotated[
        bool, typer.Option("--quick", help="The small digits setting (under a minute).")
    ] = False,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Comma-separated seeds (default: the setting's).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Architecture (default: the setting's).")
    ] = None,
    data_dir: DataDir = None,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train what the claim needs, measure it, write the paper's figure, a table and a verdict."""
    settings = None
    if model is not None and name in EXPERIMENTS:
        defaults = EXPERIMENTS[name].quick() if quick else EXPERIMENTS[name].full()
        settings = replace(defaults, model=model)
    parsed = parse_int_list(seeds, "--seeds")
    summary = run_reproduce(
        name,
        out,
        quick=quick,
        settings=settings,
        seeds=tuple(parsed) if parsed is not None else None,
        data_dir=str(data_dir) if data_dir else None,
        device=device,
        force=force,
        progress=not quiet,
    )
    print_summary(summary, out)
    verdict = "holds" if summary["holds"] else "does not hold"
    typer.echo(f"{name}: the claim {verdict} ({summary['seeds_holding']} seeds)")
