"""``modeconn demo``: the main job, the repair story end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import DataDir, Device, Quiet, Seed
from modeconn.cli.repair import parse_sweep
from modeconn.commands.demo import (
    FULL_DEMO,
    FULL_SWEEP,
    SCENARIOS,
    DemoConfig,
    results_table,
    run_demos,
)

_DEMO = DemoConfig()


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for all demo runs.")] = Path(
        "runs/demo"
    ),
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario", help="patch (default), blend, all-to-all, injection; repeatable."
        ),
    ] = None,
    all_scenarios: Annotated[
        bool,
        typer.Option(
            "--all",
            help=(
                "Run every scenario with every baseline and the library's distillation "
                "budget, and the patch pair from 50 and 250 bonafide images too."
            ),
        ),
    ] = False,
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = _DEMO.dataset,
    data_dir: DataDir = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of the models.")] = _DEMO.epochs,
    repair_epochs: Annotated[
        int | None,
        typer.Option("--repair-epochs", help="Curve epochs (default: the repair method's)."),
    ] = None,
    bonafide: Annotated[int, typer.Option("--bonafide")] = _DEMO.bonafide,
    scan_steps: Annotated[
        int | None, typer.Option("--scan-steps", help="Steps per synthesized trigger.")
    ] = None,
    no_baselines: Annotated[bool, typer.Option("--no-baselines")] = False,
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="Comma-separated bonafide sizes.")
    ] = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Redo every step instead of reusing finished ones.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """The main job: train, tamper, repair, compare with baselines, report."""
    chosen = list(SCENARIOS) if all_scenarios else (scenario or ["patch"])
    config = DemoConfig(
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        epochs=epochs,
        repair_epochs=repair_epochs,
        scan_steps=scan_steps,
        bonafide=bonafide,
        baselines=not no_baselines,
        sweep=parse_sweep(sweep),
        seed=seed,
        **FULL_DEMO if all_scenarios else {},
    )
    sweeps = FULL_SWEEP if all_scenarios and sweep is None else None
    summaries = run_demos(
        out, chosen, config=config, sweeps=sweeps, device=device, force=force, progress=not quiet
    )
    typer.echo(results_table(summaries))
    for s in summaries:
        typer.echo(f"{s['scenario']}: report at {s['report']}")
