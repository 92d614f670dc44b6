"""``modeconn reproduce robust-barrier``: Zhao et al. (ICLR 2020, §5, Fig. 4).

On a curve trained with the standard loss between a regular and an adversarially trained model
there is no barrier in the standard loss but one in the robust loss, and the robust loss
correlates with the input-Hessian λ_max. Per seed: a regular model, a PGD-trained one, a Bezier
curve between them (standard loss, bonafide = the training subset), ``path-eval --robust`` along
it. The claim holds for a seed when the robust loss peaks inside the path by at least 10% of the
endpoints' mean robust loss, the standard test loss stays within 10% of the worse endpoint's,
and PCC(robust loss, λ_max) ≥ 0.9; it holds when it holds for every seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeconn.attacks.config import AttackConfig
from modeconn.commands.connect import run_connect
from modeconn.commands.path_analysis import run_path_analysis
from modeconn.commands.reproduce.aggregate import (
    claim_head,
    mean,
    numeric_row,
    per_seed_figures,
    seeds_holding,
    write_tables,
)
from modeconn.commands.reproduce.claim import Claim, StepOptions
from modeconn.commands.steps import check_experiment, resume_flags, run_step
from modeconn.commands.train import run_train
from modeconn.data.prepare import DataConfig
from modeconn.defenses.adversarial import AdversarialConfig, RobustEvaluation
from modeconn.errors import InvalidArgument
from modeconn.io import read_table
from modeconn.landscape.metrics import robust_barrier_figures
from modeconn.report.landscape_plots import attack_success_rate, plot_robust_barrier
from modeconn.rundir import RunDir
from modeconn.training import TrainConfig

#: The thresholds of the claim (see the module doc).
ROBUST_EXCESS_MIN = 0.10
STANDARD_EXCESS_MAX = 0.10
PCC_MIN = 0.9

StepRun = Callable[[Path, bool], dict[str, Any]]


@dataclass
class RobustBarrierSettings:
    """What the robust-barrier experiment trains and measures.

    The defaults are the full Fashion-MNIST setting (``lenet``; a 10,000-image stratified
    training subset, because every adversarial epoch costs ``attack.steps + 1`` passes);
    :meth:`quick` is the digits setting the tests run. ``attack`` is used both to train the
    robust endpoint (PGD-AT, Madry et al.) and to measure the robust loss along the path.
    """

    dataset: str = "fashion-mnist"
    model: str = "lenet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train_limit: int | None = 10000
    test_limit: int | None = 1000
    epochs: int = 8
    adversarial_epochs: int = 6
    attack: AttackConfig = field(
        default_factory=lambda: AttackConfig(name="pgd", eps=0.1, alpha=0.025, steps=7)
    )
    curve_epochs: int = 12
    curve_lr: float = 0.05
    num_bends: int = 3
    points: int = 11
    robust_limit: int | None = 500
    hessian_limit: int | None = 128
    hessian_iters: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)

    @classmethod
    def quick(cls) -> RobustBarrierSettings:
        """A small digits setting (about half a minute on 2 CPU cores) for tests and smoke runs."""
        return cls(
            dataset="digits",
            train_limit=None,
            test_limit=None,
            epochs=8,
            adversarial_epochs=8,
            attack=AttackConfig(name="pgd", eps=0.2, alpha=0.08, steps=5),
            curve_epochs=8,
            points=5,
            robust_limit=120,
            hessian_limit=24,
            hessian_iters=10,
            seeds=(0,),
        )

    def validate(self) -> RobustBarrierSettings:
        check_experiment(self.model, self.model_kwargs, self.seeds, self.attack)
        if self.points < 3:
            raise InvalidArgument("points", f"points must be at least 3, got {self.points}")
        for name in ("epochs", "adversarial_epochs", "curve_epochs"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"{name} must be at least 1")
        return self


@dataclass
class BarrierSeed:
    """One seed's result: the path table measured along the curve and the row of the claim's
    table (endpoints' accuracies, the figures of :func:`robust_barrier_figures`, ``holds``)."""

    seed: int
    path_rows: list[dict[str, float]]
    figures: dict[str, Any]


def _trainer(
    settings: RobustBarrierSettings,
    data: DataConfig,
    seed: int,
    epochs: int,
    adversarial: AdversarialConfig | None,
    options: StepOptions,
) -> StepRun:
    """The step that trains one endpoint (regular, or PGD-AT with ``adversarial``)."""

    def train(path: Path, resume: bool) -> dict[str, Any]:
        return run_train(
            path,
            model=settings.model,
            model_kwargs=settings.model_kwargs,
            data=data,
            config=TrainConfig(epochs=epochs, batch_size=128, lr=0.05, seed=seed),
            adversarial=adversarial,
            robust=RobustEvaluation(attack=settings.attack, limit=settings.robust_limit),
            device=options.device,
            **resume_flags(resume),
            progress=options.progress,
        )

    return train


def _connector(
    base: Path, settings: RobustBarrierSettings, data: DataConfig, seed: int, options: StepOptions
) -> StepRun:
    """The step that trains the Bezier curve from the regular to the adversarial model."""

    def connect(path: Path, resume: bool) -> dict[str, Any]:
        return run_connect(
            base / "regular",
            base / "adversarial",
            path,
            data=data,
            config=TrainConfig(
                epochs=settings.curve_epochs,
                batch_size=128,
                lr=settings.curve_lr,
                momentum=0.9,
                weight_decay=5e-4,
                schedule="mc",
                seed=seed,
            ),
            num_bends=settings.num_bends,
            device=options.device,
            **resume_flags(resume),
            progress=options.progress,
        )

    return connect


def _path_evaluator(base: Path, settings: RobustBarrierSettings, options: StepOptions) -> StepRun:
    """The step that measures the robust loss and input-Hessian λ_max along the curve."""

    def evaluate(path: Path, resume: bool) -> dict[str, Any]:
        return run_path_analysis(
            [base / "curve"],
            path,
            robust=True,
            attack=settings.attack,
            robust_limit=settings.robust_limit,
            hessian_limit=settings.hessian_limit,
            hessian_iters=settings.hessian_iters,
            with_attack_metrics=False,
            points=settings.points,
            data_dir=options.data_dir,
            test_limit=settings.test_limit,
            with_segment=False,
            device=options.device,
            force=True,
            progress=options.progress,
        )

    return evaluate


def run_seed(
    seed: int, base: Path, settings: RobustBarrierSettings, options: StepOptions
) -> BarrierSeed:
    """One seed's steps: regular model, PGD-trained model, curve, robust path evaluation (each
    a run directory below ``base``), and the seed's figures."""
    data = DataConfig(
        dataset=settings.dataset,
        data_dir=options.data_dir,
        train_limit=settings.train_limit,
        seed=seed,
    )
    regular = run_step(
        base / "regular",
        options.force,
        _trainer(settings, data, seed, settings.epochs, None, options),
    )
    adversarial = AdversarialConfig(attack=settings.attack)
    robust = run_step(
        base / "adversarial",
        options.force,
        _trainer(settings, data, seed, settings.adversarial_epochs, adversarial, options),
    )
    run_step(base / "curve", options.force, _connector(base, settings, data, seed, options))
    run_step(base / "path", options.force, _path_evaluator(base, settings, options))
    rows = read_table(base / "path" / "path.csv")
    return BarrierSeed(seed, rows, seed_figures(seed, regular, robust, rows))


def seed_figures(
    seed: int,
    regular: dict[str, Any],
    robust: dict[str, Any],
    rows: list[dict[str, float]],
) -> dict[str, Any]:
    """The claim's table row for one seed from the two endpoints' summaries and the path table."""
    figures = robust_barrier_figures(rows)
    pcc = figures.get("pcc_robust_loss_lmax", float("nan"))
    holds = (
        figures["robust_excess"] >= ROBUST_EXCESS_MIN
        and figures["standard_excess"] <= STANDARD_EXCESS_MAX
        and pcc >= PCC_MIN
    )
    return {
        "seed": seed,
        "regular_clean_acc": regular["clean_acc"],
        "regular_robust_acc": regular.get("robust_acc", float("nan")),
        "adversarial_clean_acc": robust["clean_acc"],
        "adversarial_robust_acc": robust.get("robust_acc", float("nan")),
        "robust_loss_t0": rows[0]["robust_loss"],
        "robust_loss_t1": rows[-1]["robust_loss"],
        "robust_loss_inside_max": max(r["robust_loss"] for r in rows[1:-1]),
        "robust_peak_t": figures["robust_peak_t"],
        "robust_excess": figures["robust_excess"],
        "standard_excess": figures["standard_excess"],
        "max_attack_success": max(attack_success_rate(r) for r in rows),
        "pcc_robust_loss_lmax": pcc,
        "holds": holds,
    }


def write_outputs(
    run: RunDir, settings: RobustBarrierSettings, results: Sequence[BarrierSeed]
) -> None:
    """``table.csv``, ``table.md`` and ``robust_barrier.png`` (every seed's path)."""
    rows = [r.figures for r in results]
    write_tables(run, [numeric_row(r) for r in rows], rows)
    plot_robust_barrier(
        run.file("robust_barrier.png"),
        {f"seed {r.seed}": r.path_rows for r in results},
        pcc={f"seed {r.seed}": r.figures["pcc_robust_loss_lmax"] for r in results},
    )


CLAIM_TEXT = (
    "on a curve trained with the standard loss from a regular to an adversarially "
    "trained model, the robust loss peaks inside the path (by at least "
    f"{ROBUST_EXCESS_MIN:.0%} of the endpoints' mean) while the standard test loss stays "
    f"within {STANDARD_EXCESS_MAX:.0%} of the worse endpoint's, and PCC(robust loss, "
    f"input-Hessian λ_max) ≥ {PCC_MIN} (Zhao et al. 2020, Fig. 4)"
)


def verdict(settings: RobustBarrierSettings, results: Sequence[BarrierSeed]) -> dict[str, Any]:
    """The summary: the claim holds when it holds for every seed; the worst and mean figures
    over the seeds and each seed's own."""
    rows = [r.figures for r in results]
    flags = [r["holds"] for r in rows]
    return {
        **claim_head("robust-barrier", CLAIM_TEXT, all(flags)),
        "seeds_holding": seeds_holding(flags),
        "robust_excess_min": min(r["robust_excess"] for r in rows),
        "robust_excess_mean": mean(r["robust_excess"] for r in rows),
        "standard_excess_max": max(r["standard_excess"] for r in rows),
        "pcc_robust_loss_lmax_min": min(r["pcc_robust_loss_lmax"] for r in rows),
        **per_seed_figures(
            rows, ("robust_excess", "standard_excess", "pcc_robust_loss_lmax", "robust_peak_t")
        ),
    }


ROBUST_BARRIER = Claim(
    full=RobustBarrierSettings,
    quick=RobustBarrierSettings.quick,
    run_seed=run_seed,
    write_outputs=write_outputs,
    verdict=verdict,
)
