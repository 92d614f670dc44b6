"""How a repair's rows are measured: clean and held-out accuracy, the attack's figure, the scan's
figures and the adaptive EOT attack on a path.

Everything that needs the attack's true trigger (ASR, EOT, the retuning attack of
:mod:`modeconn.defenses.retuning`) is measured for the report only; the choice never reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modeconn.attacks.backdoor import TriggerSpec, apply_trigger, target_labels
from modeconn.attacks.evasion import RandomPointModel, pgd
from modeconn.attacks.metrics import metric_from_attack_spec
from modeconn.connectivity import Curve
from modeconn.data.prepare import PreparedData
from modeconn.data.triggered import TriggeredImages
from modeconn.defenses.repair.choice import HOLDOUT_METRIC
from modeconn.defenses.repair.results import Candidate
from modeconn.defenses.scan import ScanResult
from modeconn.training import evaluate_model


@dataclass(frozen=True)
class AttackUnderTest:
    """The attack a repair is evaluated against, parsed once from its spec: the path metric, the
    metric's summary key and, for a backdoor, its trigger (EOT and retuning attacks)."""

    spec: dict[str, Any] | None
    metric: Any
    key: str | None
    trigger: TriggerSpec | None

    @classmethod
    def parse(
        cls, spec: dict[str, Any] | None, images: TriggeredImages | None = None
    ) -> AttackUnderTest:
        """The attack of ``spec`` (None: unknown, nothing measured). A ``poisoned-test`` spec
        measures the ASR on its triggered images (``images`` when already read) and has no
        trigger function, so the EOT and retuning attacks are skipped for it."""
        if not spec:
            return cls(None, None, None, None)
        kind = spec.get("type")
        trigger = TriggerSpec.from_dict(spec) if kind == "backdoor" else None
        key = "injection_success" if kind == "injection" else "asr"
        return cls(spec, metric_from_attack_spec(spec, images), key, trigger)


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
    """One row whose figures are the means of ``parts``' figures."""
    keys = parts[0].metrics.keys()
    return Candidate(name, {k: sum(p.metrics[k] for p in parts) / len(parts) for k in keys}, detail)


@dataclass(frozen=True)
class EOTSettings:
    """The adaptive attack's budget: L∞ radius, PGD steps, curve points per gradient, images."""

    eps: float = 0.1
    steps: int = 10
    samples: int = 4
    limit: int = 500
    seed: int = 0


def eot_attack_success(
    curve: Curve,
    t_center: float,
    data: PreparedData,
    trigger: TriggerSpec,
    settings: EOTSettings,
    device,
) -> float:
    """Adaptive attack on the repaired model by someone who knows the defence.

    Triggered, non-target test images are pushed towards the backdoor's labels by targeted L∞ PGD
    whose gradients average over random points of the curve around the chosen t (expectation over
    transformation); the figure is the fraction the repaired model sends to the target.
    """
    torch.manual_seed(settings.seed)  # PGD's random starts: the same figure after a --resume
    bn = data.eval_loader("bonafide", device=device)
    spread = [min(max(t_center + d, 0.0), 1.0) for d in (-0.1, -0.05, 0.0, 0.05, 0.1)]
    points = [curve.model_at(t, bn_loader=bn).to(device).eval() for t in spread]
    repaired = points[2]
    sampler = RandomPointModel(points)
    images, labels = data.tensors("test")
    idx = data.indices("test")
    classes = data.info.num_classes
    keep = idx[target_labels(labels[idx], trigger, classes) != labels[idx]][: settings.limit]
    hit = 0
    for start in range(0, len(keep), 256):
        sel = keep[start : start + 256]
        x = images[sel].float().div(255).to(device)
        goal = target_labels(labels[sel].to(device), trigger, classes)
        adv = pgd(
            sampler,
            apply_trigger(x, trigger),
            goal,
            eps=settings.eps,
            alpha=settings.eps / 4,
            steps=settings.steps,
            targeted=True,
            eot_samples=settings.samples,
        )
        with torch.no_grad():
            hit += (repaired(adv).argmax(1) == goal).sum().item()
    return hit / max(len(keep), 1)
