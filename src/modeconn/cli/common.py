"""Options shared by several commands, and the conversion of raw CLI values into API configs.

Each option is declared once here as an ``Annotated`` alias so every command spells, documents and
defaults it the same way.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

import typer

from modeconn.attacks.config import AttackConfig
from modeconn.errors import ModeconnError
from modeconn.experiment import DataConfig
from modeconn.training import TrainConfig

# The library's defaults: commands take their option defaults from here (or from the dataclass
# they build) instead of re-typing the numbers, so the CLI and the Python API cannot drift apart.
TRAIN = TrainConfig()
ATTACK = AttackConfig()


def default_of(function: Callable[..., Any], parameter: str) -> Any:
    """The default value of a keyword parameter of an API function (the CLI option's default)."""
    return inspect.signature(function).parameters[parameter].default


def fraction_text(value: float) -> str:
    """A budget written as the CLI takes it: 8/255 for multiples of 1/255, else the decimal.

    >>> fraction_text(8 / 255), fraction_text(0.1)
    ('8/255', '0.1')
    """
    exact = Fraction(value).limit_denominator(255)
    if exact.denominator == 255 and abs(float(exact) - value) < 1e-12:
        return f"{exact.numerator}/255"
    return repr(float(value))


Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite a finished run in --out.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Seed = Annotated[int, typer.Option("--seed", help="One seed for everything.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

Dataset = Annotated[
    str,
    typer.Option(
        "--dataset", "-d", help="fashion-mnist, mnist, cifar10, cifar100, svhn or digits."
    ),
]
OptDataset = Annotated[
    str | None,
    typer.Option("--dataset", "-d", help="Data set (default: the one in the model's sidecar)."),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Directory holding the data set files (default: $MODECONN_DATA or the Debian path).",
    ),
]
TrainLimit = Annotated[
    int | None,
    typer.Option("--train-limit", help="Use a stratified subset of this many training images."),
]
TestLimit = Annotated[
    int | None,
    typer.Option("--test-limit", help="Evaluate on a stratified subset of this many test images."),
]
ValSize = Annotated[
    float,
    typer.Option(
        "--val-size",
        help="Validation images held out of the training split (count, or fraction if < 1).",
    ),
]
NoAugment = Annotated[bool, typer.Option("--no-augment", help="Turn off data augmentation.")]

Model = Annotated[
    str, typer.Option("--model", "-m", help="Architecture name or package.module:factory.")
]
ModelKwargs = Annotated[
    str | None,
    typer.Option("--model-kwargs", help="JSON object of keyword arguments for the architecture."),
]
Epochs = Annotated[int, typer.Option("--epochs", help="Training epochs.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Mini-batch size (per process).")]
Lr = Annotated[float, typer.Option("--lr", help="Base learning rate.")]
Momentum = Annotated[float, typer.Option("--momentum", help="SGD momentum.")]
WeightDecay = Annotated[float, typer.Option("--wd", help="Weight decay.")]
Optimizer = Annotated[str, typer.Option("--optimizer", help="sgd or adamw.")]
Schedule = Annotated[
    str,
    typer.Option("--schedule", help="cosine, step, mc (mode-connectivity reference) or constant."),
]


# Adversarial settings (train --adversarial, path-eval --robust, landscape --adversarial).
Eps = Annotated[
    str, typer.Option("--eps", help="Attack radius in [0, 1] pixel units, e.g. 8/255 or 0.1.")
]
Alpha = Annotated[str, typer.Option("--alpha", help="PGD step size, e.g. 2/255 or 0.025.")]
AttackSteps = Annotated[int, typer.Option("--attack-steps", help="PGD steps.")]
AttackNorm = Annotated[str, typer.Option("--norm", help="Threat model: linf or l2.")]
RobustLimit = Annotated[
    int | None,
    typer.Option(
        "--robust-limit", help="Attack a stratified subset of this many test images (PGD is slow)."
    ),
]


def parse_fraction(text: str | None, option: str) -> float | None:
    """A number written as a decimal or a fraction: '0.031', '8/255' (None stays None)."""
    if text is None:
        return None
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise ModeconnError(
            f"{option} must be a number or a fraction like 8/255, got '{text}'"
        ) from None


def parse_int_list(text: str | None, option: str) -> list[int] | None:
    """Comma-separated integers, e.g. ``--targets 3,17,42`` (None stays None)."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ModeconnError(f"{option} must be comma-separated integers, got {text!r}") from None


def parse_json_kwargs(text: str | None, option: str = "--model-kwargs") -> dict[str, Any]:
    """Parse a JSON object given on the command line."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModeconnError(f"{option} is not valid JSON: {err.msg}") from None
    if not isinstance(value, dict):
        raise ModeconnError(f"{option} must be a JSON object such as '{{\"depth\": 16}}'")
    return value


def count_or_fraction(value: float | None, option: str) -> float | int | None:
    """Values ≥ 1 are counts, values in (0, 1) fractions."""
    if value is None:
        return None
    if value <= 0:
        raise ModeconnError(f"{option} must be positive, got {value}")
    return int(value) if value >= 1 else float(value)


def pgd_config(eps: str, alpha: str, steps: int, norm: str, seed: int = 0) -> AttackConfig:
    """PGD settings from the CLI's --eps, --alpha, --attack-steps and --norm (validated)."""
    return AttackConfig(
        name="pgd",
        eps=parse_fraction(eps, "--eps"),
        alpha=parse_fraction(alpha, "--alpha"),
        steps=steps,
        norm=norm,
        seed=seed,
    ).validate()


def data_config(
    dataset: str | None,
    data_dir: Path | None,
    seed: int,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_size: float = 0,
    bonafide: float | None = None,
    augment: bool = True,
) -> DataConfig:
    """Build the API's data config from CLI values (``dataset`` None or "": the model's own)."""
    return DataConfig(
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        val_size=count_or_fraction(val_size, "--val-size") if val_size else 0,
        bonafide=count_or_fraction(bonafide, "--bonafide"),
        train_limit=train_limit,
        test_limit=test_limit,
        augment=augment,
        seed=seed,
    )


def train_config(
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    wd: float,
    optimizer: str,
    schedule: str,
    seed: int,
) -> TrainConfig:
    """Build and validate the API's training config from CLI values."""
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=wd,
        optimizer=optimizer,
        schedule=schedule,
        seed=seed,
    )
    cfg.validate()
    return cfg


def print_summary(summary: dict[str, Any], out: Path | None = None) -> None:
    """Print a summary as aligned ``key value`` lines (and where it was written)."""
    width = max((len(k) for k in summary), default=0)
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        typer.echo(f"{key:<{width}}  {text}")
    if out is not None:
        typer.echo(f"written to {out}")
