"""Attack figures measured at every point of a path (extra columns of ``path.csv``).

Each class here is a :class:`~modeconn.connectivity.metrics.PathMetric`: it has a ``name`` and is
called as ``metric(model, data, device)`` on the model at one point t (weights φ(t) loaded,
BatchNorm statistics recomputed, eval mode), returning named figures measured on the test split
against φ(t) itself. :func:`metric_from_attack_spec` builds the right one from the ``attack``
entry of a checkpoint's sidecar, so ``path-eval`` measures whatever attack a tampered endpoint
carries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.attacks.backdoor import TriggerSpec, backdoor_metrics
from modeconn.attacks.config import AttackConfig
from modeconn.attacks.injection import InjectionSpec, injection_success
from modeconn.data.prepare import PreparedData
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.modes import eval_mode


def robust_metrics(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    attack: AttackConfig | None = None,
    *,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Robust accuracy and robust loss of ``model`` over ``loader`` under ``attack``
    (PGD, 8/255 L∞, 10 steps by default).

    Adversarial examples are crafted against ``model`` itself (in eval mode; its mode is restored
    afterwards); ``robust_loss`` is the mean cross-entropy on them and ``robust_acc`` the fraction
    still classified correctly.
    """
    run = (attack or AttackConfig()).build()
    loss_sum, correct, count = 0.0, 0, 0
    with eval_mode(model):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            x_adv = run(model, x, y)
            with torch.no_grad():
                logits = model(x_adv)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            count += y.shape[0]
    if count == 0:
        raise ModeconnError("cannot attack an empty data set")
    return {"robust_acc": correct / count, "robust_loss": loss_sum / count}


class AttackSuccessMetric:
    """``asr`` and ``poisoned_acc`` of a backdoor on the test split, or on a class-stratified
    subset of ``limit`` test images (the data's seed: the same images at every t)."""

    name = "backdoor"

    def __init__(self, spec: TriggerSpec, batch_size: int = 512, limit: int | None = None) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.limit = limit

    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device | str
    ) -> dict[str, float]:
        loader = data.eval_loader("test", self.batch_size, device, limit=self.limit)
        return backdoor_metrics(model, loader, self.spec, device)


class InjectionMetric:
    """``injection_success``: the fraction of the injected images at their injected labels."""

    name = "injection"

    def __init__(self, spec: InjectionSpec) -> None:
        self.spec = spec

    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device | str
    ) -> dict[str, float]:
        return {"injection_success": injection_success(model, data, self.spec, device)}


class RobustMetric:
    """``robust_loss`` and ``robust_acc`` on the test split, or on a stratified subset of
    ``limit`` test images (the same images at every t, drawn with the attack's seed), under
    ``attack`` crafted against the model at that point.
    """

    name = "robust"

    def __init__(
        self,
        attack: AttackConfig | None = None,
        limit: int | None = None,
        *,
        batch_size: int = 256,
    ) -> None:
        if limit is not None and limit < 1:
            raise InvalidArgument("limit", f"limit must be at least 1, got {limit}")
        if batch_size < 1:
            raise InvalidArgument("batch_size", f"batch_size must be at least 1, got {batch_size}")
        self.attack = (attack or AttackConfig()).validate()
        self.limit = limit
        self.batch_size = batch_size

    def loader(self, data: PreparedData, device: torch.device | str):
        """The test images this metric attacks."""
        return data.eval_loader(
            "test", self.batch_size, device, limit=self.limit, seed=self.attack.seed
        )

    def on_loader(self, model: nn.Module, loader, device: torch.device | str) -> dict[str, float]:
        """``robust_acc``/``robust_loss`` of ``model`` (attacked in eval mode) over ``loader``."""
        return robust_metrics(model, loader, self.attack, device=device)

    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device | str
    ) -> dict[str, float]:
        return self.on_loader(model, self.loader(data, device), device)


PathMetricLike = AttackSuccessMetric | InjectionMetric | RobustMetric


def metric_from_attack_spec(attack: dict[str, Any] | None) -> PathMetricLike | None:
    """The path metric of a sidecar's ``attack`` entry (None for an untampered model).

    ``{"type": "backdoor", ...}`` → :class:`AttackSuccessMetric`, ``{"type": "injection", ...}``
    → :class:`InjectionMetric`, ``{"type": "evasion", "limit": ..., <AttackConfig fields>}`` →
    :class:`RobustMetric`.
    """
    if not attack:
        return None
    kind = attack.get("type")
    if kind == "backdoor":
        return AttackSuccessMetric(TriggerSpec.from_dict(attack))
    if kind == "injection":
        return InjectionMetric(InjectionSpec.from_dict(attack))
    if kind == "evasion":
        settings = {k: v for k, v in attack.items() if k not in ("type", "limit")}
        return RobustMetric(AttackConfig.from_dict(settings), limit=attack.get("limit"))
    raise InvalidArgument(None, f"unknown attack type {kind!r} in the checkpoint's sidecar")


__all__ = [
    "AttackSuccessMetric",
    "InjectionMetric",
    "RobustMetric",
    "metric_from_attack_spec",
    "robust_metrics",
]
