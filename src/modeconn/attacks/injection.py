"""Error injection by fault sneaking (Zhao et al. 2019): change one parameter tensor so that a
few chosen images go to chosen wrong labels while many others keep their correct labels.

The attack optimises a perturbation δ of a single tensor W (default: the weight of the last
linear layer) by gradient descent with momentum on

    w_S · mean_S hinge(z, t; κ_S) + mean_R [hinge(z, y; κ_R) + β·KL(p₀ ‖ p)] + λ‖δ‖²,
    hinge(z, c; κ) = max(max_{j≠c} z_j − z_c + κ, 0)

— the C&W hinge on the logits pushes the S images to their injected labels t and holds the R
images at their true labels y (it is zero once a class leads by κ); the keep-loss on R adds the
KL divergence of the model's predictions p from the clean model's p₀ (``fidelity`` β), which
holds R's whole output distribution and not only its labels. It stops as soon as every S image is
at its injected label while every R image keeps its own; if that never happens within ``steps``,
the iterate with the most S flipped (then the most R kept) is used.

Why these choices (measured on Fashion-MNIST and digits LeNets, S = 4, R = 1000): stopping at the
first flip of S costs 15–30 points of clean accuracy — the S term wins the race before the keep
term can repair anything; Adam's per-coordinate scaling spreads the change over every weight
(3–8 points) where plain gradient descent costs about one; the KL term (β = 10) with a small S
weight (w_S = 0.3) brings the collateral damage down to about 0.3–0.5 points on Fashion-MNIST.

Budgets on δ:

- ``l2``: the penalty λ‖δ‖² (``penalty``), and optionally a hard radius ``budget`` (projection);
- ``l0``: at most ``budget`` weights change. A dense run (as ``l2``) finds which weights matter;
  the ``budget`` largest changes are kept as a fixed mask and δ is optimised again on the mask
  alone (thresholding from the first step would fix the mask on the first, noisy gradients).

S are correctly classified images of the data set's **test** split (``InjectionSpec.targets``
index ``data.raw.test_x``): a repair draws its bonafide data from the training split, so it can
never see S with their true labels. R are correctly classified images of the **training** split
(``keep`` index ``data.raw.train_x`` as loaded, i.e. after ``train_limit``), so the clean test
accuracy is not measured on images the attack held in place. Flipping S moves the test accuracy
by |S| / |test| by itself; ``run_inject`` also reports the accuracy on the other test images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from modeconn.data import to_unit_float
from modeconn.data.prepare import PreparedData
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models import last_linear_name
from modeconn.modes import eval_mode

NORMS = ("l2", "l0")
LABEL_MODES = ("next", "random")
DEFAULT_L0_FRACTION = 0.1


@dataclass
class InjectionSpec:
    """Which tensor, which images and labels, and the budget of one error injection.

    Stored in the injected model's sidecar as ``attack = {"type": "injection", ...}`` so that a
    later command can measure :func:`injection_success` along a path.
    """

    targets: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    keep: list[int] = field(default_factory=list)
    param: str | None = None
    norm: str = "l2"
    budget: float | None = None
    penalty: float = 1e-3
    target_weight: float = 0.3
    fidelity: float = 10.0
    margin: float = 0.1
    keep_margin: float = 0.5
    steps: int = 3000
    lr: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        self.targets = [int(i) for i in self.targets]
        self.labels = [int(c) for c in self.labels]
        self.keep = [int(i) for i in self.keep]
        self.validate()

    def validate(self) -> None:
        """Reject settings that cannot describe an injection, with one line naming the field."""
        if self.norm not in NORMS:
            raise InvalidArgument(None, f"unknown norm '{self.norm}' for injection (use l2, l0)")
        if len(self.targets) != len(self.labels):
            raise ModeconnError(
                f"{len(self.targets)} target images but {len(self.labels)} injected labels"
            )
        if self.budget is not None and not self.budget > 0:
            raise InvalidArgument(None, f"injection budget must be positive, got {self.budget}")
        if self.steps < 1:
            raise InvalidArgument(None, f"injection steps must be at least 1, got {self.steps}")
        if self.penalty < 0 or self.fidelity < 0 or self.target_weight <= 0 or not self.lr > 0:
            raise ModeconnError(
                "injection penalty ≥ 0, fidelity ≥ 0, target weight > 0 and lr > 0 are required"
            )

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's ``attack`` entry."""
        return {"type": "injection", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InjectionSpec:
        """Inverse of :meth:`to_dict`."""
        record = {k: v for k, v in data.items() if k != "type"}
        unknown = sorted(set(record) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidArgument(None, f"unknown injection spec fields: {', '.join(unknown)}")
        return cls(**record)


def resolve_param(model: nn.Module, name: str | None) -> str:
    """The qualified name of the tensor to perturb (default: the last linear layer's weight)."""
    name = name or last_linear_name(model)
    names = dict(model.named_parameters())
    if name not in names:
        choices = ", ".join(list(names)[-4:])
        raise ModeconnError(f"the model has no parameter '{name}' (its last ones: {choices})")
    return name


@torch.no_grad()
def _predictions(
    model: nn.Module, images: torch.Tensor, device: torch.device | str, batch: int = 1024
) -> torch.Tensor:
    """Predicted classes of uint8 (or float) images, in eval mode, in chunks."""
    preds = [
        model(to_unit_float(images[i : i + batch]).to(device)).argmax(1).cpu()
        for i in range(0, images.shape[0], batch)
    ]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def _pick_correct(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    pool: torch.Tensor,
    count: int,
    generator: torch.Generator,
    device: torch.device | str,
) -> torch.Tensor:
    """``count`` seeded random indices of ``pool`` whose images ``model`` classifies correctly."""
    pool = pool[torch.randperm(pool.numel(), generator=generator)]
    chosen: list[torch.Tensor] = []
    found = 0
    for start in range(0, pool.numel(), 4 * max(count, 256)):
        chunk = pool[start : start + 4 * max(count, 256)]
        ok = chunk[_predictions(model, images[chunk], device) == labels[chunk]]
        chosen.append(ok[: count - found])
        found += chosen[-1].numel()
        if found == count:
            break
    return torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)


def injected_labels(
    true: torch.Tensor, num_classes: int, label_mode: str, generator: torch.Generator
) -> torch.Tensor:
    """Wrong labels for ``true``: (y + 1) mod C (``next``) or a seeded random class ≠ y."""
    if label_mode not in LABEL_MODES:
        raise InvalidArgument(
            None, f"unknown label mode '{label_mode}' (use {', '.join(LABEL_MODES)})"
        )
    if label_mode == "next":
        return (true + 1) % num_classes
    shift = torch.randint(1, num_classes, true.shape, generator=generator)
    return (true + shift) % num_classes


def choose_injection_sets(
    model: nn.Module,
    data: PreparedData,
    *,
    num_targets: int = 4,
    num_keep: int = 1000,
    label_mode: str = "next",
    targets: list[int] | None = None,
    labels: list[int] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[list[int], list[int], list[int]]:
    """Seeded S (test images), injected labels and R (training images), all correctly classified.

    ``targets`` (indices into the test images) and ``labels`` may be given instead of drawn;
    injected labels are otherwise chosen by ``label_mode`` (see :func:`injected_labels`). R may
    come out smaller than ``num_keep`` when the training split has fewer correct images.
    """
    if num_targets < 1 or num_keep < 0:
        raise InvalidArgument(
            ("num_targets", "num_keep"), "num_targets must be at least 1 and num_keep non-negative"
        )
    generator = torch.Generator().manual_seed(seed)
    raw, num_classes = data.raw, data.info.num_classes
    with eval_mode(model):
        if targets is None:
            chosen = _pick_correct(
                model, raw.test_x, raw.test_y, data.indices("test"), num_targets, generator, device
            )
            if chosen.numel() < num_targets:
                raise ModeconnError(
                    f"only {chosen.numel()} correctly classified test images "
                    f"for {num_targets} targets"
                )
        else:
            chosen = torch.as_tensor(targets, dtype=torch.long)
            if chosen.numel() == 0 or int(chosen.min()) < 0 or int(chosen.max()) >= len(raw.test_y):
                raise InvalidArgument(
                    None, f"target image indices must lie in 0..{len(raw.test_y) - 1}"
                )
        keep = _pick_correct(
            model, raw.train_x, raw.train_y, data.indices("train"), num_keep, generator, device
        )
    if labels is None:
        labels_t = injected_labels(raw.test_y[chosen], num_classes, label_mode, generator)
    else:
        labels_t = torch.as_tensor(labels, dtype=torch.long)
        if labels_t.shape != chosen.shape:
            raise ModeconnError(f"{chosen.numel()} target images but {labels_t.numel()} labels")
    return chosen.tolist(), labels_t.tolist(), keep.sort().values.tolist()


def cw_hinge(logits: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Per-example C&W hinge max(max_{j≠c} z_j − z_c + κ, 0): zero once class c leads by κ."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf).amax(1)
    return (others - own + margin).clamp(min=0)


def _images(data: PreparedData, split: str, indices: list[int], device) -> tuple:
    images, labels = data.tensors(split)
    idx = torch.as_tensor(indices, dtype=torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= images.shape[0]):
        raise InvalidArgument(None, f"injection image indices must lie in 0..{images.shape[0] - 1}")
    return to_unit_float(images[idx]).to(device), labels[idx].to(device)


def _logits_fn(
    model: nn.Module, name: str, x: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``w ↦ logits of x`` with tensor ``name`` replaced by ``w``.

    When the tensor is the weight of a linear layer whose output *is* the model's output (the
    default target), the layer's inputs are computed once and each call is one matrix product;
    this is checked numerically. Otherwise every call runs the whole model (functional_call).
    """
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(module, nn.Linear) and attr == "weight":
        captured: dict[str, torch.Tensor] = {}
        handle = module.register_forward_hook(
            lambda _m, inputs, output: captured.update(x=inputs[0], y=output)
        )
        with torch.no_grad():
            out = model(x)
        handle.remove()
        if captured and captured["y"].shape == out.shape and torch.equal(captured["y"], out):
            features, bias = captured["x"], module.bias
            return lambda w: F.linear(features, w, bias)
    return lambda w: functional_call(model, {name: w}, (x,))


def _optimise(
    model: nn.Module,
    name: str,
    w0: torch.Tensor,
    batches: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    spec: InjectionSpec,
    mask: torch.Tensor | None,
    start: torch.Tensor,
) -> tuple[torch.Tensor, int, bool]:
    """SGD on δ (restricted to ``mask``); returns (best δ, steps taken, whether S all flipped).

    Stops as soon as every S image is at its injected label while every R image keeps its label.
    Otherwise the best iterate is returned: most S images flipped, then most R images kept.
    """
    xs, ts, xr, yr = batches
    delta = start.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([delta], lr=spec.lr, momentum=0.9)
    n_s, n_r = xs.shape[0], xr.shape[0]
    forward = _logits_fn(model, name, torch.cat([xs, xr]))
    with torch.no_grad():
        original = forward(w0)[n_s:].log_softmax(1)
    best, best_score = start.clone(), (-1, -1)
    for step in range(spec.steps + 1):
        d = delta if mask is None else delta * mask
        logits = forward(w0 + d)
        with torch.no_grad():
            score = (
                int((logits[:n_s].argmax(1) == ts).sum()),
                int((logits[n_s:].argmax(1) == yr).sum()),
            )
            if score > best_score:
                best, best_score = d.detach().clone(), score
        if best_score == (n_s, n_r) or step == spec.steps:
            break
        loss = spec.target_weight * cw_hinge(logits[:n_s], ts, spec.margin).mean()
        if n_r:
            keep = logits[n_s:]
            loss = loss + cw_hinge(keep, yr, spec.keep_margin).mean()
            if spec.fidelity:
                kl = F.kl_div(keep.log_softmax(1), original, log_target=True, reduction="batchmean")
                loss = loss + spec.fidelity * kl
        loss = loss + spec.penalty * d.pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if spec.norm == "l2" and spec.budget is not None:
            with torch.no_grad():
                delta.mul_(torch.clamp(spec.budget / (delta.norm() + 1e-12), max=1.0))
    return best, step, best_score[0] == n_s


def l0_budget(spec: InjectionSpec, numel: int) -> int:
    """How many weights an L0 injection may change (default: 10% of the tensor)."""
    if spec.budget is None:
        return max(1, math.ceil(DEFAULT_L0_FRACTION * numel))
    return max(1, min(numel, int(spec.budget)))


def inject_errors(
    model: nn.Module,
    data: PreparedData,
    spec: InjectionSpec,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Apply the fault-sneaking attack of ``spec`` to ``model`` **in place**; return its figures.

    Returns ``injection_success`` (fraction of S at their injected labels), ``keep_acc``
    (accuracy on R), ``changed_weights`` (entries of the tensor that changed), ``change_l2`` and
    ``change_linf`` (norms of δ) and ``steps`` (gradient steps taken).
    """
    if not spec.targets:
        raise InvalidArgument(None, "an injection needs at least one target image")
    name = resolve_param(model, spec.param)
    spec.param = name
    num_classes = data.info.num_classes
    if any(not 0 <= c < num_classes for c in spec.labels):
        raise InvalidArgument(None, f"injected labels must lie in 0..{num_classes - 1}")
    model.to(device)
    with eval_mode(model):
        xs, _ = _images(data, "test", spec.targets, device)
        xr, yr = _images(data, "train", spec.keep, device)
        ts = torch.as_tensor(spec.labels, dtype=torch.long, device=device)
        param = dict(model.named_parameters())[name]
        w0 = param.detach().clone()
        batches = (xs, ts, xr, yr)
        dense_spec = (
            spec if spec.norm == "l2" else InjectionSpec(**{**asdict(spec), "budget": None})
        )
        delta, steps, success = _optimise(
            model, name, w0, batches, dense_spec, None, torch.zeros_like(w0)
        )
        if spec.norm == "l0":
            k = l0_budget(spec, w0.numel())
            mask = torch.zeros(w0.numel(), device=w0.device)
            mask[delta.abs().flatten().topk(k).indices] = 1.0
            mask = mask.view_as(w0)
            delta, more, success = _optimise(model, name, w0, batches, spec, mask, delta * mask)
            steps += more
        with torch.no_grad():
            param.copy_(w0 + delta)
            preds_s = model(xs).argmax(1)
            keep_acc = float((model(xr).argmax(1) == yr).float().mean()) if xr.shape[0] else 1.0
    changed = delta != 0
    return {
        "injection_success": float((preds_s == ts).float().mean()),
        "keep_acc": keep_acc,
        "changed_weights": int(changed.sum()),
        "change_l2": float(delta.norm()),
        "change_linf": float(delta.abs().max()),
        "steps": steps,
        "converged": success,
    }


@torch.no_grad()
def injection_success(
    model: nn.Module,
    data: PreparedData,
    spec: InjectionSpec,
    device: torch.device | str = "cpu",
) -> float:
    """The fraction of the S images ``model`` (eval mode) classifies as their injected labels."""
    if not spec.targets:
        raise ModeconnError("the injection spec names no target images")
    xs, _ = _images(data, "test", spec.targets, device)
    ts = torch.as_tensor(spec.labels, dtype=torch.long, device=device)
    with eval_mode(model):
        return (model(xs).argmax(1) == ts).float().mean().item()


__all__ = [
    "InjectionSpec",
    "choose_injection_sets",
    "cw_hinge",
    "inject_errors",
    "injected_labels",
    "injection_success",
    "l0_budget",
    "resolve_param",
]
