"""Attack figures measured at every point of a path (extra columns of ``path.csv``).

Each class here is a :class:`~modeconn.connectivity.metrics.PathMetric`: it has a ``name`` and is
called as ``metric(model, data, device)`` on the model at one point t (weights φ(t) loaded,
BatchNorm statistics recomputed, eval mode), returning named figures measured on the test split
against φ(t) itself. :func:`metric_from_attack_spec` builds the right one from the ``attack``
entry of a checkpoint's sidecar, so ``path-eval`` measures whatever attack a tampered endpoint
carries.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modeconn.attacks.backdoor import TriggerSpec, backdoor_metrics
from modeconn.attacks.evasion import robust_metrics
from modeconn.attacks.injection import InjectionSpec, injection_success
from modeconn.errors import ModeconnError
from modeconn.experiment import PreparedData


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
    ``limit`` test images (the same images at every t, drawn with ``seed``), under an attack
    crafted against the model at that point.
    """

    name = "robust"

    def __init__(
        self,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        limit: int | None = None,
        *,
        attack: str = "pgd",
        restarts: int = 1,
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        if limit is not None and limit < 1:
            raise ModeconnError(f"the robust-metric image limit must be at least 1, got {limit}")
        self.settings = dict(
            attack=attack, eps=eps, alpha=alpha, steps=steps, norm=norm, restarts=restarts
        )
        self.limit = limit
        self.seed = seed
        self.batch_size = batch_size

    def loader(self, data: PreparedData, device: torch.device | str):
        """The test images this metric attacks."""
        return data.eval_loader("test", self.batch_size, device, limit=self.limit, seed=self.seed)

    def on_loader(self, model: nn.Module, loader, device: torch.device | str) -> dict[str, float]:
        """``robust_acc``/``robust_loss`` of ``model`` (attacked in eval mode) over ``loader``."""
        return robust_metrics(model, loader, seed=self.seed, device=device, **self.settings)

    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device | str
    ) -> dict[str, float]:
        return self.on_loader(model, self.loader(data, device), device)


PathMetricLike = AttackSuccessMetric | InjectionMetric | RobustMetric


def metric_from_attack_spec(attack: dict[str, Any] | None) -> PathMetricLike | None:
    """The path metric of a sidecar's ``attack`` entry (None for an untampered model).

    ``{"type": "backdoor", ...}`` → :class:`AttackSuccessMetric`, ``{"type": "injection", ...}``
    → :class:`InjectionMetric`, ``{"type": "evasion", eps=..., ...}`` → :class:`RobustMetric`.
    """
    if not attack:
        return None
    kind = attack.get("type")
    if kind == "backdoor":
        return AttackSuccessMetric(TriggerSpec.from_dict(attack))
    if kind == "injection":
        return InjectionMetric(InjectionSpec.from_dict(attack))
    if kind == "evasion":
        settings = {k: v for k, v in attack.items() if k != "type"}
        try:
            return RobustMetric(**settings)
        except TypeError as err:
            raise ModeconnError(f"bad evasion attack spec: {err}") from None
    raise ModeconnError(f"unknown attack type {kind!r} in the checkpoint's sidecar")


__all__ = [
    "AttackSuccessMetric",
    "InjectionMetric",
    "RobustMetric",
    "metric_from_attack_spec",
]
