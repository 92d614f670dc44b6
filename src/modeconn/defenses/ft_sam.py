"""FT-SAM (Zhu et al., ICCV 2023): fine-tuning with sharpness-aware minimization as a backdoor
defense.

Plain fine-tuning on a little clean data barely moves a backdoored model: the weights stay in
the basin where the backdoor works. Zhu et al. observe that the neurons the backdoor relies on
have large norms and that sharpness-aware minimization shrinks them; SAM also pushes the weights
out of sharp regions, which the clean data alone does not reach. Each step takes the gradient
g at θ, moves the weights to the worst nearby point

    θ + ε,  ε = ρ · g / ‖g‖                    (plain SAM)
    θ + ε,  ε = ρ · T²g / ‖Tg‖,  T = |θ|        (adaptive SAM, ASAM: the default)

takes the loss and its gradient there and applies that gradient at θ. The adaptive form scales
the neighbourhood with each weight's magnitude, which is what lets FT-SAM use a large ρ (2.0)
without destroying the clean accuracy; BackdoorBench's reference setting (``defense/ft-sam``)
is adaptive, ρ = 2, label smoothing 0.1, SGD lr 0.01 with momentum 0.9 and weight decay 5e-4.

The training goes through the one training loop: :meth:`SharpnessAwareObjective.loss` takes
the first gradient, moves the weights and returns the loss at θ + ε (whose backward pass is the
loop's); ``after_step`` takes ε off again, so the step lands where SAM's would. BatchNorm running
statistics are updated by the first pass only. The optimiser's weight decay sees θ + ε instead
of θ, a difference of lr·wd·ε in a step (5e-6·ε at the defaults).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.distributed import unwrap
from modeconn.errors import InvalidArgument
from modeconn.training import Objective, TrainConfig, cosine_sgd


@dataclass(frozen=True)
class FTSAMConfig:
    """FT-SAM's settings.

    The SAM part (``rho``, ``adaptive``, ``label_smoothing``, ``weight_decay``) is BackdoorBench's
    published default; epochs, learning rate and batch are the repair's fine-tuning budget
    (BackdoorBench: 100 epochs of batch 256 on 5% of CIFAR-10), so that FT-SAM and the
    fine-tuning baseline differ only by the sharpness-aware steps.
    """

    epochs: int = 20
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    rho: float = 2.0
    adaptive: bool = True
    label_smoothing: float = 0.1

    def validate(self) -> None:
        """Reject settings that cannot work, with one clear line."""
        if self.rho < 0:
            raise InvalidArgument(None, f"FT-SAM's rho must be non-negative, got {self.rho}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InvalidArgument(
                None, f"FT-SAM's label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )

    def train_config(self, seed: int) -> TrainConfig:
        """The training-loop settings of one FT-SAM run."""
        return cosine_sgd(self, seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in ``model`` keep their running statistics inside the block (momentum 0),
    so a second forward pass of the same batch does not count it twice."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum


class SharpnessAwareObjective(Objective):
    """Label-smoothed cross-entropy taken at the worst point ``rho`` away (SAM, or ASAM when
    ``adaptive``); the move is undone after the optimiser step."""

    def __init__(self, rho: float, adaptive: bool = True, label_smoothing: float = 0.0) -> None:
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        self.rho = rho
        self.adaptive = adaptive
        self.label_smoothing = label_smoothing
        self._shift: list[tuple[nn.Parameter, torch.Tensor]] = []

    def _criterion(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def ascent(self, params: list[nn.Parameter], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The move ε of every parameter: ``rho·g/‖g‖``, or ``rho·θ²g/‖|θ|g‖`` when adaptive."""
        scaled = [g * p.abs() if self.adaptive else g for p, g in zip(params, grads, strict=True)]
        norm = torch.sqrt(sum((s * s).sum() for s in scaled))
        scale = self.rho / (float(norm) + 1e-12)
        weights = [p.abs() if self.adaptive else 1.0 for p in params]
        return [s * w * scale for s, w in zip(scaled, weights, strict=True)]

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient at θ (this process's batch), move to θ + ε, the loss there; the logits are
        θ's (the training accuracy)."""
        params = [p for p in unwrap(model).parameters() if p.requires_grad]
        logits = unwrap(model)(x)
        grads = torch.autograd.grad(self._criterion(logits, y), params, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]
        with torch.no_grad():
            moves = self.ascent(params, grads)
            for p, e in zip(params, moves, strict=True):
                p.add_(e)
        self._shift = list(zip(params, moves, strict=True))
        with frozen_batchnorm_statistics(model):
            loss = self._criterion(model(x), y)
        return loss, logits.detach()

    def after_step(self, model: nn.Module) -> None:
        """Take ε off again (the optimiser's step stays)."""
        with torch.no_grad():
            for p, e in self._shift:
                p.sub_(e)
        self._shift = []


def ft_sam_objective(config: FTSAMConfig) -> SharpnessAwareObjective:
    """The objective of one FT-SAM run with ``config``'s SAM settings."""
    config.validate()
    return SharpnessAwareObjective(config.rho, config.adaptive, config.label_smoothing)


__all__ = ["FTSAMConfig", "SharpnessAwareObjective", "ft_sam_objective"]
