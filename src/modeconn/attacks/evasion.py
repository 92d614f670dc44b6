"""Evasion attacks: FGSM, PGD (L∞ and L2) and APGD-CE / APGD-T (Croce & Hein 2020).

Every attack takes a model that expects images in [0, 1] (normalisation is a layer inside the
model), returns adversarial images clamped to [0, 1] inside the ε-ball around the inputs, and
differentiates with respect to the *inputs only*: gradients come from :func:`torch.autograd.grad`,
so no parameter ``.grad`` is ever accumulated, and the model's train/eval mode is left untouched
(putting the model in eval mode is the caller's job).

Randomised models — a curve evaluated at a random t, see :class:`RandomPointModel` — are attacked
adaptively with expectation over transformation (EOT): ``eot_samples`` forward/backward passes per
step whose input gradients are averaged (Athalye et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.errors import InvalidArgument

NORMS = ("linf", "l2")
APGD_LOSSES = ("ce", "dlr")

#: ``loss_fn(logits, y)`` → per-example losses (shape N) or a scalar; attacks ascend its sum.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_TINY = 1e-12


def check_norm(norm: str) -> None:
    """The one check of a threat model's name (``linf`` or ``l2``)."""
    if norm not in NORMS:
        raise InvalidArgument("norm", f"unknown norm '{norm}' (use {', '.join(NORMS)})")


def check_budget(eps: float, steps: int, restarts: int, eot_samples: int) -> None:
    """The one check of an attack's budget, shared by the kernels and :class:`AttackConfig`."""
    if not eps >= 0:
        raise InvalidArgument("eps", f"eps must be non-negative, got {eps}")
    if steps < 0:
        raise InvalidArgument("steps", f"steps must be non-negative, got {steps}")
    if restarts < 1:
        raise InvalidArgument("restarts", f"restarts must be at least 1, got {restarts}")
    if eot_samples < 1:
        raise InvalidArgument("eot_samples", f"eot_samples must be at least 1, got {eot_samples}")


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, shaped N×1×…×1 to broadcast against ``t``."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def _project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the L2 ball of radius ``eps`` around ``x`` and onto [0, 1]."""
    delta = x_adv - x
    norm = _l2_norm(delta)
    factor = torch.clamp(eps / (norm + _TINY), max=1.0)
    return (x + delta * factor).clamp_(0.0, 1.0)


def _per_example_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    eot_samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of ``sum(loss_fn(model(x), y))`` w.r.t. ``x``, averaged over ``eot_samples`` passes.

    Returns ``(grad, logits, per_example_loss)`` of the last pass (logits and loss detached).
    Summing instead of averaging over the batch makes each example's gradient independent of the
    batch size.
    """
    grad = None
    for _ in range(eot_samples):
        x_req = x.detach().requires_grad_(True)
        logits = model(x_req)
        loss = loss_fn(logits, y)
        (g,) = torch.autograd.grad(loss.sum(), x_req)
        grad = g if grad is None else grad.add_(g)
    if eot_samples > 1:
        grad.div_(eot_samples)
    per_example = loss.detach() if loss.ndim == 1 else loss.detach().expand(x.shape[0])
    return grad, logits.detach(), per_example


# --- PGD / FGSM ----------------------------------------------------------------------------


def _noise(
    draw, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``draw`` (torch.rand or torch.randn) from ``generator`` on the CPU, or the global RNG."""
    if generator is None:
        return draw(shape, device=device)
    return draw(shape, generator=generator).to(device)


def _random_start(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniform point of the L∞ ball, or an L2-ball point at a uniform radius (as torchattacks)."""
    if norm == "linf":
        noise = _noise(torch.rand, x.shape, generator, x.device).mul_(2 * eps).sub_(eps)
        return (x + noise).clamp_(0.0, 1.0)
    direction = _noise(torch.randn, x.shape, generator, x.device)
    radius = _noise(torch.rand, (x.shape[0],) + (1,) * (x.ndim - 1), generator, x.device)
    direction.mul_(radius * eps / (_l2_norm(direction) + _TINY))
    return (x + direction).clamp_(0.0, 1.0)


def _pgd_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    random_start: bool,
    sign: float,
    eot_samples: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One PGD run from one starting point."""
    x_adv = _random_start(x, eps, norm, generator) if random_start and eps > 0 else x.clone()
    if norm == "linf":
        # The ε-box intersected with [0, 1], computed once: one clamp per step.
        low, high = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    for _ in range(steps):
        grad, _, _ = input_gradient(model, x_adv, y, loss_fn, eot_samples)
        with torch.no_grad():
            if norm == "linf":
                x_adv.add_(grad.sign_(), alpha=sign * alpha).clamp_(min=low, max=high)
            else:
                step = grad.div_(_l2_norm(grad) + _TINY)
                x_adv = _project_l2(x_adv.add_(step, alpha=sign * alpha), x, eps)
    return x_adv.detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    loss_fn: LossFn | None = None,
    targeted: bool = False,
    eot_samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) under the L∞ or L2 norm.

    Untargeted, it ascends ``loss_fn`` (default cross-entropy) at labels ``y``; with
    ``targeted=True``, ``y`` are the target labels and the loss is descended. L∞ steps are
    ``alpha·sign(∇)``, L2 steps ``alpha·∇/‖∇‖₂``; each is followed by projection onto the ε-ball
    and [0, 1]. With several ``restarts`` the worst case is kept per example: an example that any
    run misclassifies (hits the target) keeps such a point, the others keep the run of highest
    loss. ``generator`` seeds the random starts (default: the global RNG).
    """
    check_norm(norm)
    check_budget(eps, steps, restarts, eot_samples)
    loss_fn = loss_fn or _per_example_ce
    x, y = x.detach(), y.detach()
    sign = -1.0 if targeted else 1.0
    run_kwargs = dict(
        eps=eps,
        alpha=alpha,
        steps=steps,
        norm=norm,
        random_start=random_start,
        sign=sign,
        eot_samples=eot_samples,
        generator=generator,
    )
    best = _pgd_run(model, x, y, loss_fn, **run_kwargs)
    if restarts == 1:
        return best
    best_success, best_loss = _score(model, best, y, loss_fn, targeted)
    for _ in range(restarts - 1):
        cand = _pgd_run(model, x, y, loss_fn, **run_kwargs)
        success, loss = _score(model, cand, y, loss_fn, targeted)
        better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
        best[better] = cand[better]
        best_success = best_success | success
        best_loss = torch.where(better, loss, best_loss)
    return best


@torch.no_grad()
def _score(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, targeted: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each adversarial example succeeds, and its signed loss (to keep the worst case)."""
    logits = model(x_adv)
    loss = loss_fn(logits, y)
    loss = loss if loss.ndim == 1 else loss.expand(x_adv.shape[0])
    hit = logits.argmax(1) == y
    return (hit, -loss) if targeted else (~hit, loss)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 8 / 255,
    *,
    norm: str = "linf",
    loss_fn: LossFn | None = None,
    targeted: bool = False,
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size ``eps`` from ``x``.

    Under ``norm="l2"`` the step is along the normalised gradient (the fast gradient method).
    """
    return pgd(
        model,
        x,
        y,
        eps=eps,
        alpha=eps,
        steps=1,
        norm=norm,
        random_start=False,
        loss_fn=loss_fn,
        targeted=targeted,
    )


# --- APGD ----------------------------------------------------------------------------------


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein 2020), per example; shift and scale invariant.

    −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3), with z_π the logits sorted in decreasing order.
    """
    if logits.shape[1] < 3:
        raise InvalidArgument(None, "the DLR loss needs at least 3 classes")
    sorted_logits, order = logits.sort(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    top_is_true = order[:, -1] == y
    other = torch.where(top_is_true, sorted_logits[:, -2], sorted_logits[:, -1])
    return -(true - other) / (sorted_logits[:, -1] - sorted_logits[:, -3] + _TINY)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), per example."""
    if logits.shape[1] < 4:
        raise InvalidArgument(None, "the targeted DLR loss needs at least 4 classes")
    sorted_logits, _ = logits.sort(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    scale = sorted_logits[:, -1] - 0.5 * (sorted_logits[:, -3] + sorted_logits[:, -4]) + _TINY
    return -(true - tgt) / scale


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD checks whether to halve the step size.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (Croce & Hein 2020, §3.1).
    """
    points, prev, cur = [], 0.0, 0.22
    while cur <= 1.0:
        points.append(int(cur * steps + 1e-9))
        prev, cur = cur, cur + max(cur - prev - 0.03, 0.06)
    return sorted(set(p for p in points if 0 < p <= steps))


def _apgd_step(
    x_adv: torch.Tensor,
    x_prev: torch.Tensor,
    x: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor,
    momentum: float,
    eps: float,
    norm: str,
) -> torch.Tensor:
    """z = P(x + η∇-direction); x_new = P(x + α(z − x) + (1 − α)(x − x_prev))."""

    def project(t: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return torch.minimum(torch.maximum(t, x - eps), x + eps).clamp_(0.0, 1.0)
        return _project_l2(t, x, eps)

    if norm == "linf":
        z = project(x_adv + step_size * grad.sign())
    else:
        z = project(x_adv + step_size * grad / (_l2_norm(grad) + _TINY))
    return project(x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev))


def _apgd_init(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """APGD's starting point: a random point on the boundary direction of the ε-ball."""
    if norm == "linf":
        t = _noise(torch.rand, x.shape, generator, x.device).mul_(2).sub_(1)
        scale = t.flatten(1).abs().amax(1).view(-1, *([1] * (x.ndim - 1)))
        return (x + eps * t / (scale + _TINY)).clamp_(0.0, 1.0)
    t = _noise(torch.randn, x.shape, generator, x.device)
    return (x + eps * t / (_l2_norm(t) + _TINY)).clamp_(0.0, 1.0)


def _apgd_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    norm: str,
    steps: int,
    eot_samples: int,
    generator: torch.Generator,
    rho: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run. Returns (x of highest loss, still-correct mask, best loss, first fooling x).

    Step size starts at 2ε and is halved for an example at a checkpoint when, since the previous
    checkpoint, the loss increased in fewer than ρ = 75% of the steps, or when the step size was
    not reduced last time and the best loss did not improve; the iterate then restarts from the
    best point. Momentum 0.75 from the second step on.
    """
    n = x.shape[0]
    bshape = (n,) + (1,) * (x.ndim - 1)
    x_adv = _apgd_init(x, eps, norm, generator)
    grad, logits, loss = input_gradient(model, x_adv, y, loss_fn, eot_samples)
    correct = logits.argmax(1) == y
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
    x_fooled = torch.where(correct.view(bshape), x, x_adv)
    step_size = torch.full(bshape, 2.0 * eps, device=x.device)
    x_prev = x_adv.clone()
    checkpoints = apgd_checkpoints(steps)
    last_check = 0
    increases = torch.zeros(n, device=x.device)
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.zeros(n, dtype=torch.bool, device=x.device)
    prev_loss = loss
    for i in range(1, steps + 1):
        with torch.no_grad():
            momentum = 1.0 if i == 1 else rho
            x_new = _apgd_step(x_adv, x_prev, x, grad, step_size, momentum, eps, norm)
            x_prev, x_adv = x_adv, x_new
        grad, logits, loss = input_gradient(model, x_adv, y, loss_fn, eot_samples)
        with torch.no_grad():
            pred_ok = logits.argmax(1) == y
            newly_fooled = correct & ~pred_ok
            x_fooled[newly_fooled] = x_adv[newly_fooled]
            correct &= pred_ok
            increases += (loss > prev_loss).float()
            prev_loss = loss
            improved = loss > loss_best
            x_best[improved] = x_adv[improved]
            grad_best[improved] = grad[improved]
            loss_best = torch.where(improved, loss, loss_best)
            if i in checkpoints:
                window = i - last_check
                oscillating = increases <= rho * window
                stalled = ~reduced_last_check & (loss_best_last_check >= loss_best)
                reduce = oscillating | stalled
                step_size[reduce] /= 2.0
                x_adv[reduce] = x_best[reduce]
                grad[reduce] = grad_best[reduce]
                reduced_last_check = reduce
                loss_best_last_check = loss_best.clone()
                increases.zero_()
                last_check = i
    return x_best, correct, loss_best, x_fooled


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    targeted: bool = False,
    n_target_classes: int = 9,
    restarts: int = 1,
    eot_samples: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """Auto-PGD (Croce & Hein 2020): APGD-CE (``loss="ce"``), APGD-DLR, or APGD-T (``targeted``).

    Step-size free: the step starts at 2ε and is halved at checkpoints where progress stalls, with
    momentum 0.75. ``restarts`` random restarts are run only on examples not yet misclassified.
    APGD-T runs the targeted DLR loss once per target class — the ``n_target_classes`` highest
    non-true logits of the clean image — ``restarts`` times each. Returns, per example, the first
    misclassified point found or else the point of highest loss. ``seed`` seeds the random starts.
    """
    check_norm(norm)
    check_budget(eps, steps, restarts, eot_samples)
    if loss not in APGD_LOSSES:
        raise InvalidArgument("loss", f"unknown APGD loss '{loss}' (use {', '.join(APGD_LOSSES)})")
    x, y = x.detach(), y.detach()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clean_logits = model(x)
    robust = clean_logits.argmax(1) == y
    x_out = x.clone()
    # Examples that resist every run keep the point of highest cross-entropy (for robust loss);
    # CE rather than each run's own loss, so that runs with different losses compare.
    best_ce = torch.full((x.shape[0],), -math.inf, device=x.device)
    if targeted:
        n_targets = min(n_target_classes, clean_logits.shape[1] - 1)
        ranking = clean_logits.sort(dim=1)[1]
        targets: list[torch.Tensor | None] = [ranking[:, -(k + 2)] for k in range(n_targets)]
    else:
        targets = [None]
    for target in targets:
        for _ in range(restarts):
            todo = robust.nonzero().squeeze(1)
            if todo.numel() == 0:
                return x_out
            x_best, still, _, x_fooled = _apgd_run(
                model,
                x[todo],
                y[todo],
                _apgd_loss(loss, None if target is None else target[todo]),
                eps=eps,
                norm=norm,
                steps=steps,
                eot_samples=eot_samples,
                generator=generator,
            )
            fooled = todo[~still]
            x_out[fooled] = x_fooled[~still]
            robust[fooled] = False
            with torch.no_grad():
                ce = _per_example_ce(model(x_best), y[todo])
            keep = still & (ce > best_ce[todo])
            x_out[todo[keep]] = x_best[keep]
            best_ce[todo[keep]] = ce[keep]
    return x_out


def _apgd_loss(loss: str, target: torch.Tensor | None) -> LossFn:
    """The per-example loss APGD ascends: CE or DLR, or targeted DLR towards ``target``."""
    if target is not None:
        return lambda logits, y: dlr_targeted_loss(logits, y, target)
    return dlr_loss if loss == "dlr" else _per_example_ce


# --- randomised models (EOT over a curve) --------------------------------------------------


class RandomPointModel(nn.Module):
    """A model whose every forward call runs one model drawn at random.

    Built from a list of models — e.g. the points φ(t) of a curve on a grid of t, each with its own
    BatchNorm statistics — or from a callable ``sample_model() -> nn.Module`` that draws one (e.g.
    a curve at t ~ U(0, 1)). The adaptive (EOT) attack against a whole curve is then
    ``pgd(RandomPointModel(models), x, y, eot_samples=K)``. ``generator`` makes the draws
    reproducible.
    """

    def __init__(
        self,
        models: Sequence[nn.Module] | None = None,
        *,
        sample_model: Callable[[], nn.Module] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if (models is None) == (sample_model is None):
            raise InvalidArgument(
                "models", "RandomPointModel needs either a list of models or sample_model"
            )
        if models is not None and len(models) == 0:
            raise InvalidArgument("models", "RandomPointModel needs at least one model")
        self.models = nn.ModuleList(models) if models is not None else None
        self.sample_model = sample_model
        self.generator = generator
        self.last_index: int | None = None

    def draw(self) -> nn.Module:
        """The model the next forward call would use (drawn now)."""
        if self.models is None:
            return self.sample_model()
        idx = int(torch.randint(len(self.models), (1,), generator=self.generator))
        self.last_index = idx
        return self.models[idx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.draw()(x)


#: The attacks :class:`~modeconn.attacks.config.AttackConfig` can build.
ATTACKS = ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "apgd-t")

#: ``attack(model, x, y) -> x_adv``
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackFn",
    "LossFn",
    "RandomPointModel",
    "apgd",
    "apgd_checkpoints",
    "check_budget",
    "check_norm",
    "dlr_loss",
    "dlr_targeted_loss",
    "fgsm",
    "input_gradient",
    "pgd",
]
