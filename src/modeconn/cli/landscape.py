"""``modeconn hessian`` and ``modeconn landscape``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import (
    Checkpoint,
    DataDir,
    Device,
    Force,
    ForeignModelOptions,
    JobOptions,
    OptDataset,
    OptOut,
    Out,
    PgdOptions,
    Quiet,
    Seed,
    default_of,
    option_groups,
    path_text,
    print_summary,
)
from modeconn.commands.landscape import LandscapeConfig, run_hessian, run_landscape

_LANDSCAPE = LandscapeConfig()

Split = Annotated[str, typer.Option("--split", help="train, test, val, bonafide, …")]
Method = Annotated[str, typer.Option("--method", help="Eigen-solver: power or lanczos.")]
Iters = Annotated[int, typer.Option("--iters", help="Cap on Hessian-vector products.")]
Tol = Annotated[float, typer.Option("--tol", help="Stop at this relative residual ‖Hv − λv‖/|λ|.")]
Limit = Annotated[
    int | None, typer.Option("--limit", help="Use a stratified subset of this many images.")
]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per batched computation.")]
Through = Annotated[
    list[Path] | None,
    typer.Option("--through", help="Another model: once for the line to it, twice for the plane."),
]
Spectrum = Annotated[
    bool, typer.Option("--spectrum/--no-spectrum", help="Weight-Hessian top-k and trace.")
]
TopK = Annotated[int, typer.Option("--top-k", help="Number of top eigenvalues.")]
TraceSamples = Annotated[int, typer.Option("--trace-samples", help="Cap on Hutchinson probes.")]
Density = Annotated[bool, typer.Option("--density/--no-density", help="Spectral density (SLQ).")]
DensitySteps = Annotated[int, typer.Option("--density-steps", help="Lanczos steps per SLQ probe.")]
DensityProbes = Annotated[int, typer.Option("--density-probes", help="SLQ probes.")]
Scan1d = Annotated[bool, typer.Option("--scan-1d/--no-scan-1d", help="1D random-direction scan.")]
Scan2d = Annotated[bool, typer.Option("--scan-2d/--no-scan-2d", help="2D random-direction scan.")]
Span = Annotated[float, typer.Option("--span", help="Scan half-width in filter-normalised units.")]
Points = Annotated[int, typer.Option("--points", help="Points of 1D scans and lines.")]
Grid = Annotated[int, typer.Option("--grid", help="Points per axis of 2D scans.")]
Adversarial = Annotated[
    bool,
    typer.Option("--adversarial", help="Also the robust loss, PGD regenerated at each point."),
]
RobustLimit = Annotated[
    int | None, typer.Option("--robust-limit", help="Images attacked at each point.")
]


@app.command("hessian")
@option_groups
def hessian_command(
    model_path: Checkpoint,
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    foreign: ForeignModelOptions = ForeignModelOptions(),
    split: Split = default_of(run_hessian, "split"),
    limit: Limit = default_of(run_hessian, "limit"),
    batch_size: BatchSize = default_of(run_hessian, "batch_size"),
    method: Method = default_of(run_hessian, "method"),
    iters: Iters = default_of(run_hessian, "iters"),
    tol: Tol = default_of(run_hessian, "tol"),
    out: OptOut = None,
    job: JobOptions = JobOptions(),
) -> None:
    """Largest input-Hessian eigenvalue of every image (batched); mean and max over the set."""
    summary = run_hessian(
        model_path,
        dataset=dataset,
        data_dir=path_text(data_dir),
        split=split,
        limit=limit,
        batch_size=batch_size,
        method=method,
        iters=iters,
        tol=tol,
        out=out,
        **job.keywords(),
        **foreign.keywords(),
    )
    print_summary(summary, out)


@dataclasses.dataclass(frozen=True)
class LandscapeOptions:
    """``--split`` … ``--robust-limit``: what ``landscape`` measures, on how much data (defaults:
    :class:`LandscapeConfig`'s). Each option but ``--adversarial`` and the PGD attack sets the
    config field of its own name."""

    split: Split = _LANDSCAPE.split
    limit: Limit = _LANDSCAPE.limit
    batch_size: BatchSize = _LANDSCAPE.batch_size
    spectrum: Spectrum = _LANDSCAPE.spectrum
    top_k: TopK = _LANDSCAPE.top_k
    method: Method = _LANDSCAPE.method
    iters: Iters = _LANDSCAPE.iters
    tol: Tol = _LANDSCAPE.tol
    trace_samples: TraceSamples = _LANDSCAPE.trace_samples
    density: Density = _LANDSCAPE.density
    density_steps: DensitySteps = _LANDSCAPE.density_steps
    density_probes: DensityProbes = _LANDSCAPE.density_probes
    scan_1d: Scan1d = _LANDSCAPE.scan_1d
    scan_2d: Scan2d = _LANDSCAPE.scan_2d
    span: Span = _LANDSCAPE.span
    points: Points = _LANDSCAPE.points
    grid: Grid = _LANDSCAPE.grid
    adversarial: Adversarial = False
    attack: PgdOptions = dataclasses.field(default_factory=PgdOptions)
    robust_limit: RobustLimit = _LANDSCAPE.robust_limit

    def config(self, seed: int) -> LandscapeConfig:
        """The API's landscape config (the density needs the spectrum: off without it)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del fields["adversarial"], fields["attack"]
        return LandscapeConfig(
            **{**fields, "density": self.density and self.spectrum},
            adversarial=self.attack.config(seed) if self.adversarial else None,
            seed=seed,
        )


@app.command("landscape")
@option_groups
def landscape_command(
    model_path: Checkpoint,
    out: Out,
    through: Through = None,
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    foreign: ForeignModelOptions = ForeignModelOptions(),
    measure: LandscapeOptions = LandscapeOptions(),
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Weight-space geometry: Hessian spectrum, random-direction and through-model scans, plots."""
    summary = run_landscape(
        model_path,
        out,
        through=through or [],
        config=measure.config(seed),
        dataset=dataset,
        data_dir=path_text(data_dir),
        device=device,
        force=force,
        progress=not quiet,
        **foreign.keywords(),
    )
    print_summary(summary, out)
