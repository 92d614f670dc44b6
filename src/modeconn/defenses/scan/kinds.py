"""Synthesized triggers: one per class, of one kind (mask and pattern, or a perturbation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

TRIGGER_KINDS = ("mask", "perturbation")


@dataclass
class TriggerSet:
    """One synthesized trigger per class.

    ``kind == "mask"``: ``mask`` (K×1×H×W) and ``pattern`` (K×C×H×W) in [0, 1];
    ``kind == "perturbation"``: ``delta`` (K×C×H×W). ``size`` is ‖m‖₁ or ‖δ‖₂ per class and
    ``success`` the fraction of other-class images the trigger sent to its class.
    ``untargeted``: one universal trigger (K = 1) that moves images of every class away from their
    label; :meth:`apply` stamps it whatever class it is given.
    """

    kind: str
    size: torch.Tensor
    success: torch.Tensor
    mask: torch.Tensor | None = None
    pattern: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    untargeted: bool = False

    @property
    def num_classes(self) -> int:
        return int(self.size.numel())

    def apply(self, x: torch.Tensor, classes: torch.Tensor | int) -> torch.Tensor:
        """Stamp images ``x`` (N×C×H×W in [0, 1]) with the trigger of ``classes`` (N or one)."""
        k = torch.as_tensor(classes, device=x.device).long().expand(x.shape[0])
        if self.untargeted:
            k = torch.zeros_like(k)
        if self.kind == "mask":
            m = self.mask.to(x.device)[k]
            return (1 - m) * x + m * self.pattern.to(x.device)[k]
        return (x + self.delta.to(x.device)[k]).clamp(0, 1)

    def scaled(self, factor: float) -> TriggerSet:
        """The same triggers ``factor`` times stronger (mask clipped to [0, 1], δ scaled).

        Synthesis keeps the *smallest* trigger that works, which is often only part of the real
        one; unlearning a stronger version covers more of it.
        """
        if self.kind == "mask":
            return TriggerSet(
                self.kind,
                self.size,
                self.success,
                mask=(self.mask * factor).clamp(0, 1),
                pattern=self.pattern,
                untargeted=self.untargeted,
            )
        return TriggerSet(
            self.kind,
            self.size,
            self.success,
            delta=self.delta * factor,
            untargeted=self.untargeted,
        )

    def image(self, k: int) -> torch.Tensor:
        """What the trigger of class ``k`` looks like (C×H×W in [0, 1]), for figures."""
        if self.kind == "mask":
            return self.mask[k] * self.pattern[k]
        d = self.delta[k]
        scale = d.abs().max().clamp_min(1e-12)
        return 0.5 + 0.5 * d / scale
