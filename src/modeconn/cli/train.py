"""``modeconn train`` and ``modeconn evaluate``."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from modeconn.attacks.config import AttackConfig
from modeconn.cli import app
from modeconn.cli.common import (
    Checkpoint,
    ClassifierTraining,
    EvaluationData,
    ForeignModelOptions,
    JobOptions,
    OptOut,
    Out,
    PgdOptions,
    RobustLimit,
    RunOptions,
    option_groups,
    print_summary,
)
from modeconn.commands import train as api
from modeconn.defenses.adversarial import AdversarialConfig, RobustEvaluation
from modeconn.errors import ModeconnError

_ADVERSARIAL = AdversarialConfig()


@dataclasses.dataclass(frozen=True)
class AdversarialOptions:
    """``--adversarial`` … ``--awp-warmup``: adversarial training (defaults:
    :class:`AdversarialConfig`'s), off unless ``--adversarial`` names a method."""

    adversarial: Annotated[
        str | None,
        typer.Option("--adversarial", help="Adversarial training: pgd (Madry et al.) or trades."),
    ] = None
    attack: PgdOptions = dataclasses.field(default_factory=PgdOptions)
    trades_beta: Annotated[
        float, typer.Option("--trades-beta", help="TRADES robustness weight β.")
    ] = _ADVERSARIAL.trades_beta
    awp: Annotated[
        bool, typer.Option("--awp", help="Adversarial Weight Perturbation on top (Wu et al.).")
    ] = False
    awp_gamma: Annotated[
        float | None,
        typer.Option("--awp-gamma", help="AWP size γ (default 0.01 for pgd, 0.005 for trades)."),
    ] = None
    awp_warmup: Annotated[
        int, typer.Option("--awp-warmup", help="Epochs of plain adversarial training before AWP.")
    ] = _ADVERSARIAL.awp_warmup

    def config(self, attack: AttackConfig) -> AdversarialConfig | None:
        """The API's adversarial-training config under ``attack`` (validated), None for plain
        training; --awp without --adversarial is an error."""
        if self.adversarial is None:
            if self.awp:
                raise ModeconnError(
                    "--awp perturbs adversarial training: add --adversarial pgd|trades"
                )
            return None
        config = AdversarialConfig(
            method=self.adversarial,
            attack=attack,
            trades_beta=self.trades_beta,
            awp=self.awp,
            awp_gamma=self.awp_gamma,
            awp_warmup=self.awp_warmup,
        )
        config.validate()
        return config


Robust = Annotated[
    bool | None,
    typer.Option(
        "--robust/--no-robust",
        help="PGD robust accuracy and loss on the test split (default: on with --adversarial).",
    ),
]


@app.command("train")
@option_groups
def train_command(
    out: Out,
    training: ClassifierTraining = ClassifierTraining(),
    adversarial: AdversarialOptions = AdversarialOptions(),
    robust: Robust = None,
    robust_limit: RobustLimit = RobustEvaluation().limit,
    run: RunOptions = RunOptions(),
) -> None:
    """Train a classifier; writes model.safetensors, metrics.jsonl and summary.json to --out.

    With --adversarial pgd|trades [--awp] it trains adversarially and the summary gains
    robust_acc and robust_loss under the same PGD attack.
    """
    attack = adversarial.attack.config(run.seed)
    adversarial_config = adversarial.config(attack)
    if robust is None:
        robust = adversarial_config is not None
    summary = api.run_train(
        out,
        **training.keywords(run.seed),
        adversarial=adversarial_config,
        robust=RobustEvaluation(attack=attack, limit=robust_limit) if robust else None,
        **run.keywords(),
    )
    if summary:
        print_summary(summary, out)


@app.command("evaluate")
@option_groups
def evaluate_command(
    model_path: Checkpoint,
    data: EvaluationData = EvaluationData(),
    foreign: ForeignModelOptions = ForeignModelOptions(),
    out: OptOut = None,
    job: JobOptions = JobOptions(),
) -> None:
    """Clean loss and accuracy of a checkpoint on its data set's test split."""
    summary = api.run_evaluate(
        model_path,
        **data.keywords(),
        **foreign.keywords(),
        out=out,
        **job.keywords(),
    )
    print_summary(summary, out)
