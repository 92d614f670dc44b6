"""``modeconn hessian`` and ``modeconn landscape``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import (
    ATTACK,
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
    default_of,
    fraction_text,
    pgd_config,
    print_summary,
)
from modeconn.commands.landscape import LandscapeConfig, run_hessian, run_landscape

_LANDSCAPE = LandscapeConfig()

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
    split: Split = default_of(run_hessian, "split"),
    limit: Limit = default_of(run_hessian, "limit"),
    batch_size: BatchSize = default_of(run_hessian, "batch_size"),
    method: Method = default_of(run_hessian, "method"),
    iters: Iters = default_of(run_hessian, "iters"),
    tol: Tol = default_of(run_hessian, "tol"),
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
    split: Split = _LANDSCAPE.split,
    limit: Limit = _LANDSCAPE.limit,
    batch_size: BatchSize = _LANDSCAPE.batch_size,
    spectrum: Annotated[
        bool, typer.Option("--spectrum/--no-spectrum", help="Weight-Hessian top-k and trace.")
    ] = _LANDSCAPE.spectrum,
    top_k: Annotated[
        int, typer.Option("--top-k", help="Number of top eigenvalues.")
    ] = _LANDSCAPE.top_k,
    method: Method = _LANDSCAPE.method,
    iters: Iters = _LANDSCAPE.iters,
    tol: Tol = _LANDSCAPE.tol,
    trace_samples: Annotated[
        int, typer.Option("--trace-samples", help="Cap on Hutchinson probes.")
    ] = _LANDSCAPE.trace_samples,
    density: Annotated[
        bool, typer.Option("--density/--no-density", help="Spectral density (SLQ).")
    ] = _LANDSCAPE.density,
    density_steps: Annotated[
        int, typer.Option("--density-steps", help="Lanczos steps per SLQ probe.")
    ] = _LANDSCAPE.density_steps,
    density_probes: Annotated[
        int, typer.Option("--density-probes", help="SLQ probes.")
    ] = _LANDSCAPE.density_probes,
    scan_1d: Annotated[
        bool, typer.Option("--scan-1d/--no-scan-1d", help="1D random-direction scan.")
    ] = _LANDSCAPE.scan_1d,
    scan_2d: Annotated[
        bool, typer.Option("--scan-2d/--no-scan-2d", help="2D random-direction scan.")
    ] = _LANDSCAPE.scan_2d,
    span: Annotated[
        float, typer.Option("--span", help="Scan half-width in filter-normalised units.")
    ] = _LANDSCAPE.span,
    points: Annotated[
        int, typer.Option("--points", help="Points of 1D scans and lines.")
    ] = _LANDSCAPE.points,
    grid: Annotated[
        int, typer.Option("--grid", help="Points per axis of 2D scans.")
    ] = _LANDSCAPE.grid,
    adversarial: Annotated[
        bool,
        typer.Option("--adversarial", help="Also the robust loss, PGD regenerated at each point."),
    ] = False,
    eps: Eps = fraction_text(ATTACK.eps),
    alpha: Alpha = fraction_text(ATTACK.alpha),
    attack_steps: AttackSteps = ATTACK.steps,
    norm: AttackNorm = ATTACK.norm,
    robust_limit: Annotated[
        int | None, typer.Option("--robust-limit", help="Images attacked at each point.")
    ] = _LANDSCAPE.robust_limit,
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
