"""``modeconn reproduce NAME``: one published landscape claim, end to end, with a verdict.

Each experiment trains the models it needs through the ordinary commands (every step is a run
directory below ``out`` that is reused when finished and resumed when interrupted), measures the
claim's figure of merit, and writes the paper's figure, a table (``table.csv``, ``table.md``)
and ``summary.json`` with ``claim``, ``holds`` (true/false) and the numbers behind it.

Experiments:

``robust-barrier``
    Zhao et al. (ICLR 2020, §5, Fig. 4): on a curve trained with the standard loss between a
    regular and an adversarially trained model there is no barrier in the standard loss but one
    in the robust loss, and the robust loss correlates with the input-Hessian λ_max. Per seed:
    a regular model, a PGD-trained one, a Bezier curve between them (standard loss, bonafide =
    the training subset), ``path-eval --robust`` along it. The claim holds for a seed when the
    robust loss peaks inside the path by at least 10% of the endpoints' mean robust loss, the
    standard test loss stays within 10% of the worse endpoint's, and PCC(robust loss, λ_max)
    ≥ 0.9; it holds when it holds for every seed.

``awp``
    Wu et al. (NeurIPS 2020): Adversarial Weight Perturbation narrows robust overfitting. Per
    seed: PGD-AT and PGD-AT + AWP on a small training subset for many epochs, the test robust
    accuracy after every epoch; the gap is last-epoch minus best-epoch robust accuracy. The claim
    holds when PGD-AT overfits (mean gap at most -0.02) and the mean gap over the seeds is
    smaller (closer to 0) with AWP; without overfitting there is nothing to narrow, and the
    summary's ``at_overfits`` says so.

``surface``
    Ren et al. (ICLR 2025): a Bezier surface trained through four models is low-loss (its
    largest test loss within 25% of the worst corner's), compared with the best corner, the
    weight average, the corners' ensemble and a surface assembled from trained curves without
    training it; see :mod:`modeconn.commands.reproduce.surface`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from modeconn.attacks.config import AttackConfig
from modeconn.commands.connect import run_connect
from modeconn.commands.path_analysis import run_path_analysis
from modeconn.commands.reproduce.surface import SurfaceSettings, run_surface_claim
from modeconn.commands.steps import check_experiment, run_step
from modeconn.commands.train import run_train
from modeconn.data.registry import load_dataset
from modeconn.defenses.adversarial import AdversarialConfig, RobustEvaluation
from modeconn.errors import InvalidArgument
from modeconn.experiment import DataConfig
from modeconn.io import atomic_write_text, markdown_table, read_table, write_table
from modeconn.landscape.metrics import robust_barrier_figures
from modeconn.report.landscape_plots import (
    attack_success_rate,
    plot_robust_barrier,
    plot_robust_overfitting,
)
from modeconn.rundir import RunDir, run_status
from modeconn.training import TrainConfig

#: The thresholds of the robust-barrier claim (see the module doc).
ROBUST_EXCESS_MIN = 0.10
STANDARD_EXCESS_MAX = 0.10
PCC_MIN = 0.9
#: The AWP claim is about narrowing robust overfitting, so it needs some: PGD-AT's mean gap
#: (last minus best epoch's robust accuracy) must be at most -OVERFIT_MIN. Two points of
#: robust accuracy is about one standard error of an accuracy near 0.65 on 500 test images.
OVERFIT_MIN = 0.02


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


def _barrier_steps(
    base: Path,
    seed: int,
    settings: RobustBarrierSettings,
    *,
    data_dir: str | None,
    device: str,
    force: bool,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One seed's steps: regular model, PGD-trained model, curve, robust path evaluation
    (each a run directory below ``base``). Returns the two models' summaries."""
    data = DataConfig(
        dataset=settings.dataset, data_dir=data_dir, train_limit=settings.train_limit, seed=seed
    )

    def trainer(epochs: int, adversarial: AdversarialConfig | None):
        def train(path: Path, resume: bool) -> dict[str, Any]:
            return run_train(
                path,
                model=settings.model,
                model_kwargs=settings.model_kwargs,
                data=data,
                config=TrainConfig(epochs=epochs, batch_size=128, lr=0.05, seed=seed),
                adversarial=adversarial,
                robust=RobustEvaluation(attack=settings.attack, limit=settings.robust_limit),
                device=device,
                force=not resume,
                resume=resume,
                progress=progress,
            )

        return train

    regular = run_step(base / "regular", force, trainer(settings.epochs, None))
    robust = run_step(
        base / "adversarial",
        force,
        trainer(settings.adversarial_epochs, AdversarialConfig(attack=settings.attack)),
    )

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
            device=device,
            force=not resume,
            resume=resume,
            progress=progress,
        )

    run_step(base / "curve", force, connect)

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
            data_dir=data_dir,
            test_limit=settings.test_limit,
            with_segment=False,
            device=device,
            force=True,
            progress=progress,
        )

    run_step(base / "path", force, evaluate)
    return regular, robust


def _robust_barrier(
    run: RunDir,
    settings: RobustBarrierSettings,
    *,
    data_dir: str | None,
    device: str,
    force: bool,
    progress: bool,
) -> dict[str, Any]:
    out = run.path
    per_seed: list[dict[str, Any]] = []
    rows_by_seed: dict[str, list[dict[str, float]]] = {}
    for seed in settings.seeds:
        base = out / f"seed_{seed}"
        regular, robust = _barrier_steps(
            base,
            seed,
            settings,
            data_dir=data_dir,
            device=device,
            force=force,
            progress=progress,
        )
        rows = read_table(base / "path" / "path.csv")
        figures = robust_barrier_figures(rows)
        pcc = figures.get("pcc_robust_loss_lmax", float("nan"))
        holds = (
            figures["robust_excess"] >= ROBUST_EXCESS_MIN
            and figures["standard_excess"] <= STANDARD_EXCESS_MAX
            and pcc >= PCC_MIN
        )
        rows_by_seed[f"seed {seed}"] = rows
        per_seed.append(
            {
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
        )
    write_table(run.file("table.csv"), [{**r, "holds": float(r["holds"])} for r in per_seed])
    atomic_write_text(run.file("table.md"), markdown_table(per_seed) + "\n")
    plot_robust_barrier(
        run.file("robust_barrier.png"),
        rows_by_seed,
        pcc={f"seed {r['seed']}": r["pcc_robust_loss_lmax"] for r in per_seed},
    )
    held = sum(r["holds"] for r in per_seed)
    summary: dict[str, Any] = {
        "experiment": "robust-barrier",
        "claim": (
            "on a curve trained with the standard loss from a regular to an adversarially "
            "trained model, the robust loss peaks inside the path (by at least "
            f"{ROBUST_EXCESS_MIN:.0%} of the endpoints' mean) while the standard test loss stays "
            f"within {STANDARD_EXCESS_MAX:.0%} of the worse endpoint's, and PCC(robust loss, "
            f"input-Hessian λ_max) ≥ {PCC_MIN} (Zhao et al. 2020, Fig. 4)"
        ),
        "holds": held == len(per_seed),
        "seeds_holding": f"{held}/{len(per_seed)}",
        "robust_excess_min": min(r["robust_excess"] for r in per_seed),
        "robust_excess_mean": sum(r["robust_excess"] for r in per_seed) / len(per_seed),
        "standard_excess_max": max(r["standard_excess"] for r in per_seed),
        "pcc_robust_loss_lmax_min": min(r["pcc_robust_loss_lmax"] for r in per_seed),
    }
    for r in per_seed:
        for key in ("robust_excess", "standard_excess", "pcc_robust_loss_lmax", "robust_peak_t"):
            summary[f"seed{r['seed']}_{key}"] = r[key]
    return summary


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


def _awp(
    run: RunDir,
    settings: AWPSettings,
    *,
    data_dir: str | None,
    device: str,
    force: bool,
    progress: bool,
) -> dict[str, Any]:
    out = run.path
    table: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, float]]] = {}
    for seed in settings.seeds:
        for method in AWP_METHODS:
            awp = method == AWP_METHODS[1]
            path = out / f"seed_{seed}" / ("awp" if awp else "at")
            _awp_step(
                path,
                seed,
                awp,
                settings,
                data_dir=data_dir,
                device=device,
                force=force,
                progress=progress,
            )
            history = [
                r for r in RunDir.attach(path, resuming=False).read_metrics() if "robust_acc" in r
            ]
            histories[f"{method} seed {seed}"] = history
            table.append({"seed": seed, "method": method, **overfitting_gap(history)})
    # table.csv holds numbers only (read_table reads floats): the method as an ``awp`` flag.
    numeric = [{"seed": r["seed"], "awp": float(r["method"] == AWP_METHODS[1])} for r in table]
    write_table(
        run.file("table.csv"),
        [
            {**n, **{k: v for k, v in r.items() if k not in n and k != "method"}}
            for n, r in zip(numeric, table, strict=True)
        ],
    )
    atomic_write_text(run.file("table.md"), markdown_table(table) + "\n")
    plot_robust_overfitting(
        run.file("robust_overfitting.png"),
        histories,
        title=f"robust overfitting, {settings.dataset} / {settings.model}: PGD-AT with and "
        "without AWP",
    )
    gaps = {m: [r["gap"] for r in table if r["method"] == m] for m in AWP_METHODS}
    mean = {m: sum(v) / len(v) for m, v in gaps.items()}
    pairs = list(zip(gaps["PGD-AT + AWP"], gaps["PGD-AT"], strict=True))
    narrower = sum(awp > at and at <= -OVERFIT_MIN for awp, at in pairs)
    at_overfits = mean["PGD-AT"] <= -OVERFIT_MIN
    summary: dict[str, Any] = {
        "experiment": "awp",
        "claim": (
            "AWP narrows robust overfitting: where PGD-AT overfits (its last epoch's test robust "
            f"accuracy at least {OVERFIT_MIN:.2f} below its best epoch's, on the mean over the "
            "seeds), the gap is smaller with AWP (Wu et al. 2020)"
        ),
        "holds": at_overfits and mean["PGD-AT + AWP"] > mean["PGD-AT"],
        "at_overfits": at_overfits,
        "seeds_holding": f"{narrower}/{len(settings.seeds)}",
        "gap_at_mean": mean["PGD-AT"],
        "gap_awp_mean": mean["PGD-AT + AWP"],
        **{
            f"{name}_{key}_mean": sum(r[name] for r in table if r["method"] == method)
            / len(settings.seeds)
            for key, method in zip(("at", "awp"), AWP_METHODS, strict=True)
            for name in ("last_robust_acc", "last_clean_acc", "train_test_gap")
        },
    }
    for r in table:
        key = "awp" if r["method"] == AWP_METHODS[1] else "at"
        for name in (
            "gap",
            "best_robust_acc",
            "last_robust_acc",
            "last_clean_acc",
            "last_train_robust_acc",
            "train_test_gap",
        ):
            summary[f"seed{r['seed']}_{key}_{name}"] = r[name]
    return summary


def _awp_step(
    path: Path,
    seed: int,
    awp: bool,
    settings: AWPSettings,
    *,
    data_dir: str | None,
    device: str,
    force: bool,
    progress: bool,
) -> dict[str, Any]:
    def train(path: Path, resume: bool) -> dict[str, Any]:
        return run_train(
            path,
            model=settings.model,
            model_kwargs=settings.model_kwargs,
            data=DataConfig(
                dataset=settings.dataset,
                data_dir=data_dir,
                train_limit=settings.train_limit,
                seed=seed,
            ),
            config=settings.train_config(seed),
            adversarial=settings.adversarial(awp),
            robust=RobustEvaluation(attack=settings.attack, limit=settings.robust_limit),
            robust_each_epoch=True,
            device=device,
            force=not resume,
            resume=resume,
            progress=progress,
        )

    return run_step(path, force, train)


@dataclass(frozen=True)
class Experiment:
    """A reproducible claim: its full and quick settings and the function that runs it."""

    full: Callable[[], Any]
    quick: Callable[[], Any]
    run: Callable[..., dict[str, Any]]


EXPERIMENTS: dict[str, Experiment] = {
    "robust-barrier": Experiment(
        RobustBarrierSettings, RobustBarrierSettings.quick, _robust_barrier
    ),
    "awp": Experiment(AWPSettings, AWPSettings.quick, _awp),
    "surface": Experiment(SurfaceSettings, SurfaceSettings.quick, run_surface_claim),
}


def with_overrides(settings: Any, changes: dict[str, Any]) -> Any:
    """``settings`` (an experiment's settings dataclass) with the fields in ``changes`` replaced.

    Values come as parsed JSON: a list replaces a tuple field as a tuple, and a dict given for
    ``attack`` is read as an :class:`AttackConfig`. An unknown field name is an error that lists
    the known ones.

    >>> with_overrides(SurfaceSettings(), {"num_bends": [4, 4], "align": False}).num_bends
    (4, 4)
    """
    known = {f.name for f in fields(settings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise InvalidArgument(
            "set",
            f"unknown setting {', '.join(unknown)} for this experiment "
            f"(known: {', '.join(sorted(known))})",
        )
    values: dict[str, Any] = {}
    for name, value in changes.items():
        current = getattr(settings, name)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, AttackConfig) and isinstance(value, dict):
            value = AttackConfig.from_dict({**current.to_dict(), **value})
        if not _same_kind(current, value):
            raise InvalidArgument(
                "set", f"setting {name} takes a value like {current!r}, got {value!r}"
            )
        values[name] = value
    return replace(settings, **values)


def _same_kind(current: Any, value: Any) -> bool:
    """Whether ``value`` can stand where ``current`` stands (None for an optional setting, an
    integer for a float; a bool is no number here)."""
    if current is None or value is None:
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, int | float)
    return isinstance(value, type(current))


def run_reproduce(
    name: str,
    out: str | Path,
    *,
    quick: bool = False,
    settings: Any = None,
    seeds: tuple[int, ...] | None = None,
    overrides: dict[str, Any] | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run experiment ``name`` (one of :data:`EXPERIMENTS`) into ``out``; return its summary.

    ``settings`` replaces the experiment's defaults (its settings dataclass); ``quick`` takes
    the small setting instead; ``seeds`` overrides the settings' seeds; ``overrides`` replaces
    single fields of the settings (:func:`with_overrides`; the CLI's ``--set NAME=VALUE``).
    A finished run is re-aggregated from its finished steps; ``force`` redoes every step. The
    summary's ``seconds`` is the wall time of the calls that produced it: a call that only
    re-aggregates adds its own time to the finished run's.
    """
    if name not in EXPERIMENTS:
        raise InvalidArgument("name", f"unknown experiment '{name}' (use {', '.join(EXPERIMENTS)})")
    experiment = EXPERIMENTS[name]
    if settings is None:
        settings = experiment.quick() if quick else experiment.full()
    chosen = with_overrides(settings, overrides) if overrides else settings
    if seeds is not None:
        chosen = replace(chosen, seeds=tuple(seeds))
    chosen.validate()
    # An unknown or missing data set is reported before the run directory is written.
    load_dataset(chosen.dataset, data_dir)
    started = time.perf_counter()
    earlier = "new" if force else run_status(out)
    run = RunDir(out, force=force, resume=True)
    # A run that was started (or finished) before is continued only with the same settings: its
    # finished steps are reused, and steps of other settings must not be mixed in.
    run.resuming = earlier != "new"
    run.write_config(
        {"command": "reproduce", "experiment": name, "quick": quick, "settings": asdict(chosen)}
    )
    summary = experiment.run(
        run, chosen, data_dir=data_dir, device=device, force=force, progress=progress
    )
    before = run.read_summary().get("seconds", 0.0) if earlier == "finished" else 0.0
    summary["seconds"] = before + time.perf_counter() - started
    run.write_summary(summary)
    return summary
