"""Path-aware minimization (PAM; Min et al., NeurIPS 2024) around any training objective.

Min et al. explain superficial purification with mode connectivity: along the straight line from
a purified model back to the backdoored one, a superficially purified model stays in the
backdoored basin (the backdoor returns after a short step back), a deeply purified one does not.
PAM takes each step's gradient not at the current weights θ but at

    θ + ρ · (θ_bd − θ) / ‖θ_bd − θ‖,

a point ρ further along that line, and applies it at θ — so that the purifying loss is low on a
stretch of the line towards the backdoored model as well, and the region free of the backdoor
extends back along it. Here it wraps the objective of trigger unlearning (the scan's stamped
batches, true labels kept): a sharpness-aware step whose direction is the backdoored model's.

The shift is added before the loss and taken off right after the optimiser step (the training
loop's hooks), so the step lands where it would have without it.
"""

from __future__ import annotations

import torch
from torch import nn

from modeconn.training import Objective


class PathAwareObjective(Objective):
    """``inner``'s loss (cross-entropy by default) evaluated ``rho`` towards ``tampered`` along
    the straight line; the model's parameters must match ``tampered``'s one for one."""

    def __init__(self, tampered: nn.Module, rho: float, inner: Objective | None = None) -> None:
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        self.anchor = [p.detach().clone() for p in tampered.parameters()]
        self.rho = rho
        self.inner = inner or Objective()
        self._shift: list[torch.Tensor] = []

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift the weights ``rho`` towards the tampered model, then the inner loss there."""
        params = list(model.parameters())
        with torch.no_grad():
            away = [a.to(p.device) - p for p, a in zip(params, self.anchor, strict=True)]
            norm = torch.sqrt(sum((d * d).sum() for d in away))
            scale = self.rho / (float(norm) + 1e-12)
            self._shift = [d * scale for d in away]
            for p, s in zip(params, self._shift, strict=True):
                p.add_(s)
        return self.inner.loss(model, x, y)

    def start_epoch(self, epoch: int, model: nn.Module) -> None:
        self.inner.start_epoch(epoch, model)

    def after_step(self, model: nn.Module) -> None:
        """Take the shift off again (the step itself stays)."""
        with torch.no_grad():
            for p, s in zip(model.parameters(), self._shift, strict=True):
                p.sub_(s)
        self._shift = []
        self.inner.after_step(model)


__all__ = ["PathAwareObjective"]
