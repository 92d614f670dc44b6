"""``modeconn import``: weights without a sidecar become a modeconn checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import (
    EvaluationData,
    ForeignModelOptions,
    JobOptions,
    Out,
    option_groups,
    path_text,
    print_summary,
)
from modeconn.data.prepare import DataConfig
from modeconn.errors import ModeconnError


@app.command("import")
@option_groups
def import_command(
    weights: Annotated[
        Path, typer.Argument(help="A state dict without a sidecar: .safetensors, .pt, .pth, .bin.")
    ],
    out: Out,
    foreign: ForeignModelOptions = ForeignModelOptions(),
    data: EvaluationData = EvaluationData(),
    job: JobOptions = JobOptions(),
) -> None:
    """Write WEIGHTS as a modeconn checkpoint (model.safetensors + model.json) with its clean
    test accuracy, so later commands need no --arch."""
    from modeconn.commands.import_weights import run_import

    architecture = foreign.architecture()
    if architecture is None:
        raise ModeconnError("import needs --arch: the architecture of the weights")
    summary = run_import(
        weights,
        out,
        foreign=architecture,
        data=DataConfig(
            dataset=data.dataset,
            data_dir=path_text(data.data_dir),
            test_limit=data.test_limit,
            seed=job.seed,
        ),
        device=job.device,
        force=job.force,
    )
    print_summary(summary, out)
