"""Repair of tampered models with a little clean data: scan, unlearn, connect, choose, verify.

A user holds a model that may carry a backdoor or injected errors, and a small clean ("bonafide")
data set. :class:`Repair` builds several repaired candidates from the bonafide data only and
returns the one a trigger-free rule picks, with the evidence:

1. **Scan** each tampered model for a backdoor (:mod:`modeconn.defenses.scan`): a synthesized
   trigger per class, an anomaly index, the flagged classes.
2. **Unlearn** each tampered model: fine-tune it on bonafide batches stamped with the flagged
   classes' synthesized triggers, true labels kept (NC-unlearning; candidate ``NC-unlearning``).
3. **Connect** the unlearnt endpoints (the second tampered model, or in the one-model set-up the
   model unlearnt with another seed) by a Bezier curve started on the straight line and trained
   on the same stamped batches (unlearning along the path), gently: few epochs at a low rate, so
   that the interior keeps what the endpoints learnt from far more data than the bonafide set
   (candidate ``path repair``, t by the held-out rule below).
4. **Choose** (``method="auto"``): scan every candidate again and take the one with the best
   held-out bonafide accuracy among those the scan does not flag. The rule sees neither the test
   set nor the trigger.

``method="path"`` is the previous design (Zhao et al., ICLR 2020): a curve between the tampered
endpoints with no scan, started from a fresh initialisation (``init="random"``) or on the
straight line (``init="linear"``, the reference code); ``method="unlearn-path"`` and
``method="unlearn"`` return that one candidate.

**Choosing t.** Keep a ``margin`` from both endpoints (``min(t, 1-t) ≥ margin``, default 0.25)
and, inside that stretch, take the point with the best accuracy on the held-out bonafide slice
(ties: farther from the endpoints). ``t`` given explicitly overrides the rule.

Everything the attack's true trigger is needed for — ASR, the adaptive EOT attack, the retuning
attack (:mod:`modeconn.defenses.retuning`) — is measured for the report only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from modeconn.attacks.metrics import AttackSuccessMetric, metric_from_attack_spec
from modeconn.checkpoints import Checkpoint, load_model
from modeconn.connectivity import (
    Curve,
    SplitLossAccuracy,
    evaluate_path,
    fit_curve,
    update_bn,
)
from modeconn.connectivity.alignment import weight_matching
from modeconn.defenses.anp import ANPConfig, adversarial_neuron_pruning
from modeconn.defenses.baselines import fine_prune, fine_tune, noisy_models, train_from_scratch
from modeconn.defenses.fst import FSTConfig, feature_shift_tuning
from modeconn.defenses.retuning import RetuningConfig, retuning_attack_asr
from modeconn.defenses.scan import ScanConfig, ScanResult, scan_images, scan_model
from modeconn.defenses.tsc import TSCConfig, symmetry_connectivity
from modeconn.defenses.unlearning import UnlearningConfig, unlearn, unlearning_loader
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.experiment import DataConfig, PreparedData, check_compatible, prepare_data
from modeconn.models import build_model
from modeconn.models.permutation import apply_permutation, permutation_spec
from modeconn.training import TrainConfig, TrainingRun, evaluate_model

HOLDOUT = "bonafide_holdout_acc"
HOLDOUT_LOSS = "bonafide_holdout_loss"
HOLDOUT_METRIC = SplitLossAccuracy("bonafide_holdout")
T_RULE = (
    "the best held-out bonafide accuracy ({acc:.4f}) among the points at least {margin:.2f} "
    "from both endpoints; chosen from held-out bonafide data only"
)
METHODS = ("auto", "unlearn-path", "unlearn", "path", "tsc")

#: Gives a training stage (name, its settings) somewhere to keep its resumable state, or None.
StageFn = Callable[[str, TrainConfig], "TrainingRun | None"]


class Names:
    """The candidates' names (rows of ``comparison.md``); :func:`slug` gives their summary keys."""

    TAMPERED = "tampered (A)"
    ENDPOINT_B = "endpoint B"
    PATH_REPAIR = "path repair"
    UNLEARNING = "NC-unlearning"
    PATH = "path (no scan)"
    TSC = "TSC"
    FINE_TUNING = "fine-tuning"
    FROM_SCRATCH = "from scratch"
    NOISY = "noisy model"
    FINE_PRUNING = "fine-pruning"
    FST = "FST"
    ANP = "ANP"

    #: Which candidates each method builds, in order of preference on ties.
    BY_METHOD: ClassVar[dict[str, tuple[str, ...]]] = {
        "auto": (PATH_REPAIR, UNLEARNING),
        "unlearn-path": (PATH_REPAIR,),
        "unlearn": (UNLEARNING,),
        "path": (PATH,),
        "tsc": (TSC,),
    }


def slug(name: str) -> str:
    """Summary-key prefix of a candidate: ``"NC-unlearning"`` → ``"nc_unlearning"``.

    >>> slug("path repair"), slug("tampered (A)"), slug("NC-unlearning")
    ('path_repair', 'tampered', 'nc_unlearning')
    """
    base = name.split(" (")[0]
    return base.lower().replace(" ", "_").replace("-", "_")


def _gentle_curve() -> TrainConfig:
    return TrainConfig(
        epochs=20, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="mc"
    )


@dataclass
class RepairConfig:
    """Settings of a repair. ``curve`` trains the unlearning path (gentle by default);
    ``path_curve`` the scan-free path of ``method="path"`` (Zhao et al. scaled to small data)."""

    bonafide: float = 2500
    holdout_fraction: float = 0.2
    method: str = "auto"
    curve: TrainConfig = field(default_factory=_gentle_curve)
    path_curve: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=100, batch_size=128, lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="mc"
        )
    )
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=20, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="cosine"
        )
    )
    scratch_epochs: int = 100
    scan: ScanConfig = field(default_factory=ScanConfig)
    unlearning: UnlearningConfig = field(default_factory=UnlearningConfig)
    retuning: RetuningConfig = field(default_factory=RetuningConfig)
    fst: FSTConfig = field(default_factory=FSTConfig)
    anp: ANPConfig = field(default_factory=ANPConfig)
    tsc: TSCConfig = field(default_factory=TSCConfig)
    align_endpoints: bool = True  # permute B onto A before the unlearning path
    kind: str = "bezier"
    path_kind: str = "polychain"
    num_bends: int = 3
    init: str = "random"
    points: int = 11
    path_test_limit: int | None = None  # test images behind path.csv's columns (None: all)
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

    def validate(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgument(
                None, f"unknown repair method '{self.method}' (use {', '.join(METHODS)})"
            )
        if self.init not in ("random", "linear"):
            raise InvalidArgument("init", f"init must be random or linear, got '{self.init}'")
        if self.t is not None and not 0.0 <= self.t <= 1.0:
            raise InvalidArgument("t", f"t must be in [0, 1], got {self.t}")
        if self.path_test_limit is not None and self.path_test_limit < 1:
            raise InvalidArgument(
                "path_test_limit", f"path_test_limit must be at least 1, got {self.path_test_limit}"
            )
        self.scan.validate()
        self.fst.validate()
        self.anp.validate()
        self.tsc.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_t(rows: Sequence[dict[str, float]], margin: float) -> tuple[float, str]:
    """Apply the repair rule to path rows (needs ``t`` and the held-out accuracy); (t, why).

    The point with the best held-out bonafide accuracy among those at least ``margin`` from both
    ends (ties: the one nearer the middle):

    >>> rows = [{"t": t, HOLDOUT: acc} for t, acc in [(0, .9), (.25, .8), (.5, .8), (.75, .7)]]
    >>> choose_t(rows, 0.25)[0]
    0.5
    """
    if not 0.0 < margin <= 0.5:
        raise InvalidArgument("margin", f"margin must be in (0, 0.5], got {margin}")
    inside = [r for r in rows if min(r["t"], 1.0 - r["t"]) >= margin - 1e-9]
    if not inside:
        raise InvalidArgument(
            None,
            f"no evaluated point lies at least {margin} from both endpoints; use more points",
        )
    best = max(inside, key=lambda r: (r[HOLDOUT], min(r["t"], 1.0 - r["t"])))
    return float(best["t"]), T_RULE.format(acc=best[HOLDOUT], margin=margin)


@dataclass
class Candidate:
    """One repaired (or reference) model and its evaluation figures."""

    name: str
    metrics: dict[str, float]
    detail: str = ""


def scan_figures(result: ScanResult) -> dict[str, float]:
    """A model's scan as candidate figures: the largest class anomaly index, the untargeted
    index (when the scan made one) and whether a backdoor was found (1.0 / 0.0)."""
    figures = {
        "max_anomaly_index": max(result.anomaly_index),
        "flagged": float(result.backdoor_found),
    }
    if result.untargeted_index is not None:
        figures["untargeted_index"] = result.untargeted_index
    return figures


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
    stage: TrainingRun | None = None,
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
    """The comparison table: clean and held-out accuracy, the attack's figure, the adaptive and
    retuning attacks' ASR and the scan's largest anomaly index, one row per model."""
    optional = ["eot_asr", "retuning_asr", "max_anomaly_index", "untargeted_index"]
    cols = (
        ["clean_acc", HOLDOUT]
        + ([key] if key else [])
        + [k for k in optional if any(k in c.metrics for c in candidates)]
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
    device,
    progress: bool,
    stage: TrainingRun | None = None,
) -> Curve:
    """``method="path"``: fit the curve between the tampered endpoints on the bonafide data."""
    curve_cfg = copy.deepcopy(config.path_curve)
    curve_cfg.seed = config.seed
    loader = data.train_loader(curve_cfg.batch_size, split="bonafide", device=device)
    return fit_curve(
        tampered.model,
        tampered.model.state_dict(),
        other.state_dict(),
        loader,
        curve_cfg,
        kind=config.path_kind,
        num_bends=config.num_bends,
        init="linear",
        init_points=random_interior_points(tampered, config) if config.init == "random" else None,
        run=stage,
        device=device,
        progress=progress,
    )


def run_baselines(
    tampered: Checkpoint,
    data: PreparedData,
    config: RepairConfig,
    metric,
    device,
    progress: bool,
    stages: StageFn | None = None,
) -> tuple[list[Candidate], list[dict[str, float]], dict[str, nn.Module]]:
    """Fine-tuning, training from scratch, noisy models, fine-pruning, FST and ANP on the same
    bonafide data.

    Fine-tuning and fine-pruning get the unlearning budget (fine-tuning is NC-unlearning without
    the stamps: the ablation of the scan); training from scratch gets ``scratch_epochs`` (at the
    unlearning budget it would be a straw man); FST gets the same 20 epochs at lr 0.01 (its
    ``config.fst``), ANP ``config.anp.steps`` mask rounds, its pruned count chosen on the held-out
    bonafide split. Returns the candidates, the noisy-model rows and the trained models by
    candidate name (for the retuning attack).
    """
    budget = config.unlearning.train_config(config.seed)
    scratch_budget = copy.deepcopy(budget)
    scratch_budget.epochs, scratch_budget.lr = config.scratch_epochs, 0.05
    loader = data.train_loader(budget.batch_size, split="bonafide", device=device)
    bn_loader = data.eval_loader("bonafide", device=device)

    def stage(name: str, cfg: TrainConfig = budget) -> TrainingRun | None:
        return stages(name, cfg) if stages is not None else None

    models: dict[str, nn.Module] = {}
    models[Names.FINE_TUNING] = fine_tune(
        tampered.model, loader, budget, device=device, progress=progress, run=stage("fine_tuning")
    )
    out = [
        evaluate_candidate(
            Names.FINE_TUNING,
            models[Names.FINE_TUNING],
            data,
            metric,
            device,
            f"{budget.epochs} epochs on bonafide",
        )
    ]
    models[Names.FROM_SCRATCH] = train_from_scratch(
        tampered.spec,
        loader,
        scratch_budget,
        device=device,
        progress=progress,
        run=stage("from_scratch", scratch_budget),
    )
    out.append(
        evaluate_candidate(
            Names.FROM_SCRATCH,
            models[Names.FROM_SCRATCH],
            data,
            metric,
            device,
            f"{scratch_budget.epochs} epochs on bonafide",
        )
    )

    def with_bn(m: nn.Module) -> nn.Module:
        update_bn(m, bn_loader, device)
        return m.eval()

    noisy_rows: list[dict[str, float]] = []
    for sigma in config.noise_sigmas:
        draws = noisy_models(tampered.model, sigma, config.noise_draws, config.seed, with_bn)
        mean = mean_candidate(
            Names.NOISY,
            [evaluate_candidate(Names.NOISY, m, data, metric, device) for m in draws],
            "",
        )
        noisy_rows.append({"sigma": sigma, **mean.metrics})
    # The same rule as for t: go as far from the tampered weights as held-out accuracy allows.
    ref = HOLDOUT_METRIC(tampered.model, data, device)[HOLDOUT]
    ok = [r for r in noisy_rows if r[HOLDOUT] >= ref - config.tolerance]
    pick = max(ok, key=lambda r: r["sigma"]) if ok else noisy_rows[0]
    out.append(
        Candidate(
            Names.NOISY,
            {k: v for k, v in pick.items() if k != "sigma"},
            f"σ={pick['sigma']} (largest within tolerance), mean of {config.noise_draws} draws",
        )
    )

    def add(name: str, build) -> None:
        """Build a baseline (``build()`` → model, detail) and evaluate it; a model the method
        cannot handle gets a "not applicable" row instead."""
        try:
            model, detail = build()
        except ModeconnError as err:
            out.append(Candidate(name, {}, f"not applicable: {err}"))
            return
        models[name] = model
        out.append(evaluate_candidate(name, model, data, metric, device, detail))

    def fine_pruning() -> tuple[nn.Module, str]:
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
        return pruned, f"{fraction:.0%} of last-conv channels pruned"

    def fst() -> tuple[nn.Module, str]:
        cfg = config.fst
        model = feature_shift_tuning(
            tampered.model,
            data.train_loader(cfg.batch_size, split="bonafide", device=device),
            cfg,
            seed=config.seed,
            device=device,
            progress=progress,
            run=stage("fst", cfg.train_config(config.seed)),
        )
        return model, f"head re-initialised, {cfg.epochs} epochs, α={cfg.alpha}"

    def anp() -> tuple[nn.Module, str]:
        cfg = config.anp
        model, info = adversarial_neuron_pruning(
            tampered.model,
            data.train_loader(cfg.batch_size, split="bonafide", device=device),
            data.eval_loader("bonafide_holdout", device=device),
            cfg,
            seed=config.seed,
            device=device,
            progress=progress,
        )
        return model, (
            f"{info['pruned']} of {info['neurons']} neurons pruned (held-out bonafide "
            f"within {cfg.tolerance:.0%})"
        )

    add(Names.FINE_PRUNING, fine_pruning)  # not applicable: e.g. a model with no convolution
    add(Names.FST, fst)  # a model without a linear head
    add(Names.ANP, anp)  # a model with nothing to mask
    return out, noisy_rows, models


def choose_candidate(
    candidates: Sequence[Candidate], verdicts: dict[str, ScanResult]
) -> tuple[Candidate, str]:
    """The trigger-free choice: the best held-out bonafide accuracy among the candidates in which
    the scan finds no backdoor (no flagged class, no universal label flipper); when every
    candidate is flagged, the least suspicious one, and the reason says so.

    Ties on accuracy go to the lower held-out loss (then the earlier candidate): 500 held-out
    images resolve accuracy to 0.2 points, and the demo's path repair and NC-unlearning tied on
    it in two of three scenarios (blend: 0.914 both; held-out loss 0.269 against 0.262, test
    accuracy 0.889 against 0.896)."""
    if not candidates:
        raise RuntimeError("no repair candidate was built")
    clean = [c for c in candidates if not verdicts[c.name].backdoor_found]
    if clean:
        best = max(
            clean,
            key=lambda c: (
                c.metrics[HOLDOUT],
                -c.metrics.get(HOLDOUT_LOSS, 0.0),
                -candidates.index(c),
            ),
        )
        return best, (
            f"{best.name}: the best held-out bonafide accuracy ({best.metrics[HOLDOUT]:.4f}) among "
            f"the {len(clean)} of {len(candidates)} candidates the scan does not flag"
        )
    best = min(candidates, key=lambda c: verdicts[c.name].suspicion)
    return best, (
        f"{best.name}: every candidate is flagged by the scan; this one is the least suspicious "
        f"({verdicts[best.name].verdict()}) — the repair may not have worked"
    )


class Repair:
    """One repair, one method per step; :meth:`run` does them in order and returns the result.

    Works in memory (models, loaders, scans); ``stages`` (optional) gives each training stage a
    run directory for its resumable state, which is all it knows of run directories.
    """

    def __init__(
        self,
        tampered: Checkpoint,
        second: Checkpoint | None,
        data: PreparedData,
        config: RepairConfig,
        attack: dict[str, Any] | None,
        device: torch.device,
        *,
        progress: bool = True,
        stages: StageFn | None = None,
    ) -> None:
        config.validate()
        self.tampered = tampered
        self.second = second
        self.data = data
        self.config = config
        self.attack = attack
        self.device = device
        self.progress = progress
        self.stages = stages
        self.metric = metric_from_attack_spec(attack) if attack else None
        self.key = attack_key(attack)
        self.scans: dict[str, ScanResult] = {}
        self.path_alignment = ""  # how the unlearning path's endpoint B was aligned, if it was
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()
        self._scan_x, self._scan_y = scan_images(data, config.scan.images, device)

    # --- bookkeeping -----------------------------------------------------------------------

    def lap(self, name: str) -> None:
        """Record the wall time since the previous lap under ``seconds_<name>``."""
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + round(now - self._clock, 1)
        self._clock = now

    def stage(self, name: str, config: TrainConfig) -> TrainingRun | None:
        return self.stages(name, config) if self.stages is not None else None

    # --- steps -----------------------------------------------------------------------------

    def scan(self, name: str, model: nn.Module) -> ScanResult:
        """Scan ``model`` on the bonafide scan images; remembered under ``name``."""
        result = scan_model(
            model, self._scan_x, self._scan_y, self.data.info.num_classes, self.config.scan
        )
        self.scans[name] = result
        return result

    def unlearn(self, model: nn.Module, scans: Sequence[ScanResult], name: str, seed: int):
        cfg = self.config.unlearning
        return unlearn(
            model,
            self.data,
            scans,
            cfg,
            seed=seed,
            device=self.device,
            progress=self.progress,
            run=self.stage(name, cfg.train_config(seed)),
            description=name.replace("_", " "),
        )

    def scan_endpoints(self) -> list[ScanResult]:
        """Scan A (and B): the verdicts behind every stamped batch."""
        scans = [self.scan(Names.TAMPERED, self.tampered.model)]
        if self.second is not None:
            scans.append(self.scan(Names.ENDPOINT_B, self.second.model))
        self.lap("scan")
        return scans

    def unlearnt_endpoints(self, scans: Sequence[ScanResult]) -> tuple[nn.Module, nn.Module]:
        """Unlearn A (and B) with the triggers of both endpoints' scans; the one-model set-up
        unlearns A again with another seed.

        The two tampered models of the paper's set-up carry the same attack, and one scan may
        see it more clearly than the other: on a blend pair, A's scan gave the target only a weak
        index (3.4) while B's gave it 4.6; A unlearnt with its own weak verdict (every class's
        triggers too) reached 0.871 / ASR 0.023, with both scans (the target's triggers only)
        0.894 / ASR 0.015 against 0.909 tampered. On a patch pair both scans were confident and
        the union changed nothing (0.895 / 0.016 either way).
        """
        a = self.unlearn(self.tampered.model, scans, "unlearn_a", self.config.seed)
        if self.second is not None:
            b = self.unlearn(self.second.model, scans, "unlearn_b", self.config.seed)
        else:
            b = self.unlearn(self.tampered.model, scans, "unlearn_b", self.config.seed + 1)
        self.lap("unlearning")
        return a, b

    def unlearning_path(
        self, a: nn.Module, b: nn.Module, scans: Sequence[ScanResult]
    ) -> tuple[Curve, list[dict[str, float]]]:
        """A curve between the unlearnt endpoints, trained on stamped bonafide batches; B's
        hidden units are first permuted onto A's (``align_endpoints``)."""
        cfg = copy.deepcopy(self.config.curve)
        cfg.seed = self.config.seed
        loader = unlearning_loader(
            self.data, scans, self.config.unlearning, cfg.seed, self.device, cfg.batch_size
        )
        end = self.aligned_endpoint(a, b) if self.config.align_endpoints else b.state_dict()
        curve = fit_curve(
            self.tampered.model,
            a.state_dict(),
            end,
            loader,
            cfg,
            kind=self.config.kind,
            num_bends=self.config.num_bends,
            init="linear",
            run=self.stage("curve", cfg),
            device=self.device,
            progress=self.progress,
        )
        rows = self.evaluate_path(curve)
        self.lap("curve_and_path")
        return curve, rows

    def aligned_endpoint(self, a: nn.Module, b: nn.Module) -> dict[str, torch.Tensor]:
        """B's state with its hidden units permuted onto A's by weight matching (the same
        function). Two independently trained lenets sit in different basins and the curve
        between their unlearnt versions dipped at its middle (patch: test accuracy 0.902 /
        0.854 / 0.905 at t = 0 / 0.5 / 1); aligned first, 0.894 / 0.888 / 0.896. A model without
        a permutation spec keeps B as it is (``path_alignment`` says so)."""
        state_a, state_b = a.state_dict(), b.state_dict()
        try:
            spec = permutation_spec(a)
        except ModeconnError as err:
            self.path_alignment = f"not aligned ({err})"
            return state_b
        perms = weight_matching(spec, state_a, state_b, seed=self.config.seed)
        self.path_alignment = "B aligned to A by weight matching"
        return apply_permutation(spec, state_b, perms)

    def symmetry_candidate(self, scans: Sequence[ScanResult]) -> nn.Module:
        """``method="tsc"``: TSC from the tampered A, its curves trained on the unlearning
        batches (``config.tsc.stamped``) or on plain bonafide batches (the paper)."""
        cfg = self.config.tsc
        batch = cfg.curve.batch_size
        if cfg.stamped:
            loader = unlearning_loader(
                self.data, scans, self.config.unlearning, self.config.seed, self.device, batch
            )
        else:
            loader = self.data.train_loader(batch, split="bonafide", device=self.device)
        model, _ = symmetry_connectivity(
            self.tampered.model,
            loader,
            self.data.eval_loader("bonafide", device=self.device),
            cfg,
            seed=self.config.seed,
            device=self.device,
            progress=self.progress,
            stage=self.stage,
        )
        self.lap("tsc")
        return model

    def scan_free_path(self) -> tuple[Curve, list[dict[str, float]]]:
        """``method="path"``: a curve between the tampered endpoints (Zhao et al.)."""
        other = (
            self.second.model
            if self.second is not None
            else make_second_endpoint(
                self.tampered,
                self.data,
                self.config,
                self.device,
                self.progress,
                self.stage("endpoint_b", self.config.finetune),
            )
        )
        self.lap("endpoint_b")
        curve = repair_path(
            self.tampered,
            other,
            self.data,
            self.config,
            self.device,
            self.progress,
            stage=self.stage("curve", self.config.path_curve),
        )
        rows = self.evaluate_path(curve)
        self.lap("curve_and_path")
        return curve, rows

    def evaluate_path(self, curve: Curve, points: int | None = None) -> list[dict[str, float]]:
        """The path table: held-out bonafide columns (the choice of t) and the test columns and
        attack figures, on ``path_test_limit`` stratified test images when set (the chosen
        point is evaluated on the whole test split afterwards, as every candidate is)."""
        n = points or self.config.points
        ts = [i / (n - 1) for i in range(n)]
        limit = self.config.path_test_limit
        metric = self.metric
        if limit is not None and isinstance(metric, AttackSuccessMetric):
            metric = copy.copy(metric)
            metric.limit = limit
        metrics = [HOLDOUT_METRIC] + ([metric] if metric is not None else [])
        return evaluate_path(
            curve,
            self.data,
            ts,
            bn_split="bonafide",
            metrics=metrics,
            device=self.device,
            test_limit=limit,
        )

    def point(self, curve: Curve, t: float) -> nn.Module:
        bn = self.data.eval_loader("bonafide", device=self.device)
        return curve.model_at(t, bn_loader=bn).to(self.device).eval()

    def evaluate(self, name: str, model: nn.Module, detail: str = "") -> Candidate:
        return evaluate_candidate(name, model, self.data, self.metric, self.device, detail)

    def retuning_asr(self, model: nn.Module) -> float | None:
        """ASR after the retuning attack (backdoors only; evaluation only)."""
        if not self.attack or self.attack.get("type") != "backdoor":
            return None
        from modeconn.attacks.backdoor import TriggerSpec

        cfg = copy.deepcopy(self.config.retuning)
        cfg.seed = self.config.seed
        spec = TriggerSpec.from_dict(self.attack)
        return retuning_attack_asr(model, self.data, spec, cfg, self.device)

    def verify(self, candidate: Candidate, model: nn.Module) -> None:
        """Scan a candidate (the choice's input) and add its retuning-attack ASR (report only)."""
        candidate.metrics.update(scan_figures(self.scan(candidate.name, model)))
        self.lap("verification_scans")
        retuned = self.retuning_asr(model)
        if retuned is not None:
            candidate.metrics["retuning_asr"] = retuned
        self.lap("retuning")

    # --- the whole repair ------------------------------------------------------------------

    def run(self) -> RepairResult:
        cfg = self.config
        wanted = Names.BY_METHOD[cfg.method]
        built: list[tuple[Candidate, nn.Module]] = []
        curve, rows, t, t_rule = None, [], None, ""
        if Names.PATH in wanted:
            curve, rows = self.scan_free_path()
        else:
            scans = self.scan_endpoints()
            if Names.UNLEARNING in wanted or Names.PATH_REPAIR in wanted:
                a, b = self.unlearnt_endpoints(scans)
            if Names.UNLEARNING in wanted:
                built.append((self.evaluate(Names.UNLEARNING, a, "A unlearnt"), a))
            if Names.PATH_REPAIR in wanted:
                curve, rows = self.unlearning_path(a, b, scans)
            if Names.TSC in wanted:
                tsc = self.symmetry_candidate(scans)
                detail = f"two stages at t={cfg.tsc.t}, {cfg.tsc.rounds} round(s)"
                detail += ", stamped batches" if cfg.tsc.stamped else ", plain bonafide batches"
                built.append((self.evaluate(Names.TSC, tsc, detail), tsc))
        if curve is not None:
            t, t_rule = (cfg.t, "given") if cfg.t is not None else choose_t(rows, cfg.margin)
            name = Names.PATH_REPAIR if Names.PATH_REPAIR in wanted else Names.PATH
            model = self.point(curve, t)
            detail = f"t={t:.2f}" + (f"; {self.path_alignment}" if self.path_alignment else "")
            cand = self.evaluate(name, model, detail)
            if cfg.eot and self.attack:
                eot = eot_attack_success(curve, t, self.data, self.attack, cfg, self.device)
                if eot is not None:
                    cand.metrics["eot_asr"] = eot
            built.insert(0, (cand, model))
        self.lap("evaluation_and_eot")
        for cand, model in built:
            self.verify(cand, model)
        chosen, why = choose_candidate([c for c, _ in built], self.scans)
        chosen_model = next(m for c, m in built if c is chosen)
        tampered_models = [(Names.TAMPERED, self.tampered.model, "")]
        if self.second is not None:
            tampered_models.append((Names.ENDPOINT_B, self.second.model, "second model"))
        if Names.TAMPERED not in self.scans:  # method "path" has not scanned it yet
            self.scan(Names.TAMPERED, self.tampered.model)
            self.lap("verification_scans")
        references = []
        for name, model, detail in tampered_models:
            ref = self.evaluate(name, model, detail)
            references.append(ref)
            retuned = self.retuning_asr(model)
            if retuned is not None:
                ref.metrics["retuning_asr"] = retuned
            if ref.name in self.scans:
                ref.metrics.update(scan_figures(self.scans[ref.name]))
        self.lap("references")  # the tampered models' evaluation and retuning attack
        baselines: list[Candidate] = []
        noisy_rows: list[dict[str, float]] = []
        if cfg.baselines:
            baselines, noisy_rows, models = run_baselines(
                self.tampered, self.data, cfg, self.metric, self.device, self.progress, self.stages
            )
            for cand in baselines:
                model = models.get(cand.name)
                retuned = self.retuning_asr(model) if model is not None else None
                if retuned is not None:
                    cand.metrics["retuning_asr"] = retuned
            self.lap("baselines")
        return RepairResult(
            chosen=chosen,
            chosen_model=chosen_model,
            choice_rule=why,
            candidates=[c for c, _ in built],
            references=references,
            baselines=baselines,
            scans=dict(self.scans),
            curve=curve,
            rows=rows,
            t=t,
            t_rule=t_rule,
            noisy_rows=noisy_rows,
            timings=dict(self.timings),
        )


@dataclass
class RepairResult:
    """What a repair produced: the chosen model, every candidate and baseline with its figures,
    the scans behind the choice, the path (when one was trained) and the step timings."""

    chosen: Candidate
    chosen_model: nn.Module
    choice_rule: str
    candidates: list[Candidate]
    references: list[Candidate]
    baselines: list[Candidate]
    scans: dict[str, ScanResult]
    curve: Curve | None
    rows: list[dict[str, float]]
    t: float | None
    t_rule: str
    noisy_rows: list[dict[str, float]]
    timings: dict[str, float]

    @property
    def table(self) -> list[Candidate]:
        """Every row of the comparison: references, candidates, baselines."""
        return [*self.references, *self.candidates, *self.baselines]


def load_repair_inputs(
    model_paths: Sequence[str | Path],
    config: RepairConfig,
    data: DataConfig | None,
    device: torch.device,
) -> tuple[Checkpoint, Checkpoint | None, DataConfig, PreparedData]:
    """Load the tampered model(s) and draw the bonafide split; one clear line on bad input."""
    if not 1 <= len(model_paths) <= 2:
        raise ModeconnError("repair takes one or two models")
    tampered = load_model(model_paths[0], device=device)
    second = load_model(model_paths[1], device=device) if len(model_paths) == 2 else None
    if second is not None and second.spec.to_dict() != tampered.spec.to_dict():
        raise ModeconnError(
            f"{model_paths[0]} ({tampered.spec.arch}) and {model_paths[1]} "
            f"({second.spec.arch}) are different architectures"
        )
    data = copy.deepcopy(data) if data is not None else DataConfig(dataset=None)
    if not data.dataset:  # None or "": the data set the model was trained on, from its sidecar
        data.dataset = tampered.dataset or "fashion-mnist"
    data.bonafide, data.holdout_fraction = config.bonafide, config.holdout_fraction
    data.seed, data.augment = config.seed, False
    prepared = prepare_data(data)
    check_compatible(tampered.spec, prepared, str(model_paths[0]))
    return tampered, second, data, prepared


def sweep_repairs(
    tampered: Checkpoint,
    second: Checkpoint | None,
    data: DataConfig,
    config: RepairConfig,
    device,
    progress: bool,
    attack,
    stages: StageFn | None = None,
) -> list[dict[str, float]]:
    """Repair again with several bonafide sizes (same method and rule, no baselines, no EOT,
    fewer path points); one row per size with the chosen candidate's figures."""
    rows = []
    for n in config.sweep:
        cfg = copy.deepcopy(config)
        cfg.bonafide, cfg.baselines, cfg.eot, cfg.points = n, False, False, 11
        sub = copy.deepcopy(data)
        sub.bonafide = n
        prepared = prepare_data(sub)
        prefixed = None
        if stages is not None:

            def prefixed(name: str, train_cfg: TrainConfig, n: int = n) -> TrainingRun | None:
                return stages(f"sweep{n}_{name}", train_cfg)

        result = Repair(
            tampered, second, prepared, cfg, attack, device, progress=progress, stages=prefixed
        ).run()
        key = attack_key(attack)
        entry = {"bonafide": n, "clean_acc": result.chosen.metrics["clean_acc"]}
        if result.t is not None:
            entry["t"] = result.t
        if key:
            entry[key] = result.chosen.metrics[key]
        for cand in result.candidates:
            entry[f"{slug(cand.name)}_clean_acc"] = cand.metrics["clean_acc"]
            if key:
                entry[f"{slug(cand.name)}_{key}"] = cand.metrics[key]
        rows.append(entry)
    return rows


__all__ = [
    "Names",
    "Repair",
    "RepairConfig",
    "RepairResult",
    "choose_candidate",
    "choose_t",
    "load_repair_inputs",
    "sweep_repairs",
]
