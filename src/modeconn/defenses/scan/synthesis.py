"""Trigger synthesis: one trigger per class (or one universal label flipper), optimised for all
classes at once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.defenses.scan.kinds import TRIGGER_KINDS, TriggerSet
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.modes import eval_mode


@dataclass
class ScanConfig:
    """Settings of the trigger synthesis and the anomaly test."""

    images: int = 512
    steps: int = 150
    batch_size: int = 24
    kinds: tuple[str, ...] = TRIGGER_KINDS
    mask_lr: float = 0.1
    perturbation_lr: float = 0.02
    mask_cost: float = 1e-3
    perturbation_cost: float = 1e-2
    success_target: float = 0.95
    patience: int = 5
    cost_factor: float = 1.5
    threshold: float = 3.0
    untargeted: bool = True
    untargeted_batch: int = 96
    untargeted_success: float = 0.9
    untargeted_threshold: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.images < 2 or self.steps < 1 or self.batch_size < 1:
            raise ModeconnError(
                "scan needs images ≥ 2, steps ≥ 1 and batch_size ≥ 1, got "
                f"{self.images}, {self.steps}, {self.batch_size}"
            )
        unknown = [k for k in self.kinds if k not in TRIGGER_KINDS]
        if unknown or not self.kinds:
            raise InvalidArgument(
                None,
                f"unknown trigger kind {unknown or self.kinds} (use {', '.join(TRIGGER_KINDS)})",
            )
        if not 0.0 < self.success_target <= 1.0:
            raise InvalidArgument(
                None, f"success target must lie in (0, 1], got {self.success_target}"
            )
        if not self.threshold > 0:
            raise InvalidArgument(None, f"anomaly threshold must be positive, got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _class_eligibility(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K×N: True where image n is not of class k (only those count for class k's trigger)."""
    return y.unsqueeze(0) != torch.arange(num_classes, device=y.device).unsqueeze(1)


def check_scan_data(y: torch.Tensor, num_classes: int) -> None:
    """Every class needs other-class images to push and the data needs at least two classes."""
    present = torch.unique(y)
    if present.numel() < 2:
        raise InvalidArgument(
            None, f"the scan needs bonafide images of at least two classes, got {present.numel()}"
        )
    if int(present.max()) >= num_classes:
        raise ModeconnError(
            f"bonafide labels go up to {int(present.max())} but the model has {num_classes} classes"
        )


def synthesize_triggers(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    kind: str = "mask",
    config: ScanConfig | None = None,
    *,
    untargeted: bool = False,
) -> TriggerSet:
    """Optimise one trigger of ``kind`` per class on images ``x`` (labels ``y``), all classes in
    one batched pass per step. ``model`` is used in eval mode and left unchanged.

    ``untargeted``: a single universal trigger instead, the smallest that moves
    ``config.untargeted_success`` of *all* images away from their own label, wherever they go
    (loss −log(1 − p_y)). A backdoor whose target depends on the label (all-to-all) gives no
    class a small targeted trigger, but its trigger is exactly such a universal label flipper.
    """
    config = config or ScanConfig()
    if kind not in TRIGGER_KINDS:
        raise InvalidArgument(
            None, f"unknown trigger kind '{kind}' (use {', '.join(TRIGGER_KINDS)})"
        )
    check_scan_data(y, num_classes)
    device = x.device
    n, c, h, w = x.shape
    gen = torch.Generator().manual_seed(config.seed)
    K = 1 if untargeted else num_classes  # triggers optimised side by side
    batch = config.untargeted_batch if untargeted else config.batch_size
    target_rate = config.untargeted_success if untargeted else config.success_target
    if kind == "mask":
        mask_logit = torch.full((K, 1, h, w), -2.0, device=device)
        pattern_logit = (torch.rand((K, c, h, w), generator=gen) * 2 - 1).to(device)
        params = [mask_logit.requires_grad_(), pattern_logit.requires_grad_()]
        lr, cost0 = config.mask_lr, config.mask_cost
    else:
        delta = torch.zeros((K, c, h, w), device=device, requires_grad=True)
        params = [delta]
        lr, cost0 = config.perturbation_lr, config.perturbation_cost
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
    cost = torch.full((K,), cost0, device=device)
    targets = torch.arange(K, device=device)
    best_size = torch.full((K,), math.inf, device=device)
    best_success = torch.zeros(K, device=device)
    best = [p.detach().clone() for p in params]
    window_success = torch.zeros(K, device=device)
    grad_state = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with eval_mode(model):
            for step in range(config.steps):
                pick = torch.randint(0, n, (min(batch, n),), generator=gen).to(device)
                xb, yb = x[pick], y[pick]
                if kind == "mask":
                    m = torch.sigmoid(mask_logit)
                    p = torch.sigmoid(pattern_logit)
                    xs = (1 - m.unsqueeze(1)) * xb.unsqueeze(0) + (m * p).unsqueeze(1)
                    size = m.flatten(1).sum(1)
                else:
                    xs = (xb.unsqueeze(0) + delta.unsqueeze(1)).clamp(0, 1)
                    size = delta.flatten(1).norm(dim=1)
                logits = model(xs.reshape(-1, c, h, w))
                if untargeted:
                    p_true = logits.softmax(1).gather(1, yb.unsqueeze(1)).view(1, -1)
                    loss_per = -torch.log((1 - p_true).clamp_min(1e-6))
                    hits = (logits.argmax(1) != yb).float().view(1, -1)
                    eligible = torch.ones_like(hits)
                else:
                    goal = targets.repeat_interleave(xb.shape[0])
                    loss_per = F.cross_entropy(logits, goal, reduction="none").view(K, -1)
                    hits = (logits.argmax(1) == goal).float().view(K, -1)
                    eligible = _class_eligibility(yb, K).float()  # K×B
                count = eligible.sum(1).clamp_min(1)
                loss_k = (loss_per * eligible).sum(1) / count
                success = (hits * eligible).sum(1) / count
                loss = (loss_k + cost * size).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    improved = (success >= target_rate) & (size < best_size)
                    best_size = torch.where(improved, size.detach(), best_size)
                    best_success = torch.where(improved, success, best_success)
                    for keep, cur in zip(best, params, strict=True):
                        keep[improved] = cur.detach()[improved]
                    window_success += success
                    if (step + 1) % config.patience == 0:
                        reached = window_success / config.patience >= target_rate
                        cost = torch.where(
                            reached, cost * config.cost_factor, cost / config.cost_factor
                        )
                        window_success.zero_()
            with torch.no_grad():
                never = torch.isinf(best_size)
                # A class whose trigger never reached the target keeps its last trigger and size:
                # a large one, which is what "no small trigger found" means for the index.
                for keep, cur in zip(best, params, strict=True):
                    keep[never] = cur.detach()[never]
                if kind == "mask":
                    final = torch.sigmoid(best[0]).flatten(1).sum(1)
                else:
                    final = best[0].flatten(1).norm(dim=1)
                best_size = torch.where(never, final, best_size)
                best_success = torch.where(never, success, best_success)
    finally:
        for p, g in zip(model.parameters(), grad_state, strict=True):
            p.requires_grad_(g)
    if kind == "mask":
        return TriggerSet(
            kind,
            best_size.cpu(),
            best_success.cpu(),
            mask=torch.sigmoid(best[0]).cpu(),
            pattern=torch.sigmoid(best[1]).cpu(),
            untargeted=untargeted,
        )
    return TriggerSet(
        kind, best_size.cpu(), best_success.cpu(), delta=best[0].cpu(), untargeted=untargeted
    )
