"""The largest eigenvalue of the input Hessian ∇²_x ℓ(f(x), y), for every image of a batch at once.

In eval mode the images of a batch do not interact (no batch statistics, no dropout), so the
gradient of the *summed* loss, g = ∇_x Σ_b ℓ(f(x_b), y_b), has rows g_b = ∇_{x_b} ℓ_b and one
double backprop, ∂(Σ_b g_b·v_b)/∂x, returns H_b v_b for every image b together. The per-image
power (or Lanczos) iterations therefore share one batched Hessian-vector product per step, and
the graph of g is built once per batch and reused by every step.

For a ReLU network f is piecewise linear in x, so H_b = J_bᵀ ∇²_z CE J_b: positive semi-definite
and of rank at most C − 1 (C classes) — the curvature comes only through the softmax, which is what
Zhao et al. (2020) measure along a path. Power iteration then finds the largest eigenvalue, and
Lanczos finds it exactly within C − 1 steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.landscape.linalg import SOLVERS, EigResult, top_eigenvalues
from modeconn.modes import eval_mode


@contextmanager
def eval_without_param_grads(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and parameters frozen for the block, restored after it.

    Freezing keeps the double backprop from building (and paying for) parameter-gradient graphs
    when only input derivatives are wanted.
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with eval_mode(model):
            yield model
    finally:
        for p in frozen:
            p.requires_grad_(True)


def input_hvp_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Return ``matvec(V)`` with rows H_b v_b for the (B, d) batch ``V`` (call in eval mode).

    The gradient graph is built here once; every call differentiates it again (double backprop).
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    shape = x.shape

    def matvec(v: torch.Tensor) -> torch.Tensor:
        if not grad.requires_grad:  # the loss is linear in x: the Hessian is zero
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(
            grad, x, grad_outputs=v.reshape(shape), retain_graph=True, allow_unused=True
        )
        return torch.zeros_like(v) if hv is None else hv.reshape(v.shape)

    return matvec


def input_hessian_eig(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "power",
    iters: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> EigResult:
    """λ_max of ∇²_x ℓ(f(x_b), y_b) for each image b of the batch, with the eigenvectors.

    ``method`` is ``"power"`` (dominant eigenvalue) or ``"lanczos"`` (largest eigenvalue); an
    image stops iterating once the relative residual of its eigenpair is ≤ ``tol``, and the batch
    stops once all have, or after ``iters`` Hessian-vector products. Power iteration rebuilds its
    batched operator on the images still iterating whenever half of them have converged, so slow
    images do not make the whole batch pay (one extra forward/backward pass each time).
    """
    if method not in SOLVERS:
        raise InvalidArgument(None, f"unknown eigen-solver '{method}' (use {', '.join(SOLVERS)})")
    if x.shape[0] != y.shape[0]:
        raise ModeconnError(f"{x.shape[0]} images but {y.shape[0]} labels")
    with eval_without_param_grads(model):
        return top_eigenvalues(
            input_hvp_operator(model, x, y),
            x.shape[0],
            x[0].numel(),
            method=method,
            iters=iters,
            tol=tol,
            generator=generator,
            dtype=x.dtype,
            device=x.device,
            restrict=lambda rows: input_hvp_operator(model, x[rows], y[rows]),
        )


def input_hessian_lmax(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """Just the per-image largest eigenvalues (B,) of :func:`input_hessian_eig`."""
    return input_hessian_eig(model, x, y, **kwargs).values


@dataclass
class InputHessianStats:
    """Per-image λ_max over a data set and how the solver did."""

    eigenvalues: torch.Tensor
    converged: torch.Tensor
    matvecs: torch.Tensor

    @property
    def mean(self) -> float:
        return float(self.eigenvalues.mean())

    @property
    def max(self) -> float:
        return float(self.eigenvalues.max())

    def summary(self) -> dict[str, float]:
        """Flat figures under the names used in path tables and summaries."""
        return {
            "input_hessian_lmax": self.mean,
            "input_hessian_lmax_max": self.max,
            "input_hessian_converged": float(self.converged.float().mean()),
            "input_hessian_hvps": float(self.matvecs.float().mean()),
            "n": int(self.eigenvalues.numel()),
        }


def input_hessian_stats(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    method: str = "power",
    iters: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> InputHessianStats:
    """λ_max of the input Hessian of every image in ``batches`` (mean and max over the set).

    One generator seeded with ``seed`` draws every start vector, so the same seed gives the same
    numbers.
    """
    generator = torch.Generator().manual_seed(seed)
    values, converged, matvecs = [], [], []
    for x, y in batches:
        res = input_hessian_eig(
            model,
            x.to(device),
            y.to(device),
            method=method,
            iters=iters,
            tol=tol,
            generator=generator,
        )
        values.append(res.values.detach().cpu())
        converged.append(res.converged.cpu())
        matvecs.append(res.matvecs.cpu())
    if not values:
        raise ModeconnError("cannot compute input-Hessian eigenvalues of an empty data set")
    return InputHessianStats(torch.cat(values), torch.cat(converged), torch.cat(matvecs))


def dense_input_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The full d×d input Hessian of one image (``x`` of shape C×H×W) — a reference for tests."""
    with eval_without_param_grads(model):

        def loss(inp: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(inp[None]), y.reshape(1))

        hess = torch.autograd.functional.hessian(loss, x.detach())
    return hess.reshape(x.numel(), x.numel())
