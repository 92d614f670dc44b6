"""Adversarial training: PGD-AT, TRADES, and Adversarial Weight Perturbation on top of either.

Each method is an :class:`~modeconn.training.Objective` of the one training loop, so schedules,
checkpoints, resumption and DDP come for free:

* **PGD-AT** (Madry et al. 2018) minimises the cross-entropy on PGD examples crafted against the
  current weights: min_θ E max_{‖δ‖≤ε} CE(f_θ(x + δ), y).
* **TRADES** (Zhang et al. 2019) minimises CE(f(x), y) + β·KL(f(x) ‖ f(x′)), with x′ maximising the
  KL term inside the ε-ball (PGD on the KL loss).
* **AWP** (Wu et al. 2020) also perturbs the weights adversarially: after crafting x′, one ascent
  step on the same adversarial loss gives a direction g_l for every weight tensor l (conv and
  linear weights, i.e. every parameter with ≥ 2 dimensions; not biases, not BatchNorm), rescaled
  to v_l = γ·‖w_l‖·g_l/‖g_l‖. The training step is taken at w + v and then v is removed: the
  weights become w + Δ, where Δ is the optimiser's update computed at w + v. When no step is taken
  (Δ = 0) the weights are restored exactly, bit for bit.

Adversarial examples are crafted in eval mode (no BatchNorm statistics are updated by the attack,
as in the TRADES reference code) and the model is then put back in training mode. The training
accuracy the loop reports is on the adversarial examples for PGD-AT and on clean inputs for TRADES
(whose first term is the clean loss).

Under DDP every process computes its own AWP perturbation from its own shard; the gradients at
w + v are averaged as usual and the weights, once v is removed, stay identical across processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from modeconn.attacks.config import AttackConfig
from modeconn.distributed import unwrap
from modeconn.errors import InvalidArgument
from modeconn.modes import eval_mode
from modeconn.training import Objective

if TYPE_CHECKING:
    from modeconn.attacks.metrics import RobustMetric

METHODS = ("pgd", "trades")
#: Reference AWP strengths (Wu et al. 2020): γ = 0.01 with PGD-AT, 5e-3 with TRADES.
DEFAULT_AWP_GAMMA = {"pgd": 1e-2, "trades": 5e-3}

Forward = Callable[[torch.Tensor], torch.Tensor]


# --- Adversarial Weight Perturbation ----------------------------------------------------------


def perturbed_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The tensors AWP perturbs: trainable parameters with ≥ 2 dims (conv and linear weights)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2}


class AdversarialWeightPerturbation:
    """Perturb the weights to w + v before the loss, remove v after the optimiser step.

    ``perturb(model, loss_of)`` computes v from one gradient-ascent step on ``loss_of(forward)``,
    where ``forward`` runs the model functionally with the current weights (in the model's current
    mode, on copies of its buffers, so the extra pass leaves BatchNorm statistics alone), and adds
    it; ``restore()`` removes it again after the optimiser step. The objective switches it on
    after ``warmup`` epochs (:meth:`start_epoch`).
    """

    def __init__(self, gamma: float, warmup: int = 0) -> None:
        if not gamma > 0:
            raise InvalidArgument("gamma", f"gamma must be positive, got {gamma}")
        if warmup < 0:
            raise InvalidArgument("warmup", f"warmup must be non-negative, got {warmup}")
        self.gamma = gamma
        self.warmup = warmup
        self.active = warmup == 0
        # (parameter, w before the perturbation, w + v as set) for every perturbed tensor
        self._saved: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []

    def start_epoch(self, epoch: int) -> None:
        """AWP starts after the warm-up epochs (epochs are 1-based)."""
        self.active = epoch > self.warmup

    def direction(
        self, model: nn.Module, loss_of: Callable[[Forward], torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """v_l = γ·‖w_l‖·g_l/‖g_l‖ with g = ∇_w loss at the current weights (zero where g = 0)."""
        weights = perturbed_weights(model)
        leaves = {n: p.detach().requires_grad_(True) for n, p in weights.items()}
        state = {n: p.detach() for n, p in model.named_parameters()}
        state.update({n: b.clone() for n, b in model.named_buffers()})
        state.update(leaves)

        def forward(inp: torch.Tensor) -> torch.Tensor:
            return functional_call(model, state, (inp,))

        grads = torch.autograd.grad(loss_of(forward), list(leaves.values()), allow_unused=True)
        out = {}
        for (name, w), g in zip(weights.items(), grads, strict=True):
            g_norm = 0.0 if g is None else float(g.norm())
            if g_norm == 0.0:
                continue
            out[name] = g * (self.gamma * w.detach().norm() / g_norm)
        return out

    @torch.no_grad()
    def add(self, model: nn.Module, v: dict[str, torch.Tensor]) -> None:
        """Move the weights to w + v, remembering w."""
        if self._saved:
            raise RuntimeError("AWP perturbation added twice without restoring in between")
        params = dict(model.named_parameters())
        for name, delta in v.items():
            p = params[name]
            before = p.detach().clone()
            p.add_(delta)
            self._saved.append((p, before, p.detach().clone()))

    def perturb(self, model: nn.Module, loss_of: Callable[[Forward], torch.Tensor]) -> None:
        """Compute v at the current weights and add it."""
        self.add(model, self.direction(model, loss_of))

    @torch.no_grad()
    def restore(self) -> None:
        """w ← w + (p − (w + v)): keep the optimiser's update Δ = p − (w + v), drop v."""
        for p, before, perturbed in self._saved:
            p.copy_(before + (p - perturbed))
        self._saved = []


# --- objectives -----------------------------------------------------------------------------


def check_training_attack(attack: AttackConfig) -> None:
    """Adversarial training crafts its examples with PGD and a positive budget."""
    attack.validate()
    if attack.name != "pgd":
        raise InvalidArgument("attack", f"adversarial training uses PGD, not '{attack.name}'")
    if not attack.eps > 0:
        raise InvalidArgument("eps", f"eps must be positive, got {attack.eps}")
    if attack.steps < 1:
        raise InvalidArgument("steps", f"steps must be at least 1, got {attack.steps}")


class AdversarialObjective(Objective, ABC):
    """Craft adversarial inputs against the current weights, then minimise a loss on them.

    Subclasses define :meth:`craft` (the inner maximisation) and :meth:`adversarial_loss` (the
    outer loss, as a function of a forward callable so that AWP can evaluate it functionally).
    """

    def __init__(self, attack: AttackConfig, awp: AdversarialWeightPerturbation | None = None):
        check_training_attack(attack)
        self.attack = attack
        self.awp = awp

    @abstractmethod
    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial inputs against the current weights (the inner maximisation)."""

    @abstractmethod
    def adversarial_loss(
        self, forward: Forward, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The outer loss and the logits used for training accuracy."""

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adversarial examples, then (with AWP) w ← w + v, then the loss to minimise at w (+ v)."""
        inner = unwrap(model)
        with eval_mode(inner):
            x_adv = self.craft(inner, x, y).detach()
        if self.awp is not None and self.awp.active:
            self.awp.perturb(inner, lambda fwd: self.adversarial_loss(fwd, x, x_adv, y)[0])
        return self.adversarial_loss(model, x, x_adv, y)

    def start_epoch(self, epoch: int, model: nn.Module) -> None:
        if self.awp is not None:
            self.awp.start_epoch(epoch)

    def after_step(self, model: nn.Module) -> None:
        if self.awp is not None:
            self.awp.restore()


class PGDAdversarialTraining(AdversarialObjective):
    """PGD-AT (Madry et al. 2018): cross-entropy on PGD examples."""

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.attack.perturb(model, x, y)

    def adversarial_loss(
        self, forward: Forward, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward(x_adv)
        return F.cross_entropy(logits, y), logits


def trades_kl(logits_adv: torch.Tensor, logits_clean: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p_clean ‖ p_adv) from logits (TRADES' robustness regulariser)."""
    return F.kl_div(
        F.log_softmax(logits_adv, dim=1),
        F.log_softmax(logits_clean, dim=1),
        reduction="none",
        log_target=True,
    ).sum(1)


class TRADES(AdversarialObjective):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(f(x) ‖ f(x′)).

    The inner maximisation is PGD on the KL term against the (fixed) clean prediction, from a
    random start in the ε-ball (the reference code starts at x + 0.001·N(0, I); the KL has zero
    gradient at x itself).
    """

    def __init__(
        self,
        attack: AttackConfig,
        beta: float = 6.0,
        awp: AdversarialWeightPerturbation | None = None,
    ) -> None:
        if not beta >= 0:
            raise InvalidArgument("beta", f"beta must be non-negative, got {beta}")
        super().__init__(attack, awp)
        self.beta = beta

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = model(x)
        return self.attack.perturb(model, x, y, loss_fn=lambda logits, _: trades_kl(logits, clean))

    def adversarial_loss(
        self, forward: Forward, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward(x)
        robust = trades_kl(forward(x_adv), logits).mean()
        return F.cross_entropy(logits, y) + self.beta * robust, logits


# --- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class AdversarialConfig:
    """Everything ``modeconn train --adversarial ...`` sets: the method, its attack, and AWP.

    ``awp_gamma`` defaults to the reference strength of the method (0.01 for PGD-AT, 5e-3 for
    TRADES); AWP starts after ``awp_warmup`` epochs.
    """

    method: str = "pgd"
    attack: AttackConfig = field(default_factory=AttackConfig)
    trades_beta: float = 6.0
    awp: bool = False
    awp_gamma: float | None = None
    awp_warmup: int = 0

    def validate(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgument(
                None, f"unknown adversarial training '{self.method}' (use {', '.join(METHODS)})"
            )
        check_training_attack(self.attack)
        if self.awp and not self.gamma > 0:
            raise InvalidArgument("awp_gamma", f"awp_gamma must be positive, got {self.gamma}")
        if self.awp_warmup < 0:
            raise InvalidArgument(
                "awp_warmup", f"awp_warmup must be non-negative, got {self.awp_warmup}"
            )

    @property
    def gamma(self) -> float:
        return self.awp_gamma if self.awp_gamma is not None else DEFAULT_AWP_GAMMA[self.method]

    def objective(self) -> AdversarialObjective:
        """The training objective these settings describe."""
        self.validate()
        awp = AdversarialWeightPerturbation(self.gamma, self.awp_warmup) if self.awp else None
        if self.method == "trades":
            return TRADES(self.attack, self.trades_beta, awp)
        return PGDAdversarialTraining(self.attack, awp)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["awp_gamma"] = self.gamma if self.awp else None
        return out


# --- robust evaluation ----------------------------------------------------------------------


@dataclass
class RobustEvaluation:
    """PGD robust accuracy and loss on (a stratified subset of) the test split.

    ``limit`` caps the number of test images attacked (PGD costs steps + 1 passes per image).
    Called as ``evaluation(model, data, device)`` it is also a path metric (the ``robust_acc`` and
    ``robust_loss`` columns of ``path.csv``; see :mod:`modeconn.connectivity.metrics`).
    """

    name = "robust"

    attack: AttackConfig = field(default_factory=AttackConfig)
    limit: int | None = 1000
    batch_size: int = 256

    def validate(self) -> None:
        self.attack.validate()
        if self.limit is not None and self.limit < 1:
            raise InvalidArgument("limit", f"limit must be at least 1, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metric(self) -> RobustMetric:
        """These settings as :class:`RobustMetric`, the one implementation of robust evaluation."""
        from modeconn.attacks.metrics import RobustMetric

        return RobustMetric(self.attack, limit=self.limit, batch_size=self.batch_size)

    def on_loader(self, model: nn.Module, loader, device: torch.device | str) -> dict[str, float]:
        """``robust_acc``/``robust_loss`` of ``model`` (attacked in eval mode) over ``loader``."""
        return self.metric().on_loader(model, loader, device)

    def __call__(self, model: nn.Module, data, device: torch.device | str) -> dict[str, float]:
        """Robust figures on the test split (the first ``limit`` of a stratified draw)."""
        return self.metric()(model, data, device)
