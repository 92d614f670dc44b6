"""``modeconn hessian`` and ``modeconn landscape``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import (
    Alpha,
    AttackNorm,
    AttackSteps,
    DataDir,
    Device,
    Eps,
    Force,
    OptDataset,
    Out,
    Quiet,
    Seed,
    pgd_config,
    print_summary,
)
from modeconn.commands.landscape import LandscapeConfig, run_hessian, run_landscape

ModelArg = Annotated[
    Path, typer.Argument(help="Checkpoint (.safetensors, its .json, or a run directory).")
]
Split = Annotated[str, typer.Option("--split", help="train, test, val, bonafide, …")]
Method = Annotated[str, typer.Option("--method", help="Eigen-solver: power or lanczos.")]
Iters = Annotated[int, typer.Option("--iters", help="Cap on Hessian-vector products.")]
Tol = Annotated[float, typer.Option("--tol", help="Stop at this relative residual ‖Hv − λv‖/|λ|.")]
Limit = Annotated[
    int | None, typer.Option("--limit", help="Use a stratified subset of this many images.")
]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per batched computation.")]


@app.command("hessian")
def hessian_command(
    model_path: ModelArg,
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    split: Split = "test",
    limit: Limit = 1000,
    batch_size: BatchSize = 256,
    method: Method = "power",
    iters: Iters = 100,
    tol: Tol = 1e-3,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to write.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Largest input-Hessian eigenvalue of every image (batched); mean and max over the set."""
    summary = run_hessian(
        model_path,
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        split=split,
        limit=limit,
        batch_size=batch_size,
        method=method,
        iters=iters,
        tol=tol,
        seed=seed,
        out=out,
        device=device,
        force=force,
    )
    print_summary(summary, out)


@app.command("landscape")
def landscape_command(
    model_path: ModelArg,
    out: Out,
    through: Annotated[
        list[Path] | None,
        typer.Option(
            "--through", help="Another model: once for the line to it, twice for the plane."
        ),
    ] = None,
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    split: Split = "train",
    limit: Limit = 512,
    batch_size: BatchSize = 256,
    spectrum: Annotated[
        bool, typer.Option("--spectrum/--no-spectrum", help="Weight-Hessian top-k and trace.")
    ] = True,
    top_k: Annotated[int, typer.Option("--top-k", help="Number of top eigenvalues.")] = 5,
    method: Method = "lanczos",
    iters: Iters = 100,
    tol: Tol = 1e-3,
    trace_samples: Annotated[
        int, typer.Option("--trace-samples", help="Cap on Hutchinson probes.")
    ] = 50,
    density: Annotated[
        bool, typer.Option("--density/--no-density", help="Spectral density (SLQ).")
    ] = True,
    density_steps: Annotated[
        int, typer.Option("--density-steps", help="Lanczos steps per SLQ probe.")
    ] = 30,
    density_probes: Annotated[int, typer.Option("--density-probes", help="SLQ probes.")] = 2,
    scan_1d: Annotated[
        bool, typer.Option("--scan-1d/--no-scan-1d", help="1D random-direction scan.")
    ] = True,
    scan_2d: Annotated[
        bool, typer.Option("--scan-2d/--no-scan-2d", help="2D random-direction scan.")
    ] = True,
    span: Annotated[
        float, typer.Option("--span", help="Scan half-width in filter-normalised units.")
    ] = 1.0,
    points: Annotated[int, typer.Option("--points", help="Points of 1D scans and lines.")] = 21,
    grid: Annotated[int, typer.Option("--grid", help="Points per axis of 2D scans.")] = 11,
    adversarial: Annotated[
        bool,
        typer.Option("--adversarial", help="Also the robust loss, PGD regenerated at each point."),
    ] = False,
    eps: Eps = "8/255",
    alpha: Alpha = "2/255",
    attack_steps: AttackSteps = 10,
    norm: AttackNorm = "linf",
    robust_limit: Annotated[
        int | None, typer.Option("--robust-limit", help="Images attacked at each point.")
    ] = 256,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Weight-space geometry: Hessian spectrum, random-direction and through-model scans, plots."""
    config = LandscapeConfig(
        split=split,
        limit=limit,
        batch_size=batch_size,
        spectrum=spectrum,
        top_k=top_k,
        method=method,
        iters=iters,
        tol=tol,
        trace_samples=trace_samples,
        density=density and spectrum,
        density_steps=density_steps,
        density_probes=density_probes,
        scan_1d=scan_1d,
        scan_2d=scan_2d,
        span=span,
        points=points,
        grid=grid,
        adversarial=pgd_config(eps, alpha, attack_steps, norm, seed) if adversarial else None,
        robust_limit=robust_limit,
        seed=seed,
    )
    summary = run_landscape(
        model_path,
        out,
        through=through or [],
        config=config,
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        device=device,
        force=force,
        progress=not quiet,
    )
    print_summary(summary, out)
