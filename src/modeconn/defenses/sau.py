"""SAU, Shared Adversarial Unlearning (Wei et al., NeurIPS 2023).

A backdoored input is an adversarial example that the backdoored model and the purified model
would *share*: both send it to the same wrong class. Wei et al. bound the backdoor risk of the
purified model by its risk on shared adversarial examples, and SAU minimises that bound on the
bonafide data. Every step

1. crafts a perturbation δ (L∞ ≤ ``eps``, PGD from +``eps`` everywhere, ``pgd_steps`` signed
   steps) that makes the current model h and the frozen tampered model h₀ both leave their clean
   prediction and agree: descent on

       β_adv·(−CE of the images either model still gets right) + β_share·JS(h(x+δ), h₀(x+δ))

   (the JS divergence counted on the images that are not yet shared adversarial examples);
2. trains h on ``w_clean``·CE(h(x), y) + ``w_adv``·CE(h(x+δ), y) + ``w_shared``·L_shared, where
   L_shared = −log(1 − p_h(ŷ₀ | x+δ)) on the images whose label h₀ changed (ŷ₀, neither the
   true label nor h₀'s clean answer): h must stop giving the shared wrong answer.

The settings are BackdoorBench's (``defense/sau``, its default configuration): ε = 0.2 and step
0.2 on images in [0, 1], 5 PGD steps, β = (0.01, 1), weights (1, 0, 1), Adam (AdamW without
weight decay) at lr 1e-4 with a cosine schedule; as there, the perturbed images are not clipped
to [0, 1], and both the attack and the training step see the model in eval mode (BatchNorm's
statistics stay the tampered model's: higher clean accuracy, in the reference's words).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.distributed import unwrap
from modeconn.errors import InvalidArgument
from modeconn.layout import fast_layout
from modeconn.modes import eval_mode
from modeconn.training import Objective, TrainConfig


@dataclass(frozen=True)
class SAUConfig:
    """SAU's settings: BackdoorBench's attack and loss weights; the repair's 20 epochs of batch
    128 (BackdoorBench: 100 rounds of batch 256 on 5% of CIFAR-10)."""

    epochs: int = 20
    lr: float = 1e-4
    batch_size: int = 128
    eps: float = 0.2
    pgd_steps: int = 5
    pgd_step_size: float = 0.2
    beta_adv: float = 0.01
    beta_share: float = 1.0
    w_clean: float = 1.0
    w_adv: float = 0.0
    w_shared: float = 1.0

    def validate(self) -> None:
        """Reject settings that cannot work, with one clear line."""
        if self.eps < 0 or self.pgd_step_size < 0:
            raise InvalidArgument(None, "SAU's eps and pgd_step_size must be non-negative")
        if self.pgd_steps < 1:
            raise InvalidArgument(None, f"SAU needs at least one PGD step, got {self.pgd_steps}")
        weights = (self.beta_adv, self.beta_share, self.w_clean, self.w_adv, self.w_shared)
        if min(weights) < 0:
            raise InvalidArgument(None, "SAU's loss weights must be non-negative")

    def train_config(self, seed: int) -> TrainConfig:
        """The training-loop settings of one SAU run (Adam: AdamW without weight decay)."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=0.0,
            optimizer="adamw",
            schedule="cosine",
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def js_divergence(logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence of two batches of predictions, one value per image."""
    p = F.softmax(logits, dim=1).clamp(min=1e-8)
    q = F.softmax(other, dim=1).clamp(min=1e-8)
    m = 0.5 * (p + q)
    return 0.5 * (p * (p.log() - m.log()) + q * (q.log() - m.log())).sum(dim=1)


def _attack_loss(
    outs: tuple[torch.Tensor, torch.Tensor],
    clean: tuple[torch.Tensor, torch.Tensor],
    y: torch.Tensor,
    config: SAUConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared attack's loss to descend on, and which images are shared adversarial already."""
    out, out_ref = outs
    fooled = [o.argmax(1) != c for o, c in zip(outs, clean, strict=True)]
    shared = fooled[0] & fooled[1] & (out.argmax(1) == out_ref.argmax(1))
    right = sum(
        F.cross_entropy(o, y, reduction="none")[~f].sum() for o, f in zip(outs, fooled, strict=True)
    )
    adversarial = -right / (2 * y.shape[0])
    agreement = js_divergence(out, out_ref)[~shared].sum() / y.shape[0]
    return config.beta_adv * adversarial + config.beta_share * agreement, shared


def shared_perturbation(
    model: nn.Module, reference: nn.Module, x: torch.Tensor, y: torch.Tensor, config: SAUConfig
) -> torch.Tensor:
    """δ with ‖δ‖∞ ≤ ``eps`` that makes ``model`` and ``reference`` leave their clean answers on
    x + δ and agree (signed PGD from +eps; stops early once every image is shared)."""
    with torch.no_grad():
        clean = (model(x).argmax(1), reference(x).argmax(1))
    delta = torch.full_like(x, config.eps)
    for _ in range(config.pgd_steps):
        delta.requires_grad_(True)
        outs = (model(x + delta), reference(x + delta))
        loss, shared = _attack_loss(outs, clean, y, config)
        if bool(shared.all()):
            break
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() - config.pgd_step_size * grad.sign()).clamp(-config.eps, config.eps)
    return delta.detach()


def shared_risk(
    adv_logits: torch.Tensor, shared_label: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """−log(1 − p(shared label)) summed over the masked images, divided by the batch; the
    probability is kept in [0.001, 0.999] (no infinite loss, images below 0.1% ignored)."""
    if not bool(mask.any()):
        return adv_logits.new_zeros(())
    p = F.softmax(adv_logits, dim=1).gather(1, shared_label[:, None]).squeeze(1)[mask]
    return -torch.log1p(-p.clamp(0.001, 0.999)).sum() / adv_logits.shape[0]


class SharedAdversarialObjective(Objective):
    """SAU's training loss against a frozen copy of the tampered model (see the module)."""

    def __init__(self, tampered: nn.Module, config: SAUConfig) -> None:
        config.validate()
        self.reference = copy.deepcopy(tampered).eval().requires_grad_(False)
        self.config = config

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Craft the shared δ, then the clean, adversarial and shared-risk terms."""
        cfg, reference = self.config, self.reference.to(x.device)
        with fast_layout(reference, x.device):
            with eval_mode(model):
                delta = shared_perturbation(unwrap(model), reference, x, y, cfg)
                logits, adv_logits = model(torch.cat([x, x + delta])).split(x.shape[0])
            with torch.no_grad():
                both = reference(torch.cat([x, x + delta])).argmax(1)
        ref_clean, ref_adv = both.split(x.shape[0])
        changed = (ref_adv != y) & (ref_adv != ref_clean)
        loss = (
            cfg.w_clean * F.cross_entropy(logits, y)
            + cfg.w_adv * F.cross_entropy(adv_logits, y)
            + cfg.w_shared * shared_risk(adv_logits, ref_adv, changed)
        )
        return loss, logits.detach()


__all__ = ["SAUConfig", "SharedAdversarialObjective", "js_divergence", "shared_perturbation"]
