"""Path-connection repair of tampered models (Zhao et al., ICLR 2020).

A user holds a model that may carry a backdoor or injected errors, and a small clean ("bonafide")
data set. Repair connects the tampered model to a second endpoint — another tampered model, or a
copy fine-tuned on the bonafide data — with a Bezier curve trained on the bonafide data only, and
returns a point inside the curve.

**Where the curve starts.** With the reference initialisation (the bend on the straight line
between the endpoints) every point of the curve inherits the tampering: on Fashion-MNIST the
straight segment's midpoint between two patch-backdoored lenets still has an ASR of 0.97 at 52%
clean accuracy, and training the bend on clean data never removes it. modeconn therefore starts
the interior control points from a fresh random initialisation of the architecture by default
(``init="random"``; ``"linear"`` gives the reference behaviour), so the interior of the curve is
learnt from the bonafide data only while staying connected to both endpoints.

**Choosing t without knowing the attack.** The tampering lives at the endpoints and fades along a
curve fitted to clean data. The rule keeps a ``margin`` from both endpoints (``min(t, 1-t) ≥
margin``, default 0.25) and, inside that stretch, takes the point with the best accuracy on the
held-out bonafide slice (ties: farther from the endpoints). Only held-out bonafide data enters the
rule — never the test set and never the trigger or the injected images, which are used for
evaluation only. ``t`` given explicitly overrides the rule.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.attacks.metrics import metric_from_attack_spec
from modeconn.checkpoints import Checkpoint, load_model, save_model
from modeconn.connectivity import (
    Curve,
    SplitLossAccuracy,
    evaluate_path,
    fit_curve,
    save_curve,
    update_bn,
)
from modeconn.connectivity.evaluate import write_table
from modeconn.defenses.baselines import fine_prune, fine_tune, noisy_models, train_from_scratch
from modeconn.distributed import resolve_device
from modeconn.errors import ModeconnError
from modeconn.experiment import DataConfig, PreparedData, check_compatible, prepare_data
from modeconn.io import atomic_write_text
from modeconn.models import build_model
from modeconn.rundir import RunDir, run_status
from modeconn.training import TrainConfig, evaluate_model

HOLDOUT = "bonafide_holdout_acc"
HOLDOUT_METRIC = SplitLossAccuracy("bonafide_holdout")
T_RULE = (
    "the best held-out bonafide accuracy ({acc:.4f}) among the points at least {margin:.2f} "
    "from both endpoints; chosen from held-out bonafide data only"
)


@dataclass
class RepairConfig:
    """Settings of a path repair. Defaults follow Zhao et al. scaled to small data sets."""

    bonafide: float = 2500
    holdout_fraction: float = 0.2
    curve: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=100, batch_size=128, lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="mc"
        )
    )
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=20, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="cosine"
        )
    )
    kind: str = "polychain"
    num_bends: int = 3
    init: str = "random"
    points: int = 21
    margin: float = 0.25
    tolerance: float = 0.02
    t: float | None = None
    baselines: bool = False
    noise_sigmas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
    noise_draws: int = 3
    sweep: tuple[int, ...] = ()
    eot: bool = True
    eot_eps: float = 0.1
    eot_steps: int = 10
    eot_samples: int = 4
    eot_limit: int = 500
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_t(rows: Sequence[dict[str, float]], margin: float) -> tuple[float, str]:
    """Apply the repair rule to path rows (needs ``t`` and the held-out accuracy); (t, why)."""
    if not 0.0 < margin <= 0.5:
        raise ModeconnError(f"--margin must be in (0, 0.5], got {margin}")
    inside = [r for r in rows if min(r["t"], 1.0 - r["t"]) >= margin - 1e-9]
    if not inside:
        raise ModeconnError(
            f"no evaluated point lies at least {margin} from both endpoints; use more --points"
        )
    best = max(inside, key=lambda r: (r[HOLDOUT], min(r["t"], 1.0 - r["t"])))
    return float(best["t"]), T_RULE.format(acc=best[HOLDOUT], margin=margin)


class Stages:
    """Run directories for a repair's training stages, ``OUT/stages/NAME``.

    Every stage (endpoint B, the curve, each trained baseline, each sweep size) saves its
    resumable state after every epoch through the training loop, so ``--resume`` continues an
    interrupted repair inside the stage it stopped in; a stage that had finished resumes at its
    last epoch and trains no further. The states are removed once the whole repair has finished;
    each stage's config and per-epoch metrics stay.
    """

    def __init__(self, run: RunDir) -> None:
        self.root = run.path / "stages"
        self.resuming = run.resuming
        self.runs: list[RunDir] = []

    def __call__(self, name: str, config: TrainConfig) -> RunDir:
        stage = RunDir(self.root / name, force=not self.resuming, resume=self.resuming)
        stage.write_config({"stage": name, "train": config.to_dict()})
        self.runs.append(stage)
        return stage

    def finish(self) -> None:
        """Drop the resumable states (the repair is complete)."""
        for stage in self.runs:
            stage.clear_state()


@dataclass
class Candidate:
    """One repaired (or reference) model and its evaluation figures."""

    name: str
    metrics: dict[str, float]
    detail: str = ""


def attack_key(attack: dict[str, Any] | None) -> str | None:
    if not attack:
        return None
    return "injection_success" if attack.get("type") == "injection" else "asr"


def evaluate_candidate(
    name: str, model: nn.Module, data: PreparedData, metric, device, detail: str = ""
) -> Candidate:
    """Clean accuracy (test), held-out bonafide accuracy, and the attack's metric if known."""
    res = evaluate_model(model, data.eval_loader("test", device=device), device)
    figures = {"clean_acc": res["acc"], "clean_loss": res["loss"]}
    figures.update(HOLDOUT_METRIC(model, data, device))
    if metric is not None:
        figures.update(metric(model, data, device))
    return Candidate(name, figures, detail)


def mean_candidate(name: str, parts: Sequence[Candidate], detail: str) -> Candidate:
    keys = parts[0].metrics.keys()
    return Candidate(name, {k: sum(p.metrics[k] for p in parts) / len(parts) for k in keys}, detail)


def make_second_endpoint(
    tampered: Checkpoint,
    data: PreparedData,
    config: RepairConfig,
    device,
    progress: bool,
    stage: RunDir | None = None,
) -> nn.Module:
    """The paper's one-model set-up: the tampered model fine-tuned on the bonafide data."""
    cfg = copy.deepcopy(config.finetune)
    cfg.seed = config.seed
    return fine_tune(
        tampered.model,
        data.train_loader(cfg.batch_size, split="bonafide", device=device),
        cfg,
        device=device,
        progress=progress,
        description="endpoint B",
        run=stage,
    )


def eot_attack_success(
    curve: Curve,
    t_center: float,
    data: PreparedData,
    attack: dict[str, Any],
    config: RepairConfig,
    device,
) -> float | None:
    """Adaptive attack on the repaired model by someone who knows the defence.

    For a backdoor: triggered, non-target test images are pushed towards the backdoor's labels by
    targeted L∞ PGD whose gradients average over random points of the curve around the chosen t
    (expectation over transformation); the figure is the fraction the repaired model sends to the
    target. Returns None for attacks other than backdoors.
    """
    if attack.get("type") != "backdoor":
        return None
    from modeconn.attacks.backdoor import TriggerSpec, apply_trigger, target_labels
    from modeconn.attacks.evasion import RandomPointModel, pgd

    spec = TriggerSpec.from_dict(attack)
    torch.manual_seed(config.seed)  # PGD's random starts: the same figure after a --resume
    bn = data.eval_loader("bonafide", device=device)
    spread = [min(max(t_center + d, 0.0), 1.0) for d in (-0.1, -0.05, 0.0, 0.05, 0.1)]
    points = [curve.model_at(t, bn_loader=bn).to(device).eval() for t in spread]
    repaired = points[2]
    sampler = RandomPointModel(points)
    hit, total = 0, 0
    images, labels = data.tensors("test")
    idx = data.indices("test")
    keep = idx[target_labels(labels[idx], spec, data.info.num_classes) != labels[idx]]
    keep = keep[: config.eot_limit]
    for start in range(0, len(keep), 256):
        sel = keep[start : start + 256]
        x = images[sel].float().div(255).to(device)
        y = labels[sel].to(device)
        xt = apply_trigger(x, spec)
        goal = target_labels(y, spec, data.info.num_classes)
        adv = pgd(
            sampler,
            xt,
            goal,
            eps=config.eot_eps,
            alpha=config.eot_eps / 4,
            steps=config.eot_steps,
            targeted=True,
            eot_samples=config.eot_samples,
        )
        with torch.no_grad():
            hit += (repaired(adv).argmax(1) == goal).sum().item()
        total += len(sel)
    return hit / max(total, 1)


def comparison_markdown(candidates: Sequence[Candidate], key: str | None) -> str:
    cols = (
        ["clean_acc", HOLDOUT]
        + ([key] if key else [])
        + (["eot_asr"] if any("eot_asr" in c.metrics for c in candidates) else [])
    )
    head = "| model | " + " | ".join(cols) + " | detail |"
    sep = "|---|" + "---:|" * len(cols) + "---|"
    rows = []
    for c in candidates:
        vals = [f"{c.metrics[k]:.4f}" if k in c.metrics else "" for k in cols]
        rows.append(f"| {c.name} | " + " | ".join(vals) + f" | {c.detail} |")
    return "\n".join([head, sep, *rows]) + "\n"


def random_interior_points(tampered: Checkpoint, config: RepairConfig) -> list[dict]:
    """Fresh, seeded initialisations of the architecture for the curve's interior points."""
    torch.manual_seed(config.seed + 7919)
    return [build_model(tampered.spec).state_dict() for _ in range(config.num_bends - 2)]


def repair_path(
    tampered: Checkpoint,
    other: nn.Module,
    data: PreparedData,
    config: RepairConfig,
    metric,
    device,
    progress: bool,
    points: int | None = None,
    stage: RunDir | None = None,
) -> tuple[Curve, list[dict[str, float]]]:
    """Fit the curve on the bonafide data and evaluate it (BN statistics from bonafide data)."""
    curve_cfg = copy.deepcopy(config.curve)
    curve_cfg.seed = config.seed
    loader = data.train_loader(curve_cfg.batch_size, split="bonafide", device=device)
    curve = fit_curve(
        tampered.model,
        tampered.model.state_dict(),
        other.state_dict(),
        loader,
        curve_cfg,
        kind=config.kind,
        num_bends=config.num_bends,
        init="linear" if config.init == "random" else config.init,
        init_points=random_interior_points(tampered, config) if (config.init == "random") else None,
        run=stage,
        device=device,
        progress=progress,
    )
    n = points or config.points
    ts = [i / (n - 1) for i in range(n)]
    metrics = [HOLDOUT_METRIC] + ([metric] if metric is not None else [])
    rows = evaluate_path(curve, data, ts, bn_split="bonafide", metrics=metrics, device=device)
    return curve, rows


def run_baselines(
    tampered: Checkpoint,
    data: PreparedData,
    config: RepairConfig,
    metric,
    device,
    progress: bool,
    stages: Stages | None = None,
) -> tuple[list[Candidate], list[dict[str, float]]]:
    """Fine-tuning, training from scratch, noisy models and fine-pruning on the same data."""
    budget = copy.deepcopy(config.curve)
    budget.seed = config.seed
    budget.schedule = "cosine"
    loader = data.train_loader(budget.batch_size, split="bonafide", device=device)
    bn_loader = data.eval_loader("bonafide", device=device)

    def stage(name: str) -> RunDir | None:
        return stages(name, budget) if stages is not None else None

    out = [
        evaluate_candidate(
            "fine-tuning",
            fine_tune(
                tampered.model,
                loader,
                budget,
                device=device,
                progress=progress,
                run=stage("fine_tuning"),
            ),
            data,
            metric,
            device,
            f"{budget.epochs} epochs on bonafide",
        )
    ]
    scratch = train_from_scratch(
        tampered.spec, loader, budget, device=device, progress=progress, run=stage("from_scratch")
    )
    out.append(
        evaluate_candidate(
            "from scratch", scratch, data, metric, device, f"{budget.epochs} epochs on bonafide"
        )
    )

    def with_bn(m: nn.Module) -> nn.Module:
        update_bn(m, bn_loader, device)
        return m.eval()

    noisy_rows: list[dict[str, float]] = []
    for sigma in config.noise_sigmas:
        draws = noisy_models(tampered.model, sigma, config.noise_draws, config.seed, with_bn)
        mean = mean_candidate(
            "noisy", [evaluate_candidate("noisy", m, data, metric, device) for m in draws], ""
        )
        noisy_rows.append({"sigma": sigma, **mean.metrics})
    # The same rule as for t: go as far from the tampered weights as held-out accuracy allows.
    ref = HOLDOUT_METRIC(tampered.model, data, device)[HOLDOUT]
    ok = [r for r in noisy_rows if r[HOLDOUT] >= ref - config.tolerance]
    pick = max(ok, key=lambda r: r["sigma"]) if ok else noisy_rows[0]
    out.append(
        Candidate(
            "noisy model",
            {k: v for k, v in pick.items() if k != "sigma"},
            f"σ={pick['sigma']} (largest within tolerance), mean of {config.noise_draws} draws",
        )
    )
    try:
        pruned, fraction = fine_prune(
            tampered.model,
            bn_loader,
            data.eval_loader("bonafide_holdout", device=device),
            loader,
            budget,
            device=device,
            progress=progress,
            run=stage("fine_pruning"),
        )
        out.append(
            evaluate_candidate(
                "fine-pruning",
                pruned,
                data,
                metric,
                device,
                f"{fraction:.0%} of last-conv channels pruned",
            )
        )
    except ModeconnError as err:  # e.g. a model with no convolution
        out.append(Candidate("fine-pruning", {}, f"not applicable: {err}"))
    return out, noisy_rows


def run_repair(
    model_paths: Sequence[str | Path],
    out: str | Path,
    *,
    config: RepairConfig | None = None,
    data: DataConfig | None = None,
    attack: dict[str, Any] | None = None,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Repair one or two tampered models with a curve trained on bonafide data; see module doc.

    Writes ``repaired.safetensors`` (+ sidecar), ``curve.safetensors``, ``path.csv``,
    ``comparison.csv``/``.md``, plots and ``summary.json`` to ``out``; returns the summary.
    ``attack`` overrides the sidecar's attack spec (evaluation only). ``resume`` continues an
    interrupted repair in ``out`` (see :class:`Stages`); the result equals an uninterrupted run's.
    """
    config = config or RepairConfig()
    if not 1 <= len(model_paths) <= 2:
        raise ModeconnError("repair takes one or two models")
    if config.t is not None and not 0.0 <= config.t <= 1.0:
        raise ModeconnError(f"--t must be in [0, 1], got {config.t}")
    dev = resolve_device(device)
    if resume and not force and run_status(out) == "finished":
        raise ModeconnError(f"{out} holds a finished repair; nothing to resume (--force redoes it)")
    run = RunDir(out, force=force, resume=resume and not force)
    stages = Stages(run)
    tampered = load_model(model_paths[0], device=dev)
    second = load_model(model_paths[1], device=dev) if len(model_paths) == 2 else None
    if second is not None and second.spec.to_dict() != tampered.spec.to_dict():
        raise ModeconnError(
            f"{model_paths[0]} ({tampered.spec.arch}) and {model_paths[1]} "
            f"({second.spec.arch}) are different architectures"
        )
    attack = attack if attack is not None else tampered.attack
    data = copy.deepcopy(data) if data is not None else DataConfig(dataset=None)
    if not data.dataset:  # None or "": the data set the model was trained on, from its sidecar
        data.dataset = tampered.dataset or "fashion-mnist"
    data.bonafide, data.holdout_fraction, data.seed = (
        config.bonafide,
        config.holdout_fraction,
        config.seed,
    )
    data.augment = False
    prepared = prepare_data(data)
    check_compatible(tampered.spec, prepared, str(model_paths[0]))
    run.write_config(
        {
            "command": "repair",
            "models": [str(p) for p in model_paths],
            "repair": config.to_dict(),
            "data": data.to_dict(),
            "attack": attack,
            "device": str(dev),
        }
    )
    metric = metric_from_attack_spec(attack) if attack else None
    key = attack_key(attack)

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 1)
        clock = now

    other = (
        second.model
        if second is not None
        else make_second_endpoint(
            tampered, prepared, config, dev, progress, stages("endpoint_b", config.finetune)
        )
    )
    lap("endpoint_b")
    curve, rows = repair_path(
        tampered,
        other,
        prepared,
        config,
        metric,
        dev,
        progress,
        stage=stages("curve", config.curve),
    )
    lap("curve_and_path")
    t, why = (config.t, "given with --t") if config.t is not None else choose_t(rows, config.margin)
    repaired = curve.model_at(t, bn_loader=prepared.eval_loader("bonafide", device=dev))
    repaired = repaired.to(dev).eval()

    candidates = [evaluate_candidate("tampered (A)", tampered.model, prepared, metric, dev)]
    candidates.append(
        evaluate_candidate(
            "endpoint B",
            other,
            prepared,
            metric,
            dev,
            "second tampered model" if second is not None else "A fine-tuned on bonafide",
        )
    )
    path_repair = evaluate_candidate("path repair", repaired, prepared, metric, dev, f"t={t:.2f}")
    if config.eot and attack:
        eot = eot_attack_success(curve, t, prepared, attack, config, dev)
        if eot is not None:
            path_repair.metrics["eot_asr"] = eot
    candidates.append(path_repair)
    lap("evaluation_and_eot")
    noisy_rows: list[dict[str, float]] = []
    if config.baselines:
        extra, noisy_rows = run_baselines(tampered, prepared, config, metric, dev, progress, stages)
        candidates += extra
        lap("baselines")

    sweep_rows = (
        run_sweep(tampered, second, data, config, dev, progress, attack, stages)
        if config.sweep
        else []
    )
    if sweep_rows:
        lap("sweep")

    save_model(
        run.file("repaired.safetensors"),
        repaired,
        tampered.spec,
        dataset=data.dataset,
        attack=attack,
        metrics=path_repair.metrics,
        extra={"repair": {"t": t, "rule": why, "sources": [str(p) for p in model_paths]}},
    )
    save_curve(
        run.file("curve.safetensors"),
        curve,
        tampered.spec,
        data.dataset,
        {  # path-eval redraws the same bonafide split from this and measures the attack
            "endpoints": [str(p) for p in model_paths],
            "endpoint_attacks": [attack, attack],
            "data": data.to_dict(),
            "train_split": "bonafide",
        },
    )
    write_table(run.file("path.csv"), rows)
    write_table(
        run.file("comparison.csv"),
        [{"model": c.name, **c.metrics, "detail": c.detail} for c in candidates],
    )
    atomic_write_text(run.file("comparison.md"), comparison_markdown(candidates, key))
    if noisy_rows:
        write_table(run.file("noisy.csv"), noisy_rows)
    if sweep_rows:
        write_table(run.file("sweep.csv"), sweep_rows)
    from modeconn.report.repair_plots import plot_repair

    plot_repair(run.path, rows, candidates, key, t, sweep_rows)
    summary: dict[str, Any] = {
        "t": t,
        "t_rule": why,
        "clean_acc": path_repair.metrics["clean_acc"],
        "clean_loss": path_repair.metrics["clean_loss"],
        "tampered_clean_acc": candidates[0].metrics["clean_acc"],
        "bonafide": len(prepared.indices("bonafide")) + len(prepared.indices("bonafide_holdout")),
    }
    if key:
        summary[key] = path_repair.metrics[key]
        summary[f"tampered_{key}"] = candidates[0].metrics[key]
    if "eot_asr" in path_repair.metrics:
        summary["eot_asr"] = path_repair.metrics["eot_asr"]
    for c in candidates[3:]:
        slug = c.name.replace(" ", "_").replace("-", "_")
        for k in ("clean_acc", key):
            if k and k in c.metrics:
                summary[f"{slug}_{k}"] = c.metrics[k]
    # Wall time of each step (flat keys, like every summary figure), to see where the time goes.
    summary.update({f"seconds_{step}": value for step, value in timings.items()})
    stages.finish()
    run.write_summary(summary)
    return summary


def run_sweep(
    tampered: Checkpoint,
    second: Checkpoint | None,
    data: DataConfig,
    config: RepairConfig,
    device,
    progress: bool,
    attack,
    stages: Stages | None = None,
) -> list[dict[str, float]]:
    """Repair again with several bonafide sizes (same rule, fewer path points)."""
    rows = []
    metric = metric_from_attack_spec(attack) if attack else None
    key = attack_key(attack)
    for n in config.sweep:
        cfg = copy.deepcopy(config)
        cfg.bonafide = n
        sub = copy.deepcopy(data)
        sub.bonafide = n
        prepared = prepare_data(sub)
        other = (
            second.model
            if second is not None
            else make_second_endpoint(
                tampered,
                prepared,
                cfg,
                device,
                progress,
                stages(f"sweep{n}_endpoint_b", cfg.finetune) if stages else None,
            )
        )
        _, path_rows = repair_path(
            tampered,
            other,
            prepared,
            cfg,
            metric,
            device,
            progress,
            points=11,
            stage=stages(f"sweep{n}_curve", cfg.curve) if stages else None,
        )
        t, _ = choose_t(path_rows, cfg.margin)
        row = next(r for r in path_rows if abs(r["t"] - t) < 1e-9)
        entry = {"bonafide": n, "t": t, "clean_acc": row["test_acc"]}
        if key:
            entry[key] = row[key]
        rows.append(entry)
    return rows


__all__ = ["RepairConfig", "choose_t", "run_repair"]
