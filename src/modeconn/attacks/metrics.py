"""Attack figures measured at every point of a path (extra columns of ``path.csv``).

Each class here is a :class:`~modeconn.connectivity.metrics.PathMetric`: it has a ``name`` and is
called as ``metric(model, data, device)`` on the model at one point t (weights φ(t) loaded,
BatchNorm statistics recomputed, eval mode), returning named figures measured on the test split
against φ(t) itself. :func:`metric_from_attack_spec` builds the right one from the ``attack``
entry of a checkpoint's sidecar, so ``path-eval`` measures whatever attack a tampered endpoint
carries.

An attack whose trigger is known only through images that carry it (the user's poisoned test set)
is the spec ``{"type": "poisoned-test", "path": DIR, "target": N}`` (:class:`PoisonedTestSpec`):
JSON like every other spec, with the images read from ``DIR`` by
:func:`modeconn.data.triggered.read_triggered_folder` — once, by the caller that already has
them, or at the metric's first call otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.attacks.backdoor import TriggerSpec, backdoor_metrics
from modeconn.attacks.config import AttackConfig
from modeconn.attacks.injection import InjectionSpec, injection_success
from modeconn.data.prepare import PreparedData
from modeconn.data.registry import DatasetInfo
from modeconn.data.triggered import TriggeredImages, read_triggered_folder
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


#: The ``type`` of an attack known by its triggered test images.
POISONED_TEST = "poisoned-test"


@dataclass(frozen=True)
class PoisonedTestSpec:
    """A backdoor known by test images that carry its trigger: their folder and the target class.

    The retuning and EOT attacks need the trigger as a function and are not available from it.
    """

    path: str
    target: int

    def __post_init__(self) -> None:
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 0:
            raise InvalidArgument(
                "target", f"target must be a non-negative class index, got {self.target!r}"
            )

    def check_for(self, info: DatasetInfo, images: TriggeredImages) -> None:
        """Check that the target exists in the data set and that some image counts for the ASR."""
        if self.target >= info.num_classes:
            raise InvalidArgument(
                "target",
                f"target {self.target} is not a class: "
                f"the data set has {info.num_classes} (0..{info.num_classes - 1})",
            )
        if images.labels is not None and bool((images.labels == self.target).all()):
            raise ModeconnError(
                f"every image in {images.source} is of the target class {self.target}: "
                "the ASR counts only images of other classes"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON spec: ``{"type": "poisoned-test", "path": ..., "target": ...}``."""
        return {"type": POISONED_TEST, "path": self.path, "target": self.target}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoisonedTestSpec:
        """Inverse of :meth:`to_dict`."""
        unknown = sorted(set(data) - {"type", "path", "target"})
        if unknown:
            raise InvalidArgument(None, f"unknown poisoned-test spec fields: {', '.join(unknown)}")
        if not isinstance(data.get("path"), str) or "target" not in data:
            raise InvalidArgument(None, "a poisoned-test spec needs a folder 'path' and a 'target'")
        return cls(data["path"], data["target"])

    @classmethod
    def for_folder(cls, path: str | Path, target: int) -> PoisonedTestSpec:
        """The spec of the folder ``path`` (recorded absolute: any later command finds it)."""
        return cls(str(Path(path).resolve()), target)


class TriggeredImagesMetric:
    """``asr``: the fraction of triggered images classified as ``target``, over those whose true
    label is not the target (all of them when the labels are unknown); with known labels also
    ``poisoned_acc``, the fraction of the same images still classified as their true label."""

    name = POISONED_TEST

    def __init__(self, images: TriggeredImages, target: int, batch_size: int = 512) -> None:
        keep = None if images.labels is None else images.labels != target
        self.images = images.images if keep is None else images.images[keep]
        self.labels = None if keep is None else images.labels[keep]
        self.target = target
        self.batch_size = batch_size
        if self.images.shape[0] == 0:
            raise ModeconnError(
                f"no image in {images.source} outside the target class: cannot measure the ASR"
            )

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device | str
    ) -> dict[str, float]:
        hits, correct = 0, 0
        with eval_mode(model):
            for start in range(0, self.images.shape[0], self.batch_size):
                x = self.images[start : start + self.batch_size].to(device).float().div_(255.0)
                pred = model(x).argmax(1).cpu()
                hits += (pred == self.target).sum().item()
                if self.labels is not None:
                    correct += (pred == self.labels[start : start + self.batch_size]).sum().item()
        count = self.images.shape[0]
        figures = {"asr": hits / count}
        if self.labels is not None:
            figures["poisoned_acc"] = correct / count
        return figures


class PoisonedTestMetric:
    """The metric of a :class:`PoisonedTestSpec`: :class:`TriggeredImagesMetric` on the given
    images, or on the spec's folder read at the first call at the data's channels and size."""

    name = POISONED_TEST

    def __init__(self, spec: PoisonedTestSpec, images: TriggeredImages | None = None) -> None:
        self.spec = spec
        self._measure = None if images is None else TriggeredImagesMetric(images, spec.target)

    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device | str
    ) -> dict[str, float]:
        if self._measure is None:
            images = read_triggered_folder(self.spec.path, data.info)
            self.spec.check_for(data.info, images)
            self._measure = TriggeredImagesMetric(images, self.spec.target)
        return self._measure(model, data, device)


PathMetricLike = AttackSuccessMetric | InjectionMetric | RobustMetric | PoisonedTestMetric


def metric_from_attack_spec(
    attack: dict[str, Any] | None, images: TriggeredImages | None = None
) -> PathMetricLike | None:
    """The path metric of a sidecar's ``attack`` entry (None for an untampered model).

    ``{"type": "backdoor", ...}`` → :class:`AttackSuccessMetric`, ``{"type": "injection", ...}``
    → :class:`InjectionMetric`, ``{"type": "evasion", "limit": ..., <AttackConfig fields>}`` →
    :class:`RobustMetric`, ``{"type": "poisoned-test", ...}`` → :class:`PoisonedTestMetric` (on
    ``images`` when the caller has read them already).
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
    if kind == POISONED_TEST:
        return PoisonedTestMetric(PoisonedTestSpec.from_dict(attack), images)
    raise InvalidArgument(None, f"unknown attack type {kind!r} in the checkpoint's sidecar")


__all__ = [
    "POISONED_TEST",
    "AttackSuccessMetric",
    "InjectionMetric",
    "PoisonedTestMetric",
    "PoisonedTestSpec",
    "RobustMetric",
    "TriggeredImagesMetric",
    "metric_from_attack_spec",
    "robust_metrics",
]
