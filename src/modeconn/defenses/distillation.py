"""Unlearning by distillation from the tampered model itself: keep what it knows, drop the trigger.

NC-unlearning fine-tunes on bonafide images with their hard labels, a share of them stamped with
the scan's synthesized triggers. With a few hundred images or fewer, the hard labels are all the
model is told, and it forgets much of what it learnt from the attacker's far larger training set
(patch pair of the demo, 50 bonafide images: 0.763 against 0.907 tampered). Here the tampered
model is the teacher instead: on a clean image its answer is still good (the backdoor only fires
on the trigger), so every image — clean or stamped — is taught the teacher's softened answer on
the *clean* version of that image:

    loss = T² · KL(softmax(f_θ(stamp(x))/T) ‖ softmax(f_bd(x)/T)) + ce · CE(f_θ(stamp(x)), y)

The stamped share follows the unlearning rule (:func:`modeconn.defenses.unlearning.
unlearning_transform`), and the batches are augmented: the teacher labels every augmented view,
so a few dozen images give many distinct targets (probe: ``benchmarks/probes/small_data.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.training import Objective


@dataclass(frozen=True)
class DistillationConfig:
    """The distillation loss (``temperature``, ``ce``) and the fewest optimiser steps it takes:
    20 epochs are 20 steps at 50 images, too few to move the model (probe: 300 steps)."""

    temperature: float = 4.0
    ce: float = 0.2
    min_steps: int = 300

    def epochs(self, epochs: int, images: int, batch_size: int) -> int:
        """``epochs``, raised so that ``images`` in batches of ``batch_size`` take at least
        ``min_steps`` steps.

        >>> DistillationConfig().epochs(20, 40, 128), DistillationConfig().epochs(20, 2000, 128)
        (300, 20)
        """
        per_epoch = max(1, math.ceil(images / batch_size))
        return max(epochs, math.ceil(self.min_steps / per_epoch))

    def validate(self) -> None:
        if self.temperature <= 0 or self.ce < 0 or self.min_steps < 0:
            raise ValueError(
                "distillation needs temperature > 0, ce ≥ 0 and min_steps ≥ 0, got "
                f"{self.temperature}, {self.ce} and {self.min_steps}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DistillationUnlearning(Objective):
    """The loss above; ``stamp(x, y) -> (x', y)`` stamps part of a batch (the unlearning
    transform), ``teacher`` is a frozen copy of the tampered model."""

    def __init__(
        self, teacher: nn.Module, stamp, temperature: float = 4.0, ce: float = 0.2
    ) -> None:
        if temperature <= 0 or ce < 0:
            raise ValueError(f"need temperature > 0 and ce ≥ 0, got {temperature} and {ce}")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.stamp = stamp
        self.temperature = temperature
        self.ce = ce

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stamp part of the clean batch, then match the teacher's answer on the clean images."""
        t = self.temperature
        with torch.no_grad():
            soft = F.softmax(self.teacher(x) / t, dim=1)
        stamped, _ = self.stamp(x.clone(), y)
        logits = model(stamped)
        kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean")
        return kd * t * t + self.ce * F.cross_entropy(logits, y), logits


__all__ = ["DistillationConfig", "DistillationUnlearning"]
