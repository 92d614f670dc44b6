"""``modeconn align``: permute one model's hidden units onto another's (weight-space symmetry)."""

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
    TestLimit,
    TrainLimit,
    data_config,
    default_of,
    option_groups,
    print_summary,
)
from modeconn.commands.align import run_align


@app.command("align")
@option_groups
def align_command(
    model_a: Annotated[Path, typer.Argument(help="The reference model A.")],
    model_b: Annotated[Path, typer.Argument(help="The model B whose units are permuted.")],
    out: Out,
    method: Annotated[
        str,
        typer.Option(
            "--method", help="weight (match weights) or activation (match features on data)."
        ),
    ] = default_of(run_align, "method"),
    misalign: Annotated[
        bool,
        typer.Option(
            "--misalign", help="Find the least similar permutation instead (same function as B)."
        ),
    ] = False,
    points: Annotated[
        int, typer.Option("--points", help="Evenly spaced t on each straight segment.")
    ] = default_of(run_align, "points"),
    max_iter: Annotated[
        int, typer.Option("--max-iter", help="Sweeps of weight-matching coordinate descent.")
    ] = default_of(run_align, "max_iter"),
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    foreign: ForeignModelOptions = ForeignModelOptions(),
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Permute B's hidden units onto A's; write permuted B and the straight line's barrier before
    and after."""
    summary = run_align(
        model_a,
        model_b,
        out,
        method=method,
        mode="misalign" if misalign else "align",
        data=data_config(
            dataset, data_dir, seed, train_limit=train_limit, test_limit=test_limit, augment=False
        ),
        points=points,
        max_iter=max_iter,
        seed=seed,
        device=device,
        force=force,
        progress=not quiet,
        **foreign.keywords(),
    )
    print_summary(summary, out)
