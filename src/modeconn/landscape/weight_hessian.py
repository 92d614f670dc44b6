"""Spectrum of the Hessian of the loss with respect to the weights.

:class:`WeightHessian` turns a model and a fixed set of batches into Hessian-vector products of the
mean loss over those batches (eval mode, so the function is deterministic); the solvers of
:mod:`modeconn.landscape.linalg` then give

* the top-k eigenvalues — by power iteration with deflation or by Lanczos
  (:func:`hessian_eigenvalues`),
* the trace — by Hutchinson's estimator (:func:`hessian_trace`),
* the spectral density — by stochastic Lanczos quadrature (:func:`hessian_density`),

as in PyHessian (Yao et al. 2020). Vectors live in the flat parameter space of the trainable
parameters, in ``model.parameters()`` order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.landscape.linalg import (
    EigResult,
    SpectralDensity,
    TraceEstimate,
    hutchinson_trace,
    slq_density,
    top_eigenvalues,
)
from modeconn.modes import eval_mode

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class WeightHessian:
    """Hessian-vector products of the mean loss over ``batches`` w.r.t. the trainable parameters.

    The batches are kept (on ``device``) so that every product sees the same function. Each
    product costs one forward and two backward passes per batch; products for several vectors
    (rows of a (B, d) matrix) share the forward pass and the first backward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        *,
        loss_fn: LossFn = F.cross_entropy,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ModeconnError("the model has no trainable parameters")
        self.batches = [(x.to(device), y.to(device)) for x, y in batches]
        if not self.batches:
            raise InvalidArgument(None, "the weight Hessian needs at least one batch of data")
        self.count = sum(int(y.shape[0]) for _, y in self.batches)
        self.loss_fn = loss_fn
        self.dim = sum(p.numel() for p in self.params)
        self.matvecs = 0

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        """A flat vector as a list of parameter-shaped views."""
        out, start = [], 0
        for p in self.params:
            out.append(v[start : start + p.numel()].view_as(p))
            start += p.numel()
        return out

    def matvec(self, vectors: torch.Tensor) -> torch.Tensor:
        """H V for the rows of ``vectors`` (B, d); one counted product per row."""
        out = torch.zeros_like(vectors)
        with eval_mode(self.model):
            for x, y in self.batches:
                weight = y.shape[0] / self.count
                loss = self.loss_fn(self.model(x), y) * weight
                grads = torch.autograd.grad(loss, self.params, create_graph=True)
                for row, v in enumerate(vectors):
                    dot = sum((g * u).sum() for g, u in zip(grads, self._split(v), strict=True))
                    hv = torch.autograd.grad(
                        dot, self.params, retain_graph=row < len(vectors) - 1, allow_unused=True
                    )
                    out[row] += torch.cat(
                        [
                            (torch.zeros_like(p) if h is None else h).reshape(-1)
                            for h, p in zip(hv, self.params, strict=True)
                        ]
                    )
        self.matvecs += vectors.shape[0]
        return out

    @torch.no_grad()
    def loss(self) -> float:
        """The mean loss whose Hessian this is."""
        with eval_mode(self.model):
            total = sum(float(self.loss_fn(self.model(x), y)) * y.shape[0] for x, y in self.batches)
        return total / self.count

    def dense(self) -> torch.Tensor:
        """The full d×d Hessian (d HVPs' worth of work) — a reference for small models only."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        rows = [self.matvec(eye[i : i + 64]) for i in range(0, self.dim, 64)]
        hess = torch.cat(rows)
        return 0.5 * (hess + hess.T)


def hessian_eigenvalues(
    hessian: WeightHessian,
    *,
    k: int = 1,
    method: str = "lanczos",
    iters: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
) -> EigResult:
    """The top-k eigenvalues (descending) of the weight Hessian, with eigenvectors (one problem)."""
    res = top_eigenvalues(
        hessian.matvec,
        1,
        hessian.dim,
        k=k,
        method=method,
        iters=iters,
        tol=tol,
        generator=torch.Generator().manual_seed(seed),
        dtype=hessian.dtype,
        device=hessian.device,
    )
    values = res.values.reshape(1, -1)[0]
    vectors = res.vectors.reshape(1, values.numel(), -1)[0]
    return EigResult(
        values, vectors, res.residuals.reshape(-1), res.converged, res.matvecs, res.iterations
    )


def hessian_trace(
    hessian: WeightHessian,
    *,
    max_samples: int = 100,
    min_samples: int = 10,
    tol: float = 1e-2,
    eigenvectors: torch.Tensor | None = None,
    batch: int = 8,
    seed: int = 0,
) -> TraceEstimate:
    """tr(H) by Hutchinson's estimator, stopping at relative standard error ``tol``.

    Pass the top ``eigenvectors`` (k, d) from :func:`hessian_eigenvalues` to take their part of
    the trace exactly and estimate only the rest — far fewer probes for the same error. Probes
    go ``batch`` at a time (they share each batch's forward and first backward pass).
    """
    return hutchinson_trace(
        hessian.matvec,
        hessian.dim,
        max_samples=max_samples,
        min_samples=min_samples,
        tol=tol,
        batch=batch,
        basis=eigenvectors,
        generator=torch.Generator().manual_seed(seed),
        dtype=hessian.dtype,
        device=hessian.device,
    )


def hessian_density(
    hessian: WeightHessian, *, steps: int = 30, probes: int = 3, seed: int = 0
) -> SpectralDensity:
    """The eigenvalue density of the weight Hessian by stochastic Lanczos quadrature."""
    return slq_density(
        hessian.matvec,
        hessian.dim,
        steps=steps,
        probes=probes,
        generator=torch.Generator().manual_seed(seed),
        dtype=hessian.dtype,
        device=hessian.device,
    )
