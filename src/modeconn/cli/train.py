"""``modeconn train`` and ``modeconn evaluate``."""

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
    Dataset,
    Device,
    Epochs,
    Eps,
    Force,
    Lr,
    Model,
    ModelKwargs,
    Momentum,
    NoAugment,
    OptDataset,
    Optimizer,
    Out,
    Quiet,
    Resume,
    RobustLimit,
    Schedule,
    Seed,
    TestLimit,
    TrainLimit,
    ValSize,
    WeightDecay,
    data_config,
    fraction_text,
    parse_json_kwargs,
    pgd_config,
    print_summary,
    train_config,
)
from modeconn.commands import train as api
from modeconn.defenses.adversarial import AdversarialConfig, RobustEvaluation
from modeconn.errors import ModeconnError

_ADVERSARIAL = AdversarialConfig()


@app.command("train")
def train_command(
    out: Out,
    model: Model = "lenet",
    model_kwargs: ModelKwargs = None,
    dataset: Dataset = "fashion-mnist",
    data_dir: DataDir = None,
    epochs: Epochs = TRAIN.epochs,
    batch_size: BatchSize = TRAIN.batch_size,
    lr: Lr = TRAIN.lr,
    momentum: Momentum = TRAIN.momentum,
    wd: WeightDecay = TRAIN.weight_decay,
    optimizer: Optimizer = TRAIN.optimizer,
    schedule: Schedule = TRAIN.schedule,
    val_size: ValSize = 0,
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
    no_augment: NoAugment = False,
    adversarial: Annotated[
        str | None,
        typer.Option("--adversarial", help="Adversarial training: pgd (Madry et al.) or trades."),
    ] = None,
    eps: Eps = fraction_text(ATTACK.eps),
    alpha: Alpha = fraction_text(ATTACK.alpha),
    attack_steps: AttackSteps = ATTACK.steps,
    norm: AttackNorm = ATTACK.norm,
    trades_beta: Annotated[
        float, typer.Option("--trades-beta", help="TRADES robustness weight β.")
    ] = _ADVERSARIAL.trades_beta,
    awp: Annotated[
        bool, typer.Option("--awp", help="Adversarial Weight Perturbation on top (Wu et al.).")
    ] = False,
    awp_gamma: Annotated[
        float | None,
        typer.Option("--awp-gamma", help="AWP size γ (default 0.01 for pgd, 0.005 for trades)."),
    ] = None,
    awp_warmup: Annotated[
        int, typer.Option("--awp-warmup", help="Epochs of plain adversarial training before AWP.")
    ] = _ADVERSARIAL.awp_warmup,
    robust: Annotated[
        bool | None,
        typer.Option(
            "--robust/--no-robust",
            help="PGD robust accuracy and loss on the test split (default: on with --adversarial).",
        ),
    ] = None,
    robust_limit: RobustLimit = RobustEvaluation().limit,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train a classifier; writes model.safetensors, metrics.jsonl and summary.json to --out.

    With --adversarial pgd|trades [--awp] it trains adversarially and the summary gains
    robust_acc and robust_loss under the same PGD attack.
    """
    attack = pgd_config(eps, alpha, attack_steps, norm, seed)
    adversarial_cfg = None
    if adversarial is not None:
        adversarial_cfg = AdversarialConfig(
            method=adversarial,
            attack=attack,
            trades_beta=trades_beta,
            awp=awp,
            awp_gamma=awp_gamma,
            awp_warmup=awp_warmup,
        )
        adversarial_cfg.validate()
    elif awp:
        raise ModeconnError("--awp perturbs adversarial training: add --adversarial pgd|trades")
    if robust is None:
        robust = adversarial is not None
    summary = api.run_train(
        out,
        model=model,
        model_kwargs=parse_json_kwargs(model_kwargs),
        data=data_config(
            dataset,
            data_dir,
            seed,
            train_limit=train_limit,
            test_limit=test_limit,
            val_size=val_size,
            augment=not no_augment,
        ),
        config=train_config(epochs, batch_size, lr, momentum, wd, optimizer, schedule, seed),
        adversarial=adversarial_cfg,
        robust=RobustEvaluation(attack=attack, limit=robust_limit) if robust else None,
        device=device,
        force=force,
        resume=resume,
        progress=not quiet,
    )
    if summary:
        print_summary(summary, out)


@app.command("evaluate")
def evaluate_command(
    model_path: Annotated[
        Path, typer.Argument(help="Checkpoint (.safetensors, its .json, or a run directory).")
    ],
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    test_limit: TestLimit = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to write.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Clean loss and accuracy of a checkpoint on its data set's test split."""
    summary = api.run_evaluate(
        model_path,
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        test_limit=test_limit,
        seed=seed,
        out=out,
        device=device,
        force=force,
    )
    print_summary(summary, out)
