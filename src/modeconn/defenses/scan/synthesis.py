"""Trigger synthesis: one trigger per class (or one universal label flipper), optimised for all
classes at once.

One loop serves every kind of trigger (a :class:`~modeconn.defenses.scan.kinds.TriggerKind`:
the parametrisation) and both goals (a :class:`Goal`: send other classes' images to each class,
or move every image off its label). Neural Cleanse's search is shared too: a per-trigger size
weight λ grows while the trigger reaches the success target and shrinks while it does not, and
the smallest trigger that reached the target is kept.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.defenses.scan.kinds import (
    DEFAULT_KINDS,
    TRIGGER_KINDS,
    TriggerKind,
    TriggerSet,
    trigger_kind,
)
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.modes import eval_mode


@dataclass(frozen=True)
class ScanConfig:
    """Settings of the trigger synthesis and the anomaly test."""

    images: int = 512
    steps: int = 75
    batch_size: int = 12
    kinds: tuple[str, ...] = DEFAULT_KINDS
    mask_lr: float = 0.2
    perturbation_lr: float = 0.04
    mask_cost: float = 1e-3
    perturbation_cost: float = 1e-2
    blend_lr: float = 0.1
    blend_cost: float = 0.5
    blend_threshold: float = 4.5
    warp_lr: float = 0.1
    warp_cost: float = 1e-2
    warp_threshold: float = 8.0
    success_target: float = 0.95
    patience: int = 5
    cost_factor: float = 1.5
    threshold: float = 3.0
    untargeted: bool = True
    untargeted_kinds: tuple[str, ...] = ("mask", "perturbation", "blend")
    untargeted_batch: int = 48
    untargeted_success: float = 0.9
    untargeted_threshold: float = 1.0
    margin: bool = False
    margin_steps: int = 100
    margin_starts: int = 16
    margin_lr: float = 0.05
    margin_threshold: float = 3.0
    confirm_draws: int = 2
    confirm_band: tuple[float, float] = (0.7, 1.5)
    seed: int = 0

    def validate(self) -> None:
        if self.images < 2 or self.steps < 1 or self.batch_size < 1:
            raise ModeconnError(
                "scan needs images ≥ 2, steps ≥ 1 and batch_size ≥ 1, got "
                f"{self.images}, {self.steps}, {self.batch_size}"
            )
        unknown = [k for k in (*self.kinds, *self.untargeted_kinds) if k not in TRIGGER_KINDS]
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
        low, high = self.confirm_band
        if self.confirm_draws < 0 or not 0 < low <= high:
            raise InvalidArgument(
                None,
                f"the second look needs confirm_draws ≥ 0 and 0 < low ≤ high, got "
                f"{self.confirm_draws} and {self.confirm_band}",
            )
        if self.margin and (self.margin_steps < 1 or self.margin_starts < 1):
            raise InvalidArgument(
                None,
                "the margin statistic needs margin_steps ≥ 1 and margin_starts ≥ 1, got "
                f"{self.margin_steps}, {self.margin_starts}",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


class Goal(ABC):
    """What the triggers must do: ``count`` triggers optimised side by side on batches of
    ``batch`` images, each done when it reaches ``target_rate`` of its eligible images."""

    count: int
    batch: int
    target_rate: float

    @abstractmethod
    def score(
        self, logits: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss per image, hits (1.0 where the trigger worked) and eligibility (1.0 where the
        image counts), each K×B, from the logits of every trigger on every image (K·B rows)."""


class TargetedGoal(Goal):
    """One trigger per class k that sends images of the *other* classes to k: CE(f(x'), k)."""

    def __init__(self, num_classes: int, config: ScanConfig, device: torch.device) -> None:
        self.count = num_classes
        self.batch = config.batch_size
        self.target_rate = config.success_target
        self.targets = torch.arange(num_classes, device=device)

    def score(
        self, logits: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        goal = self.targets.repeat_interleave(y.shape[0])
        loss_per = F.cross_entropy(logits, goal, reduction="none").view(self.count, -1)
        hits = (logits.argmax(1) == goal).float().view(self.count, -1)
        # K×B: True where image b is not of class k (only those count for class k's trigger)
        eligible = y.unsqueeze(0) != self.targets.unsqueeze(1)
        return loss_per, hits, eligible.float()


class UntargetedGoal(Goal):
    """One universal trigger that moves every image off its own label, wherever it goes:
    −log(1 − p_y)."""

    def __init__(self, config: ScanConfig) -> None:
        self.count = 1
        self.batch = config.untargeted_batch
        self.target_rate = config.untargeted_success

    def score(
        self, logits: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p_true = logits.softmax(1).gather(1, y.unsqueeze(1)).view(1, -1)
        loss_per = -torch.log((1 - p_true).clamp_min(1e-6))
        hits = (logits.argmax(1) != y).float().view(1, -1)
        return loss_per, hits, torch.ones_like(hits)


class _Search:
    """Neural Cleanse's bookkeeping per trigger: the size weight λ and the smallest trigger
    that reached the target so far."""

    def __init__(
        self, params: list[torch.Tensor], cost: float, goal: Goal, config: ScanConfig
    ) -> None:
        device = params[0].device
        self.target_rate = goal.target_rate
        self.patience, self.factor = config.patience, config.cost_factor
        self.cost = torch.full((goal.count,), cost, device=device)
        self.size = torch.full((goal.count,), math.inf, device=device)
        self.success = torch.zeros(goal.count, device=device)
        self.best = [p.detach().clone() for p in params]
        self.window = torch.zeros(goal.count, device=device)

    @torch.no_grad()
    def update(
        self, step: int, params: list[torch.Tensor], size: torch.Tensor, success: torch.Tensor
    ) -> None:
        """Keep the triggers that reached the target at a smaller size; every ``patience``
        steps raise λ where the window's mean success reached the target, else lower it."""
        improved = (success >= self.target_rate) & (size < self.size)
        self.size = torch.where(improved, size.detach(), self.size)
        self.success = torch.where(improved, success, self.success)
        for keep, cur in zip(self.best, params, strict=True):
            keep[improved] = cur.detach()[improved]
        self.window += success
        if (step + 1) % self.patience == 0:
            reached = self.window / self.patience >= self.target_rate
            self.cost = torch.where(reached, self.cost * self.factor, self.cost / self.factor)
            self.window.zero_()

    @torch.no_grad()
    def finish(
        self, params: list[torch.Tensor], success: torch.Tensor, kind: TriggerKind
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The kept parameters, sizes and success rates. A trigger that never reached the target
        keeps its last value and size: a large one, which is what "no small trigger found"
        means for the index."""
        never = torch.isinf(self.size)
        for keep, cur in zip(self.best, params, strict=True):
            keep[never] = cur.detach()[never]
        final = kind.size(kind.tensors(self.best))
        size = torch.where(never, final, self.size)
        return self.best, size, torch.where(never, success, self.success)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``model``'s parameters need no gradients for a while (only the triggers are optimised)."""
    grad_state = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, g in zip(model.parameters(), grad_state, strict=True):
            p.requires_grad_(g)


def _batch_loss(
    model: nn.Module,
    kind: TriggerKind,
    params: list[torch.Tensor],
    goal: Goal,
    batch: tuple[torch.Tensor, torch.Tensor],
    cost: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss Σ_k (goal loss_k + λ_k·size_k) of every trigger on every image of ``batch`` in
    one forward pass, with the triggers' sizes and success rates."""
    xb, yb = batch
    trigger = kind.tensors(params)
    xs = kind.stamp_all(xb, trigger)
    size = kind.size(trigger)
    logits = model(xs.reshape(-1, *xb.shape[1:]))
    loss_per, hits, eligible = goal.score(logits, yb)
    count = eligible.sum(1).clamp_min(1)
    loss_k = (loss_per * eligible).sum(1) / count
    success = (hits * eligible).sum(1) / count
    return (loss_k + cost * size).sum(), size, success


def optimise_triggers(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    kind: TriggerKind,
    goal: Goal,
    config: ScanConfig,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The one optimisation loop: Adam on ``kind``'s parameters for ``goal`` over random
    batches of ``(x, y)``, seeded by ``config.seed``. Returns the kept parameters, the sizes and
    the success rates. ``on_step(step, sizes)`` sees the smallest sizes kept so far after every
    step (∞ where no trigger reached the target yet)."""
    gen = torch.Generator().manual_seed(config.seed)
    params = kind.init_params(goal.count, x.shape[1:], gen, x.device)
    lr, cost = kind.settings(config)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
    search = _Search(params, cost, goal, config)
    n = x.shape[0]
    with frozen_parameters(model), eval_mode(model):
        for step in range(config.steps):
            pick = torch.randint(0, n, (min(goal.batch, n),), generator=gen).to(x.device)
            loss, size, success = _batch_loss(
                model, kind, params, goal, (x[pick], y[pick]), search.cost
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            search.update(step, params, size, success)
            if on_step is not None:
                on_step(step, search.size)
    return search.finish(params, success, kind)


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
    parametrisation = trigger_kind(kind)
    goal = UntargetedGoal(config) if untargeted else TargetedGoal(num_classes, config, x.device)
    best, size, success = optimise_triggers(model, x, y, parametrisation, goal, config)
    found = {name: t.cpu() for name, t in parametrisation.tensors(best).items()}
    return TriggerSet(kind, size.cpu(), success.cpu(), **found, untargeted=untargeted)
