"""``modeconn scan``: trigger synthesis and the backdoor verdict, from bonafide data only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import (
    DataDir,
    Device,
    Force,
    ForeignModelOptions,
    OptDataset,
    Out,
    Quiet,
    Seed,
    TrainLimit,
    data_config,
    option_groups,
)
from modeconn.defenses.scan import ScanConfig
from modeconn.errors import ModeconnError

_DEFAULTS = ScanConfig()


@app.command("scan")
@option_groups
def scan_command(
    model: Annotated[Path, typer.Argument(help="The checkpoint to scan.")],
    out: Out,
    bonafide: Annotated[
        int, typer.Option("--bonafide", help="Clean training samples the scan may draw from.")
    ] = 2500,
    images: Annotated[
        int, typer.Option("--images", help="Bonafide images used for the synthesis.")
    ] = _DEFAULTS.images,
    steps: Annotated[
        int, typer.Option("--steps", help="Optimisation steps per trigger.")
    ] = _DEFAULTS.steps,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images per class per step.")
    ] = _DEFAULTS.batch_size,
    kinds: Annotated[
        str,
        typer.Option(
            "--kinds", help="Comma-separated trigger kinds: mask, perturbation, blend, warp."
        ),
    ] = ",".join(_DEFAULTS.kinds),
    threshold: Annotated[
        float, typer.Option("--threshold", help="Anomaly index above which a class is flagged.")
    ] = _DEFAULTS.threshold,
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            help="none (compare classes with each other), scratch (train a reference on the "
            "bonafide data) or a clean checkpoint to compare each class with.",
        ),
    ] = "none",
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    foreign: ForeignModelOptions = ForeignModelOptions(),
    train_limit: TrainLimit = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Is MODEL backdoored? Synthesizes a trigger per class and flags anomalously small ones."""
    from modeconn.commands.scan import run_scan

    kind_list = tuple(k.strip() for k in kinds.split(",") if k.strip())
    if not kind_list:
        raise ModeconnError("--kinds needs at least one of mask, perturbation, blend, warp")
    config = ScanConfig(
        images=images,
        steps=steps,
        batch_size=batch_size,
        kinds=kind_list,
        threshold=threshold,
        seed=seed,
    )
    ref: str | None = None if reference == "none" else reference
    summary = run_scan(
        model,
        out,
        config=config,
        data=data_config(dataset, data_dir, seed, train_limit=train_limit, bonafide=bonafide),
        reference=ref,
        device=device,
        force=force,
        progress=not quiet,
        **foreign.keywords(),
    )
    typer.echo(summary["verdict"])
    typer.echo((out / "scan.md").read_text())
    typer.echo(f"written to {out}")
