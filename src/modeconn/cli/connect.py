"""``modeconn connect``, ``path-eval``, ``extract`` and ``surface``: argument parsing only."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from modeconn.cli import app
from modeconn.cli.common import (
    DataDir,
    Device,
    Force,
    ForeignModelOptions,
    Hyperparameters,
    NoAugment,
    OptDataset,
    Out,
    PgdOptions,
    Quiet,
    RunOptions,
    TestLimit,
    TrainLimit,
    data_config,
    default_of,
    option_groups,
    path_text,
    print_summary,
)
from modeconn.commands import connect as connect_commands
from modeconn.commands import extract as extract_commands
from modeconn.commands import path_eval as path_eval_commands
from modeconn.commands import surface as surface_commands
from modeconn.commands.path_analysis import run_path_analysis
from modeconn.connectivity.evaluate import EVAL_BATCH
from modeconn.connectivity.train import curve_train_config

_CONNECT = connect_commands.run_connect
_SURFACE = surface_commands.run_surface

ModelArg = Annotated[
    Path, typer.Argument(help="Model checkpoint (.safetensors, its .json, or a run directory).")
]
FamilyArg = Annotated[
    Path,
    typer.Argument(help="Curve or surface (curve.safetensors, its .json, or a run directory)."),
]
Kind = Annotated[str, typer.Option("--kind", help="bezier or polychain.")]
NumBends = Annotated[
    int, typer.Option("--num-bends", help="Control points per direction, endpoints included.")
]
TrainEndpoints = Annotated[
    bool, typer.Option("--train-endpoints", help="Train the endpoints too (fixed by default).")
]
Init = Annotated[
    str,
    typer.Option(
        "--init",
        help="Interior points: linear, noise, or a checkpoint (a model, or a curve to continue).",
    ),
]
Noise = Annotated[float, typer.Option("--noise", help="Relative noise for --init noise.")]
Bonafide = Annotated[
    float | None,
    typer.Option(
        "--bonafide",
        help="Train on a bonafide subset of the training split (count, or fraction if < 1).",
    ),
]
TPerBatch = Annotated[
    int, typer.Option("--t-per-batch", help="Points per mini-batch (the batch is split).")
]
Stratified = Annotated[
    bool, typer.Option("--stratified", help="Stratify the points over each epoch.")
]
EvalBatch = Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")]

_CURVE_HYPERPARAMETERS = Hyperparameters.of(curve_train_config())


@dataclasses.dataclass(frozen=True)
class CurveTraining:
    """``--bonafide`` … ``--schedule``: what ``connect`` and ``surface`` train on, and how
    (defaults: the reference curve settings)."""

    bonafide: Bonafide = None
    dataset: OptDataset = None
    data_dir: DataDir = None
    train_limit: TrainLimit = None
    test_limit: TestLimit = None
    no_augment: NoAugment = False
    hyperparameters: Hyperparameters = _CURVE_HYPERPARAMETERS

    def keywords(self, seed: int) -> dict[str, Any]:
        """The API's ``data`` (the models' own data set unless --dataset) and ``config``."""
        return {
            "data": data_config(
                self.dataset or "",
                self.data_dir,
                seed,
                train_limit=self.train_limit,
                test_limit=self.test_limit,
                bonafide=self.bonafide,
                augment=not self.no_augment,
            ),
            "config": self.hyperparameters.config(seed),
        }


@app.command("connect")
@option_groups
def connect_command(
    model_a: ModelArg,
    model_b: ModelArg,
    out: Out,
    kind: Kind = default_of(_CONNECT, "kind"),
    num_bends: NumBends = default_of(_CONNECT, "num_bends"),
    train_endpoints: TrainEndpoints = not default_of(_CONNECT, "fix_endpoints"),
    init: Init = default_of(_CONNECT, "init"),
    noise: Noise = default_of(_CONNECT, "noise"),
    training: CurveTraining = CurveTraining(),
    t_per_batch: TPerBatch = default_of(_CONNECT, "t_per_batch"),
    stratified: Stratified = default_of(_CONNECT, "stratified"),
    foreign: ForeignModelOptions = ForeignModelOptions(),
    run: RunOptions = RunOptions(),
) -> None:
    """Train a curve from model A to model B; writes curve.safetensors and summary.json to --out."""
    summary = connect_commands.run_connect(
        model_a,
        model_b,
        out,
        **training.keywords(run.seed),
        kind=kind,
        num_bends=num_bends,
        fix_endpoints=not train_endpoints,
        init=init,
        noise=noise,
        t_per_batch=t_per_batch,
        stratified=stratified,
        **run.keywords(),
        **foreign.keywords(),
    )
    if summary:
        print_summary(summary, out)


@app.command("path-eval")
@option_groups
def path_eval_command(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="A curve (curve.safetensors, its .json, or a run directory), or two "
            "models for the straight segment between them."
        ),
    ],
    out: Out,
    points: Annotated[int, typer.Option("--points", help="Values of t from 0 to 1.")] = default_of(
        path_eval_commands.run_path_eval, "points"
    ),
    no_segment: Annotated[
        bool, typer.Option("--no-segment", help="Skip the straight segment for comparison.")
    ] = False,
    robust: Annotated[
        bool,
        typer.Option(
            "--robust",
            help="Add robust loss/accuracy under PGD at every t and the "
            "input-Hessian λ_max (the robust-loss barrier).",
        ),
    ] = False,
    attack: PgdOptions = PgdOptions(),
    robust_limit: Annotated[
        int | None, typer.Option("--robust-limit", help="Test images attacked at each t.")
    ] = default_of(run_path_analysis, "robust_limit"),
    hessian_limit: Annotated[
        int | None, typer.Option("--hessian-limit", help="Test images for λ_max at each t.")
    ] = default_of(run_path_analysis, "hessian_limit"),
    no_attack_metrics: Annotated[
        bool,
        typer.Option(
            "--no-attack-metrics",
            help="Do not measure the endpoints' attacks (ASR, injection success) along the path.",
        ),
    ] = False,
    data_dir: DataDir = None,
    test_limit: TestLimit = None,
    train_eval_limit: Annotated[
        int | None,
        typer.Option(
            "--train-eval-limit",
            help="Train columns and BatchNorm from a stratified subset of this many images.",
        ),
    ] = None,
    batch_size: EvalBatch = EVAL_BATCH,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate a curve along t (BatchNorm recomputed at each point); writes path.csv, path.png."""
    summary = run_path_analysis(
        list(sources),
        out,
        robust=robust,
        attack=attack.config(),
        robust_limit=robust_limit,
        hessian_limit=hessian_limit,
        with_attack_metrics=not no_attack_metrics,
        points=points,
        data_dir=path_text(data_dir),
        test_limit=test_limit,
        train_eval_limit=train_eval_limit,
        with_segment=not no_segment,
        batch_size=batch_size,
        device=device,
        force=force,
        progress=not quiet,
    )
    print_summary(summary, out)


@app.command("extract")
def extract_command(
    source: FamilyArg,
    out: Out,
    t: Annotated[float | None, typer.Option("--t", help="Point on a curve, in [0, 1].")] = None,
    u: Annotated[float | None, typer.Option("--u", help="First surface coordinate.")] = None,
    v: Annotated[float | None, typer.Option("--v", help="Second surface coordinate.")] = None,
    data_dir: DataDir = None,
    test_limit: TestLimit = None,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Write the model at a point of a curve or surface as an ordinary checkpoint."""
    summary = extract_commands.run_extract(
        source,
        out,
        t=t,
        u=u,
        v=v,
        data_dir=path_text(data_dir),
        test_limit=test_limit,
        device=device,
        force=force,
    )
    print_summary(summary, out)


@app.command("surface")
@option_groups
def surface_command(
    model_a: ModelArg,
    model_b: ModelArg,
    model_c: ModelArg,
    model_d: ModelArg,
    out: Out,
    num_bends: NumBends = default_of(_SURFACE, "num_bends")[0],
    num_bends_v: Annotated[
        int | None, typer.Option("--num-bends-v", help="Control points along v (default: same).")
    ] = None,
    grid: Annotated[
        int, typer.Option("--grid", help="Evaluation grid points per side.")
    ] = default_of(_SURFACE, "grid"),
    training: CurveTraining = CurveTraining(),
    t_per_batch: TPerBatch = default_of(_SURFACE, "t_per_batch"),
    stratified: Stratified = default_of(_SURFACE, "stratified"),
    foreign: ForeignModelOptions = ForeignModelOptions(),
    run: RunOptions = RunOptions(),
) -> None:
    """Train a Bezier surface through four models and evaluate it on a grid.

    A, B, C, D sit at (u, v) = (0,0), (1,0), (0,1), (1,1). Writes surface.safetensors, grid.csv,
    surface.png, best.safetensors and summary.json (grid ensemble vs the corners' ensemble).
    """
    summary = surface_commands.run_surface(
        [model_a, model_b, model_c, model_d],
        out,
        **training.keywords(run.seed),
        num_bends=(num_bends, num_bends_v or num_bends),
        t_per_batch=t_per_batch,
        stratified=stratified,
        grid=grid,
        **run.keywords(),
        **foreign.keywords(),
    )
    if summary:
        print_summary(summary, out)
