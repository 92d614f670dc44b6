"""``modeconn reproduce awp``: Wu et al. (NeurIPS 2020), Adversarial Weight Perturbation narrows
robust overfitting.

Per seed: PGD-AT and PGD-AT + AWP on a small training subset for many epochs, the test robust
accuracy after every epoch; the gap is last-epoch minus best-epoch robust accuracy. The claim
holds when PGD-AT overfits (mean gap at most -0.02) and the mean gap over the seeds is smaller
(closer to 0) with AWP; without overfitting there is nothing to narrow, and the summary's
``at_overfits`` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeconn.attacks.config import AttackConfig
from modeconn.commands.reproduce.aggregate import (
    claim_head,
    mean,
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
from modeconn.report.landscape_plots import plot_robust_overfitting
from modeconn.rundir import RunDir
from modeconn.training import TrainConfig

#: The claim is about narrowing robust overfitting, so it needs some: PGD-AT's mean gap (last
#: minus best epoch's robust accuracy) must be at most -OVERFIT_MIN. Two points of robust
#: accuracy is about one standard error of an accuracy near 0.65 on 500 test images.
OVERFIT_MIN = 0.02


@dataclass
class AWPSettings:
    """What the AWP experiment trains: PGD-AT with and without AWP, long enough to overfit.

    Robust overfitting (Rice et al. 2020) needs a model that memorises its adversarial training
    set: many optimiser steps on few images with enough capacity, the learning rate dropped
    part-way (the step schedule, ×0.1 at 50% and 75%). The defaults take a 2×1024 ReLU MLP,
    a 500-image stratified Fashion-MNIST subset, 100 epochs of batch 32 (1,600 steps) and no
    weight decay: PGD-AT's robust training accuracy climbs to about 0.9 after the decay while the
    test one gains nothing from it and ends below its best. (A lenet on 2,000 images, 20 epochs
    of batch 128 with weight decay 5e-4, the earlier default, does not overfit: its robust
    training accuracy stays at the test one.)
    The robust accuracy is measured on ``robust_limit`` test images after every epoch; the
    "best epoch" is the diagnostic of that literature, read off the test curve, and chooses no
    model. The paper's CIFAR setting is reachable through the fields (``dataset="cifar10"``,
    ``model="preact_resnet18"``, eps 8/255, 200 epochs, batch 128, weight decay 5e-4).
    """

    dataset: str = "fashion-mnist"
    model: str = "mlp"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"hidden": [1024, 1024]})
    train_limit: int | None = 500
    epochs: int = 100
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 0.0
    attack: AttackConfig = field(
        default_factory=lambda: AttackConfig(name="pgd", eps=0.1, alpha=0.025, steps=7)
    )
    awp_gamma: float | None = None  # None: the reference 0.01 for PGD-AT
    awp_warmup: int = 0  # epochs of plain PGD-AT before AWP starts (the reference: 0)
    robust_limit: int | None = 500
    seeds: tuple[int, ...] = (0, 1, 2)

    @classmethod
    def quick(cls) -> AWPSettings:
        """A small digits setting for tests and smoke runs."""
        return cls(
            dataset="digits",
            model="lenet",
            model_kwargs={},
            train_limit=400,
            epochs=10,
            batch_size=128,
            weight_decay=5e-4,
            attack=AttackConfig(name="pgd", eps=0.2, alpha=0.08, steps=3),
            robust_limit=120,
            seeds=(0,),
        )

    def validate(self) -> AWPSettings:
        check_experiment(self.model, self.model_kwargs, self.seeds, self.attack)
        if self.epochs < 2:
            raise InvalidArgument("epochs", f"epochs must be at least 2, got {self.epochs}")
        if not 0 <= self.awp_warmup < self.epochs:
            raise InvalidArgument(
                "awp_warmup",
                f"awp_warmup must be at least 0 and below epochs ({self.epochs}), "
                f"got {self.awp_warmup}",
            )
        self.train_config(self.seeds[0]).validate()
        self.adversarial(awp=True).validate()
        return self

    def train_config(self, seed: int) -> TrainConfig:
        """The optimisation of every run of seed ``seed`` (with and without AWP)."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            schedule="step",
            seed=seed,
        )

    def adversarial(self, awp: bool) -> AdversarialConfig:
        """PGD-AT with the settings' attack, with or without AWP."""
        return AdversarialConfig(
            attack=self.attack, awp=awp, awp_gamma=self.awp_gamma, awp_warmup=self.awp_warmup
        )


AWP_METHODS = ("PGD-AT", "PGD-AT + AWP")
#: Each method's step directory below ``seed_<s>`` and its tag in the summary's keys.
RUN_KEYS = {"PGD-AT": "at", "PGD-AT + AWP": "awp"}
#: The per-run figures of :func:`overfitting_gap` that the summary lists for every seed.
RUN_FIGURES = (
    "gap",
    "best_robust_acc",
    "last_robust_acc",
    "last_clean_acc",
    "last_train_robust_acc",
    "train_test_gap",
)


def overfitting_gap(history: list[dict[str, float]]) -> dict[str, float]:
    """Robust overfitting of one training run from its per-epoch ``robust_acc``.

    ``gap`` is the last epoch's test robust accuracy minus the best epoch's (the measure of Rice
    et al. and Wu et al.); ``train_test_gap`` is the last epoch's robust accuracy on its own PGD
    training batches (``train_acc`` of PGD-AT) minus the test one: the memorisation behind it.

    >>> gap = overfitting_gap([{"epoch": 1, "robust_acc": 0.3, "train_acc": 0.3},
    ...                        {"epoch": 2, "robust_acc": 0.5, "train_acc": 0.6},
    ...                        {"epoch": 3, "robust_acc": 0.4, "train_acc": 0.9, "test_acc": 0.8}])
    >>> gap["best_epoch"], round(gap["gap"], 6), round(gap["train_test_gap"], 6)
    (2, -0.1, 0.5)
    """
    best = max(history, key=lambda r: r["robust_acc"])
    last = history[-1]
    return {
        "best_epoch": int(best["epoch"]),
        "best_robust_acc": best["robust_acc"],
        "last_robust_acc": last["robust_acc"],
        "gap": last["robust_acc"] - best["robust_acc"],
        "last_clean_acc": last["test_acc"],
        "last_train_robust_acc": last["train_acc"],
        "train_test_gap": last["train_acc"] - last["robust_acc"],
    }


@dataclass
class AWPSeed:
    """One seed's result: per method, the per-epoch history with a test robust accuracy and
    its :func:`overfitting_gap` figures."""

    seed: int
    histories: dict[str, list[dict[str, float]]]
    gaps: dict[str, dict[str, float]]

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per method: seed, method and its overfitting figures."""
        return [{"seed": self.seed, "method": m, **self.gaps[m]} for m in AWP_METHODS]


def _train_step(
    path: Path, seed: int, awp: bool, settings: AWPSettings, options: StepOptions
) -> dict[str, Any]:
    """PGD-AT (with AWP when ``awp``) of seed ``seed`` into ``path``, the test robust accuracy
    after every epoch."""

    def train(path: Path, resume: bool) -> dict[str, Any]:
        return run_train(
            path,
            model=settings.model,
            model_kwargs=settings.model_kwargs,
            data=DataConfig(
                dataset=settings.dataset,
                data_dir=options.data_dir,
                train_limit=settings.train_limit,
                seed=seed,
            ),
            config=settings.train_config(seed),
            adversarial=settings.adversarial(awp),
            robust=RobustEvaluation(attack=settings.attack, limit=settings.robust_limit),
            robust_each_epoch=True,
            device=options.device,
            **resume_flags(resume),
            progress=options.progress,
        )

    return run_step(path, options.force, train)


def run_seed(seed: int, base: Path, settings: AWPSettings, options: StepOptions) -> AWPSeed:
    """PGD-AT, then PGD-AT + AWP (run directories ``at`` and ``awp`` below ``base``), and the
    overfitting gap of each from its per-epoch metrics."""
    histories: dict[str, list[dict[str, float]]] = {}
    for method in AWP_METHODS:
        path = base / RUN_KEYS[method]
        _train_step(path, seed, method == AWP_METHODS[1], settings, options)
        metrics = RunDir.attach(path, resuming=False).read_metrics()
        histories[method] = [r for r in metrics if "robust_acc" in r]
    gaps = {m: overfitting_gap(h) for m, h in histories.items()}
    return AWPSeed(seed, histories, gaps)


def write_outputs(run: RunDir, settings: AWPSettings, results: Sequence[AWPSeed]) -> None:
    """``table.csv`` (the method as an ``awp`` flag: it holds numbers only), ``table.md`` and
    ``robust_overfitting.png`` (every run's robust accuracies per epoch)."""
    table = [row for r in results for row in r.table_rows()]
    numeric = [
        {
            "seed": row["seed"],
            "awp": float(row["method"] == AWP_METHODS[1]),
            **{k: v for k, v in row.items() if k not in ("seed", "method")},
        }
        for row in table
    ]
    write_tables(run, numeric, table)
    plot_robust_overfitting(
        run.file("robust_overfitting.png"),
        {f"{m} seed {r.seed}": r.histories[m] for r in results for m in AWP_METHODS},
        title=f"robust overfitting, {settings.dataset} / {settings.model}: PGD-AT with and "
        "without AWP",
    )


CLAIM_TEXT = (
    "AWP narrows robust overfitting: where PGD-AT overfits (its last epoch's test robust "
    f"accuracy at least {OVERFIT_MIN:.2f} below its best epoch's, on the mean over the "
    "seeds), the gap is smaller with AWP (Wu et al. 2020)"
)


def verdict(settings: AWPSettings, results: Sequence[AWPSeed]) -> dict[str, Any]:
    """The summary: the claim holds when PGD-AT overfits on the mean and AWP's mean gap is
    smaller; a seed holds when PGD-AT overfits there and AWP's gap is smaller. Then the means
    of each method's figures and every run's own."""
    at, awp = AWP_METHODS
    mean_gap = {m: mean(r.gaps[m]["gap"] for r in results) for m in AWP_METHODS}
    at_overfits = mean_gap[at] <= -OVERFIT_MIN
    narrower = [
        r.gaps[awp]["gap"] > r.gaps[at]["gap"] and r.gaps[at]["gap"] <= -OVERFIT_MIN
        for r in results
    ]
    means = {
        f"{name}_{RUN_KEYS[m]}_mean": mean(r.gaps[m][name] for r in results)
        for m in AWP_METHODS
        for name in ("last_robust_acc", "last_clean_acc", "train_test_gap")
    }
    table = [row for r in results for row in r.table_rows()]
    return {
        **claim_head("awp", CLAIM_TEXT, at_overfits and mean_gap[awp] > mean_gap[at]),
        "at_overfits": at_overfits,
        "seeds_holding": seeds_holding(narrower),
        "gap_at_mean": mean_gap[at],
        "gap_awp_mean": mean_gap[awp],
        **means,
        **per_seed_figures(
            table, RUN_FIGURES, prefix=lambda r: f"seed{r['seed']}_{RUN_KEYS[r['method']]}"
        ),
    }


AWP = Claim(
    full=AWPSettings,
    quick=AWPSettings.quick,
    run_seed=run_seed,
    write_outputs=write_outputs,
    verdict=verdict,
)
