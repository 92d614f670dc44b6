"""``modeconn connect``, ``path-eval``, ``extract`` and ``surface``: argument parsing only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import (
    ATTACK,
    TRAIN,
    Alpha,
    AttackNorm,
    AttackSteps,
    BatchSize,
    DataDir,
    Device,
    Epochs,
    Eps,
    Force,
    Lr,
    Momentum,
    NoAugment,
    OptDataset,
    Optimizer,
    Out,
    Quiet,
    Resume,
    Schedule,
    Seed,
    TestLimit,
    TrainLimit,
    WeightDecay,
    data_config,
    default_of,
    fraction_text,
    pgd_config,
    print_summary,
    train_config,
)
from modeconn.commands import connect as connect_commands
from modeconn.commands import extract as extract_commands
from modeconn.commands import path_eval as path_eval_commands
from modeconn.commands import surface as surface_commands
from modeconn.commands.path_analysis import run_path_analysis
from modeconn.connectivity.evaluate import EVAL_BATCH
from modeconn.connectivity.train import CURVE_DEFAULTS

_REF = CURVE_DEFAULTS
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
CurveEpochs = Epochs
EvalBatch = Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")]


@app.command("connect")
def connect_command(
    model_a: ModelArg,
    model_b: ModelArg,
    out: Out,
    kind: Kind = default_of(_CONNECT, "kind"),
    num_bends: NumBends = default_of(_CONNECT, "num_bends"),
    train_endpoints: TrainEndpoints = not default_of(_CONNECT, "fix_endpoints"),
    init: Init = default_of(_CONNECT, "init"),
    noise: Noise = default_of(_CONNECT, "noise"),
    bonafide: Bonafide = None,
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
    no_augment: NoAugment = False,
    epochs: CurveEpochs = _REF["epochs"],
    batch_size: BatchSize = _REF["batch_size"],
    lr: Lr = _REF["lr"],
    momentum: Momentum = _REF["momentum"],
    wd: WeightDecay = _REF["weight_decay"],
    optimizer: Optimizer = TRAIN.optimizer,
    schedule: Schedule = _REF["schedule"],
    t_per_batch: TPerBatch = default_of(_CONNECT, "t_per_batch"),
    stratified: Stratified = default_of(_CONNECT, "stratified"),
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train a curve from model A to model B; writes curve.safetensors and summary.json to --out."""
    summary = connect_commands.run_connect(
        model_a,
        model_b,
        out,
        data=data_config(
            dataset or "",
            data_dir,
            seed,
            train_limit=train_limit,
            test_limit=test_limit,
            bonafide=bonafide,
            augment=not no_augment,
        ),
        config=train_config(epochs, batch_size, lr, momentum, wd, optimizer, schedule, seed),
        kind=kind,
        num_bends=num_bends,
        fix_endpoints=not train_endpoints,
        init=init,
        noise=noise,
        t_per_batch=t_per_batch,
        stratified=stratified,
        device=device,
        force=force,
        resume=resume,
        progress=not quiet,
    )
    if summary:
        print_summary(summary, out)


@app.command("path-eval")
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
    eps: Eps = fraction_text(ATTACK.eps),
    alpha: Alpha = fraction_text(ATTACK.alpha),
    attack_steps: AttackSteps = ATTACK.steps,
    norm: AttackNorm = ATTACK.norm,
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
        attack=pgd_config(eps, alpha, attack_steps, norm),
        robust_limit=robust_limit,
        hessian_limit=hessian_limit,
        with_attack_metrics=not no_attack_metrics,
        points=points,
        data_dir=str(data_dir) if data_dir else None,
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
        data_dir=str(data_dir) if data_dir else None,
        test_limit=test_limit,
        device=device,
        force=force,
    )
    print_summary(summary, out)


@app.command("surface")
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
    ] = default_of(surface_commands.run_surface, "grid"),
    bonafide: Bonafide = None,
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
    no_augment: NoAugment = False,
    epochs: CurveEpochs = _REF["epochs"],
    batch_size: BatchSize = _REF["batch_size"],
    lr: Lr = _REF["lr"],
    momentum: Momentum = _REF["momentum"],
    wd: WeightDecay = _REF["weight_decay"],
    optimizer: Optimizer = TRAIN.optimizer,
    schedule: Schedule = _REF["schedule"],
    t_per_batch: TPerBatch = default_of(_SURFACE, "t_per_batch"),
    stratified: Stratified = default_of(_SURFACE, "stratified"),
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train a Bezier surface through four models and evaluate it on a grid.

    A, B, C, D sit at (u, v) = (0,0), (1,0), (0,1), (1,1). Writes surface.safetensors, grid.csv,
    surface.png, best.safetensors and summary.json (grid ensemble vs the corners' ensemble).
    """
    summary = surface_commands.run_surface(
        [model_a, model_b, model_c, model_d],
        out,
        data=data_config(
            dataset or "",
            data_dir,
            seed,
            train_limit=train_limit,
            test_limit=test_limit,
            bonafide=bonafide,
            augment=not no_augment,
        ),
        config=train_config(epochs, batch_size, lr, momentum, wd, optimizer, schedule, seed),
        num_bends=(num_bends, num_bends_v or num_bends),
        t_per_batch=t_per_batch,
        stratified=stratified,
        grid=grid,
        device=device,
        force=force,
        resume=resume,
        progress=not quiet,
    )
    if summary:
        print_summary(summary, out)
