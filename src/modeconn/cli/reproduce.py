"""``modeconn reproduce``: a published landscape claim end to end, with a verdict."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any

import typer

from modeconn.cli import app
from modeconn.cli.common import DataDir, Device, Force, Out, Quiet, parse_int_list, print_summary
from modeconn.commands.reproduce import CLAIMS, run_reproduce
from modeconn.errors import ModeconnError


def parse_assignments(texts: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs with JSON values; a bare word that is not JSON is a string."""
    values: dict[str, Any] = {}
    for text in texts:
        name, sep, raw = text.partition("=")
        if not sep or not name.strip():
            raise ModeconnError(f"--set takes NAME=VALUE, got {text!r}")
        try:
            values[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[name.strip()] = raw
    return values


@app.command("reproduce")
def reproduce_command(
    name: Annotated[str, typer.Argument(help=f"The experiment: {', '.join(CLAIMS)}.")],
    out: Out,
    quick: Annotated[
        bool, typer.Option("--quick", help="The small digits setting (under a minute).")
    ] = False,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Comma-separated seeds (default: the setting's).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Architecture (default: the setting's; another one starts from its own "
            "default options).",
        ),
    ] = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Replace one setting, NAME=VALUE with a JSON value (repeatable), e.g. "
            "--set align=false --set 'num_bends=[4,4]'.",
        ),
    ] = None,
    data_dir: DataDir = None,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train what the claim needs, measure it, write the paper's figure, a table and a verdict."""
    settings = None
    if model is not None and name in CLAIMS:
        defaults = CLAIMS[name].settings(quick)
        # The setting's model options belong to its own architecture (e.g. the MLP's widths):
        # another architecture starts from its defaults; --set model_kwargs=... gives others.
        kwargs = defaults.model_kwargs if model == defaults.model else {}
        settings = replace(defaults, model=model, model_kwargs=kwargs)
    parsed = parse_int_list(seeds, "--seeds")
    overrides = parse_assignments(assignments or [])
    summary = run_reproduce(
        name,
        out,
        quick=quick,
        settings=settings,
        seeds=tuple(parsed) if parsed is not None else None,
        overrides=overrides,
        data_dir=str(data_dir) if data_dir else None,
        device=device,
        force=force,
        progress=not quiet,
    )
    print_summary(summary, out)
    verdict = "holds" if summary["holds"] else "does not hold"
    typer.echo(f"{name}: the claim {verdict} ({summary['seeds_holding']} seeds)")
