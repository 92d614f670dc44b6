"""Options shared by several commands, and the conversion of raw CLI values into API configs.

Each option is declared once here as an ``Annotated`` alias so every command spells, documents and
defaults it the same way. Options that travel together (the optimiser settings, the PGD attack, how
a run is started) are declared once more as an *option group*: a dataclass whose fields are the
options, which a command takes as one parameter through :func:`option_groups`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from modeconn.attacks.config import AttackConfig
from modeconn.data.prepare import DataConfig
from modeconn.errors import ModeconnError
from modeconn.models.foreign import ForeignArchitecture
from modeconn.training import TrainConfig

Result = TypeVar("Result")

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


# The library's PGD budget and step as the CLI writes them (8/255, 2/255).
EPS_TEXT = fraction_text(ATTACK.eps)
ALPHA_TEXT = fraction_text(ATTACK.alpha)


def _is_group(annotation: Any) -> bool:
    """Whether a parameter's annotation is an option group (a dataclass type)."""
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _group_parameters(group: type, defaults: Any) -> list[inspect.Parameter]:
    """A group's options as command parameters, in field order, nested groups expanded in place;
    each option defaults to its value in ``defaults`` (an instance of ``group``)."""
    hints = typing.get_type_hints(group, include_extras=True)
    parameters: list[inspect.Parameter] = []
    for field in dataclasses.fields(group):
        default = getattr(defaults, field.name)
        if _is_group(hints[field.name]):
            parameters += _group_parameters(hints[field.name], default)
        else:
            parameters.append(
                inspect.Parameter(
                    field.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=hints[field.name],
                    default=default,
                )
            )
    return parameters


def _build_group(group: type, options: dict[str, Any]) -> Any:
    """Take a group's parsed options out of ``options`` and return them as one ``group``."""
    hints = typing.get_type_hints(group, include_extras=True)
    values = {
        field.name: _build_group(hints[field.name], options)
        if _is_group(hints[field.name])
        else options.pop(field.name)
        for field in dataclasses.fields(group)
    }
    return group(**values)


def option_groups(command: Callable[..., Result]) -> Callable[..., Result]:
    """Let ``command`` take option groups (put it between ``@app.command`` and the function).

    Every parameter annotated with a dataclass type stands, at its place, for that dataclass's
    fields: each field is an option of its own (named, typed, documented by its ``Annotated``
    alias) and defaults to the field's value in the parameter's default (or in the dataclass's
    own defaults). The command receives the parsed options as one instance, so several commands
    declare a set of options once and build their configs from it in one place.
    """
    signature = inspect.signature(command, eval_str=True)
    groups = {n: p.annotation for n, p in signature.parameters.items() if _is_group(p.annotation)}
    parameters: list[inspect.Parameter] = []
    for name, parameter in signature.parameters.items():
        if name not in groups:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        empty = parameter.default is inspect.Parameter.empty
        parameters += _group_parameters(
            groups[name], groups[name]() if empty else parameter.default
        )

    @functools.wraps(command)
    def parsed(**options: Any) -> Result:
        for name, group in groups.items():
            options[name] = _build_group(group, options)
        return command(**options)

    parsed.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    parsed.__annotations__ = {p.name: p.annotation for p in parameters}
    return parsed


Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")]
OptOut = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to write.")]
Checkpoint = Annotated[
    Path, typer.Argument(help="Checkpoint (.safetensors, its .json, or a run directory).")
]
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
ImageSize = Annotated[
    int | None,
    typer.Option("--image-size", help="Folder data: resize images to N×N (default: most common)."),
]
Channels = Annotated[
    int | None,
    typer.Option("--channels", help="Folder data: 1 (grayscale) or 3 (RGB) (default: majority)."),
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
    image_size: int | None = None,
    channels: int | None = None,
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
        image_size=image_size,
        channels=channels,
    )


def path_text(path: Path | None) -> str | None:
    """A directory option as the API takes it: its text, or None when not given."""
    return str(path) if path else None


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """``--epochs`` … ``--schedule``: the optimiser settings of every training command.

    The defaults are the library's :class:`TrainConfig`; a command training something else passes
    its own as the group's default (:meth:`of`).
    """

    epochs: Epochs = TRAIN.epochs
    batch_size: BatchSize = TRAIN.batch_size
    lr: Lr = TRAIN.lr
    momentum: Momentum = TRAIN.momentum
    wd: WeightDecay = TRAIN.weight_decay
    optimizer: Optimizer = TRAIN.optimizer
    schedule: Schedule = TRAIN.schedule

    #: Option name → the :class:`TrainConfig` field it sets, where the two differ.
    CONFIG_NAMES: typing.ClassVar[dict[str, str]] = {"wd": "weight_decay"}

    @classmethod
    def of(cls, config: TrainConfig) -> Hyperparameters:
        """The options whose values are ``config``'s settings (to use as a command's defaults)."""
        names = {f.name: cls.CONFIG_NAMES.get(f.name, f.name) for f in dataclasses.fields(cls)}
        return cls(**{option: getattr(config, name) for option, name in names.items()})

    def config(self, seed: int) -> TrainConfig:
        """The API's training config (validated)."""
        values = {self.CONFIG_NAMES.get(k, k): v for k, v in dataclasses.asdict(self).items()}
        config = TrainConfig(**values, seed=seed)
        config.validate()
        return config


@dataclasses.dataclass(frozen=True)
class ClassifierTraining:
    """``--model`` … ``--no-augment``: the network ``train`` and ``poison`` train, on what data."""

    model: Model = "lenet"
    model_kwargs: ModelKwargs = None
    dataset: Dataset = "fashion-mnist"
    data_dir: DataDir = None
    image_size: ImageSize = None
    channels: Channels = None
    hyperparameters: Hyperparameters = Hyperparameters()
    val_size: ValSize = 0
    train_limit: TrainLimit = None
    test_limit: TestLimit = None
    no_augment: NoAugment = False

    def keywords(self, seed: int) -> dict[str, Any]:
        """The ``model``, ``model_kwargs``, ``data`` and ``config`` arguments of the API."""
        return {
            "model": self.model,
            "model_kwargs": parse_json_kwargs(self.model_kwargs),
            "data": data_config(
                self.dataset,
                self.data_dir,
                seed,
                train_limit=self.train_limit,
                test_limit=self.test_limit,
                val_size=self.val_size,
                augment=not self.no_augment,
                image_size=self.image_size,
                channels=self.channels,
            ),
            "config": self.hyperparameters.config(seed),
        }


@dataclasses.dataclass(frozen=True)
class EvaluationData:
    """``--dataset``, ``--data-dir``, ``--test-limit``: the test data a saved model is measured on
    (by default the data set named in its sidecar)."""

    dataset: OptDataset = None
    data_dir: DataDir = None
    test_limit: TestLimit = None

    def keywords(self) -> dict[str, Any]:
        """The API's ``dataset``, ``data_dir`` and ``test_limit`` arguments."""
        return {
            "dataset": self.dataset,
            "data_dir": path_text(self.data_dir),
            "test_limit": self.test_limit,
        }


@dataclasses.dataclass(frozen=True)
class PgdOptions:
    """``--eps``, ``--alpha``, ``--attack-steps``, ``--norm``: the PGD attack of the commands that
    measure or train robustness (defaults: the library's :class:`AttackConfig`)."""

    eps: Eps = EPS_TEXT
    alpha: Alpha = ALPHA_TEXT
    attack_steps: AttackSteps = ATTACK.steps
    norm: AttackNorm = ATTACK.norm

    def config(self, seed: int = 0) -> AttackConfig:
        """The API's attack config (validated)."""
        return AttackConfig(
            name="pgd",
            eps=parse_fraction(self.eps, "--eps"),
            alpha=parse_fraction(self.alpha, "--alpha"),
            steps=self.attack_steps,
            norm=self.norm,
            seed=seed,
        ).validate()


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """``--seed``, ``--device``, ``--force``: how a one-shot command on a saved model runs."""

    seed: Seed = 0
    device: Device = "auto"
    force: Force = False

    def keywords(self) -> dict[str, Any]:
        """The API's ``seed``, ``device`` and ``force`` arguments."""
        return {"seed": self.seed, "device": self.device, "force": self.force}


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """``--seed``, ``--device``, ``--force``, ``--resume``, ``--quiet``: how a training run goes."""

    seed: Seed = 0
    device: Device = "auto"
    force: Force = False
    resume: Resume = False
    quiet: Quiet = False

    def keywords(self) -> dict[str, Any]:
        """The API's ``device``, ``force``, ``resume`` and ``progress`` arguments (the seed goes
        into the configs the command builds)."""
        return {
            "device": self.device,
            "force": self.force,
            "resume": self.resume,
            "progress": not self.quiet,
        }


Arch = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="Architecture of weights without a modeconn sidecar (a .safetensors/.pt/.pth/.bin "
        "state dict): a zoo name or package.module:factory; input shape and classes come from "
        "the data set.",
    ),
]
ArchKwargs = Annotated[
    str | None,
    typer.Option("--arch-kwargs", help="JSON object of keyword arguments for --arch."),
]
InputMean = Annotated[
    str | None,
    typer.Option(
        "--mean",
        help="Input normalisation of the --arch weights: per-channel means, comma-separated "
        "(default: none, the model takes images in [0, 1]).",
    ),
]
InputStd = Annotated[
    str | None,
    typer.Option("--std", help="Per-channel standard deviations to go with --mean."),
]
InputSize = Annotated[
    int | None,
    typer.Option("--image-size", help="Input size N×N the --arch weights take (default: data's)."),
]
InputChannels = Annotated[
    int | None,
    typer.Option("--channels", help="Input channels the --arch weights take: 1 or 3."),
]


def parse_float_list(text: str, option: str) -> tuple[float, ...]:
    """Comma-separated numbers, e.g. ``--mean 0.49,0.48,0.45``."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ModeconnError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ModeconnError(f"{option} needs at least one number")
    return values


@dataclasses.dataclass(frozen=True)
class ForeignModelOptions:
    """``--arch``, ``--arch-kwargs``, ``--mean``, ``--std``, ``--image-size``, ``--channels``: what
    weights without a modeconn sidecar are (a model trained by the user's own code), for every
    command that reads a model."""

    arch: Arch = None
    arch_kwargs: ArchKwargs = None
    mean: InputMean = None
    std: InputStd = None
    image_size: InputSize = None
    channels: InputChannels = None

    def architecture(self) -> ForeignArchitecture | None:
        """The API's ``foreign`` argument (None without ``--arch``), checked: the factory is
        imported and takes the options."""
        if self.arch is None:
            given = [flag for flag, value in self._described() if value is not None]
            if given:
                raise ModeconnError(f"{', '.join(given)} describe(s) --arch weights: add --arch")
            return None
        if (self.mean is None) != (self.std is None):
            raise ModeconnError("--mean and --std go together: give both or neither")
        normalisation = {}
        if self.mean is not None and self.std is not None:
            normalisation = {
                "mean": parse_float_list(self.mean, "--mean"),
                "std": parse_float_list(self.std, "--std"),
            }
        kwargs = parse_json_kwargs(self.arch_kwargs, "--arch-kwargs")
        return ForeignArchitecture(
            self.arch,
            kwargs,
            **normalisation,
            image_size=self.image_size,
            channels=self.channels,
        )

    def _described(self) -> list[tuple[str, object]]:
        """The options that only mean something with ``--arch``, by flag."""
        return [
            ("--arch-kwargs", self.arch_kwargs),
            ("--mean", self.mean),
            ("--std", self.std),
            ("--image-size", self.image_size),
            ("--channels", self.channels),
        ]

    def keywords(self) -> dict[str, Any]:
        """The API's ``foreign`` argument."""
        return {"foreign": self.architecture()}


def print_summary(summary: dict[str, Any], out: Path | None = None) -> None:
    """Print a summary as aligned ``key value`` lines (and where it was written)."""
    width = max((len(k) for k in summary), default=0)
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        typer.echo(f"{key:<{width}}  {text}")
    if out is not None:
        typer.echo(f"written to {out}")
