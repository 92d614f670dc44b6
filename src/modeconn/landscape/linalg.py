"""Matrix-free symmetric eigen-solvers on batches of problems.

Everything here sees a Hessian only through ``matvec(V) -> H V`` where ``V`` is a ``(B, d)`` batch
of vectors, one row per *independent* problem: for the input Hessian a row is one image and its own
Hessian, for the weight Hessian a row is one probe vector of the same Hessian. Running the
per-problem iterations side by side lets one batched Hessian-vector product (HVP) serve them all.

* :func:`power_iteration` — the dominant eigenpair (largest |λ|), optionally deflated against
  known eigenvectors (top-k by deflation).
* :func:`lanczos` — the k largest (algebraic) eigenvalues from a Krylov subspace with full
  reorthogonalisation; usually far fewer HVPs than power iteration for the same tolerance.
* :func:`lanczos_tridiagonal`, :func:`slq_density` — stochastic Lanczos quadrature of the spectral
  density (Ghorbani et al. 2019; Yao et al. 2020, PyHessian).
* :func:`hutchinson_trace` — tr(H) ≈ mean of zᵀHz over Rademacher z (Hutchinson 1989).

Convergence is measured the same way for every solver, by the relative residual of the eigenpair,
‖Hv − θv‖ / |θ| ≤ ``tol``; for a symmetric matrix that bounds the eigenvalue error by
``tol·|θ|`` (and by ``tol²·|θ|²/gap`` once the pair is isolated), so the solvers can be compared
HVP for HVP at one tolerance.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from modeconn.errors import InvalidArgument, ModeconnError

MatVec = Callable[[torch.Tensor], torch.Tensor]
#: ``restrict(rows)`` → the operator of only the problems ``rows`` (see :func:`power_iteration`)
Restrict = Callable[[torch.Tensor], MatVec]
SOLVERS = ("lanczos", "power")

_TINY = 1e-30


@dataclass
class EigResult:
    """Eigenpairs of a batch of B problems.

    ``values`` is ``(B,)`` for one eigenvalue per problem and ``(B, k)`` (descending) for k;
    ``vectors`` matches with a trailing ``d``. ``matvecs`` is, per problem, how many HVPs it took
    to converge (or the cap); ``iterations`` is how many batched HVP calls were made in all.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor
    matvecs: torch.Tensor
    iterations: int


def _check(iters: int, tol: float) -> None:
    if iters < 1:
        raise InvalidArgument(None, f"the iteration cap must be at least 1, got {iters}")
    if not tol > 0:
        raise InvalidArgument(None, f"the tolerance must be positive, got {tol}")


def _normalize(v: torch.Tensor) -> torch.Tensor:
    """Rows of ``v`` scaled to unit norm (zero rows stay zero)."""
    return v / v.norm(dim=1, keepdim=True).clamp_min(_TINY)


def _project_out(v: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Remove from each row of ``v`` (B, d) its components along the orthonormal rows of
    ``basis`` (B, j, d)."""
    if basis is None or basis.shape[1] == 0:
        return v
    coeffs = torch.einsum("bjd,bd->bj", basis, v)
    return v - torch.einsum("bjd,bj->bd", basis, coeffs)


def power_iteration(
    matvec: MatVec,
    v0: torch.Tensor,
    *,
    iters: int = 100,
    tol: float = 1e-3,
    deflate: torch.Tensor | None = None,
    restrict: Restrict | None = None,
) -> EigResult:
    """Dominant eigenpair of each of B symmetric operators by power iteration.

    ``v0`` (B, d) are the starting vectors. With ``deflate`` (B, j, d), orthonormal eigenvectors
    already found, the iteration runs on P H P with P the projector onto their complement, so it
    finds the next eigenpair (top-k by deflation). A problem stops updating once its relative
    residual is ≤ ``tol``; the loop ends when every problem has converged or after ``iters`` HVPs.
    An operator that maps the start to zero (a zero Hessian) converges at once with eigenvalue 0.

    Power iteration needs very different numbers of steps per problem (the gap λ₂/λ₁ decides), so
    a batch would keep paying for its slowest members. Given ``restrict(rows)``, which returns the
    operator of just those problems (e.g. the input Hessians of a sub-batch of images), the
    iteration shrinks its working set to the unconverged problems whenever half or more have
    converged.
    """
    _check(iters, tol)
    v = _normalize(_project_out(v0, deflate))
    batch = v.shape[0]
    values = v.new_zeros(batch)
    residuals = v.new_full((batch,), math.inf)
    active = torch.ones(batch, dtype=torch.bool, device=v.device)
    counts = torch.zeros(batch, dtype=torch.long, device=v.device)
    rows = torch.arange(batch, device=v.device)  # the problems the current operator serves
    it = 0
    while it < iters:
        it += 1
        basis = None if deflate is None else deflate[rows]
        v_rows = v[rows]
        hv = _project_out(matvec(v_rows), basis)
        theta = (v_rows * hv).sum(1)
        res = (hv - theta[:, None] * v_rows).norm(dim=1) / theta.abs().clamp_min(_TINY)
        was_active = active[rows]
        values[rows] = torch.where(was_active, theta, values[rows])
        residuals[rows] = torch.where(was_active, res, residuals[rows])
        counts[rows] += was_active.long()
        still = was_active & (res > tol)
        active[rows] = still
        if not bool(still.any()):
            break
        v[rows] = torch.where(still[:, None], _normalize(hv), v_rows)
        if restrict is not None and 2 * int(still.sum()) <= len(rows):
            rows = rows[still]
            matvec = restrict(rows)
    return EigResult(values, v, residuals, ~active, counts, it)


def _tridiagonal(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Batched symmetric tridiagonal matrices from diagonals (B, m) and off-diagonals (B, m−1)."""
    t = torch.diag_embed(alpha)
    if beta.shape[1]:
        t = t + torch.diag_embed(beta, offset=1) + torch.diag_embed(beta, offset=-1)
    return t


def _lanczos_steps(
    matvec: MatVec, v0: torch.Tensor, steps: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run Lanczos with full reorthogonalisation; after step j yield (α, β, Q, β_next).

    α (B, j) and β (B, j−1) define the tridiagonal T_j = Qᵀ H Q, Q (B, j, d) the orthonormal
    Krylov basis, and β_next (B,) the norm of the next residual, which gives the Ritz residuals.
    A row whose residual vanishes exactly (a zero operator) continues with a zero vector and adds
    nothing while the other rows go on; a merely tiny residual is renormalised and, being
    reorthogonalised against the whole basis, restarts the iteration in the complement.
    """
    q = _normalize(v0)
    basis: list[torch.Tensor] = [q]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    beta = q.new_zeros(q.shape[0])
    q_prev = torch.zeros_like(q)
    for _ in range(steps):
        w = matvec(q)
        alpha = (q * w).sum(1)
        w = w - alpha[:, None] * q - beta[:, None] * q_prev
        q_stack = torch.stack(basis, dim=1)
        for _ in range(2):  # full reorthogonalisation; twice is enough (Kahan–Parlett)
            w = _project_out(w, q_stack)
        beta = w.norm(dim=1)
        alphas.append(alpha)
        off_diagonal = torch.stack(betas, 1) if betas else alpha.new_zeros(alpha.shape[0], 0)
        yield torch.stack(alphas, 1), off_diagonal, q_stack, beta
        q_prev, q = q, w / beta.clamp_min(_TINY)[:, None]
        betas.append(beta)
        basis.append(q)


def lanczos(
    matvec: MatVec,
    v0: torch.Tensor,
    *,
    k: int = 1,
    iters: int = 100,
    tol: float = 1e-3,
) -> EigResult:
    """The ``k`` largest eigenpairs of each of B symmetric operators by the Lanczos method.

    Full reorthogonalisation keeps the basis orthonormal (no ghost eigenvalues) at the price of
    storing it: ``iters × d`` per problem. A problem has converged when each of its top-k Ritz
    pairs has relative residual β_{j+1}·|s_{j,i}| / |θ_i| ≤ ``tol``. Values are returned
    descending, shaped (B,) for ``k == 1`` and (B, k) otherwise.
    """
    _check(iters, tol)
    if k < 1:
        raise InvalidArgument("k", f"k must be at least 1, got {k}")
    batch, dim = v0.shape
    steps = min(iters, dim)
    if k > steps:
        raise ModeconnError(f"cannot find {k} eigenvalues with {steps} Lanczos steps")
    values = v0.new_zeros(batch, k)
    residuals = v0.new_full((batch, k), math.inf)
    vectors = v0.new_zeros(batch, k, dim)
    active = torch.ones(batch, dtype=torch.bool, device=v0.device)
    counts = torch.zeros(batch, dtype=torch.long, device=v0.device)
    j = 0
    for alpha, beta, q_stack, beta_next in _lanczos_steps(matvec, v0, steps):
        j = alpha.shape[1]
        counts += active.long()
        if j < k:
            continue
        theta, s = torch.linalg.eigh(_tridiagonal(alpha, beta))
        theta_k, s_k = theta[:, -k:].flip(1), s[:, :, -k:].flip(2)  # descending
        res = beta_next[:, None] * s_k[:, -1, :].abs() / theta_k.abs().clamp_min(_TINY)
        take = active & ((res <= tol).all(1) | (j == steps))
        if bool(take.any()):
            ritz = torch.einsum("bjk,bjd->bkd", s_k, q_stack)
            values = torch.where(take[:, None], theta_k, values)
            residuals = torch.where(take[:, None], res, residuals)
            vectors = torch.where(take[:, None, None], ritz, vectors)
            active = active & ~take
        if not bool(active.any()):
            break
    converged = (residuals <= tol).all(1)
    if k == 1:
        return EigResult(values[:, 0], vectors[:, 0], residuals[:, 0], converged, counts, j)
    return EigResult(values, vectors, residuals, converged, counts, j)


def top_eigenvalues(
    matvec: MatVec,
    batch: int,
    dim: int,
    *,
    k: int = 1,
    method: str = "lanczos",
    iters: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    restrict: Restrict | None = None,
) -> EigResult:
    """Top-k eigenpairs of B operators by ``"lanczos"`` or ``"power"`` iteration with deflation.

    Start vectors are Gaussian, drawn from ``generator`` (seeded 0 by default) so that results are
    reproducible. For power iteration the k runs go one after another, each deflated against the
    eigenvectors already found; ``matvecs`` and ``iterations`` sum over them. ``restrict`` lets
    power iteration drop converged problems from its batch (see :func:`power_iteration`).
    """
    if method not in SOLVERS:
        raise InvalidArgument(None, f"unknown eigen-solver '{method}' (use {', '.join(SOLVERS)})")
    generator = generator or torch.Generator().manual_seed(0)

    def start() -> torch.Tensor:
        return torch.randn((batch, dim), generator=generator).to(dtype=dtype, device=device)

    if method == "lanczos":
        return lanczos(matvec, start(), k=k, iters=iters, tol=tol)
    found: list[EigResult] = []
    for _ in range(k):
        basis = torch.stack([r.vectors for r in found], 1) if found else None
        found.append(
            power_iteration(matvec, start(), iters=iters, tol=tol, deflate=basis, restrict=restrict)
        )
    if k == 1:
        return found[0]
    values = torch.stack([r.values for r in found], 1)
    order = values.argsort(dim=1, descending=True)
    rows = torch.arange(batch, device=values.device)[:, None]
    return EigResult(
        values=values.gather(1, order),
        vectors=torch.stack([r.vectors for r in found], 1)[rows, order],
        residuals=torch.stack([r.residuals for r in found], 1).gather(1, order),
        converged=torch.stack([r.converged for r in found], 1).all(1),
        matvecs=sum(r.matvecs for r in found),
        iterations=sum(r.iterations for r in found),
    )


# --- trace and spectral density -------------------------------------------------------------


def rademacher(shape: tuple[int, ...], generator: torch.Generator, **kwargs) -> torch.Tensor:
    """Random ±1 entries (the minimum-variance probes for Hutchinson's estimator)."""
    return torch.randint(0, 2, shape, generator=generator).to(**kwargs).mul_(2).sub_(1)


@dataclass
class TraceEstimate:
    """Estimate of tr(H), its standard error, the number of random probes and the exact part.

    ``exact`` is Σ uᵢᵀHuᵢ over the deflation basis (0 without one); ``trace`` includes it.
    """

    trace: float
    stderr: float
    samples: int
    exact: float = 0.0


def hutchinson_trace(
    matvec: MatVec,
    dim: int,
    *,
    max_samples: int = 200,
    min_samples: int = 10,
    tol: float = 1e-2,
    batch: int = 1,
    basis: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> TraceEstimate:
    """tr(H) ≈ (1/n) Σ zᵀHz, z Rademacher; stops once stderr ≤ ``tol``·|estimate|.

    With ``basis`` (j, d), e.g. the top eigenvectors from :func:`lanczos`, the trace is split as
    tr(UᵀHU) + tr(PHP) with P the projector onto the complement of span(U): the first part is
    computed exactly and only the second estimated. This is unbiased for any basis, and removing
    the few outlying eigenvalues of a network Hessian, which dominate Hutchinson's variance
    (2‖H‖²_F off the diagonal), cuts the probes needed many times over (cf. Hutch++, Meyer et al.
    2021). Probes go ``batch`` at a time through ``matvec``; at least ``min_samples`` are drawn so
    that the standard error is itself meaningful.
    """
    if max_samples < 1 or batch < 1:
        raise InvalidArgument(None, "the trace needs at least one probe")
    generator = generator or torch.Generator().manual_seed(0)
    exact = 0.0
    u = None
    if basis is not None and basis.shape[0]:
        u = torch.linalg.qr(basis.to(dtype=dtype, device=device).T).Q.T[None]  # (1, j, d)
        exact = float((u[0] * matvec(u[0])).sum())
    samples: list[torch.Tensor] = []
    mean = stderr = 0.0
    while len(samples) < max_samples:
        n = min(batch, max_samples - len(samples))
        z = rademacher((n, dim), generator, dtype=dtype, device=device)
        if u is not None:
            z = _project_out(z, u.expand(n, -1, -1))
        samples.extend((z * matvec(z)).sum(1).double().cpu().unbind())
        values = torch.stack(samples)
        mean = exact + float(values.mean())
        stderr = float(values.std() / math.sqrt(len(samples))) if len(samples) > 1 else math.inf
        if len(samples) >= min_samples and stderr <= tol * abs(mean):
            break
    return TraceEstimate(mean, stderr, len(samples), exact)


def lanczos_tridiagonal(
    matvec: MatVec, v0: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values (B, m) and quadrature weights (B, m) of an m-step Lanczos run from each row
    of ``v0``: the nodes and weights of the Gauss quadrature of the spectral measure of H seen
    from v0 (weights are the squared first components of T's eigenvectors, summing to 1)."""
    steps = min(steps, v0.shape[1])
    # Consume the steps keeping only the last (each step holds the basis so far).
    ((alpha, beta, _, _),) = deque(_lanczos_steps(matvec, v0, steps), maxlen=1)
    theta, s = torch.linalg.eigh(_tridiagonal(alpha, beta))
    return theta, s[:, 0, :] ** 2


@dataclass
class SpectralDensity:
    """Stochastic Lanczos quadrature: per probe, Ritz values (nodes) and weights.

    The density is the average over probes of Σ_i w_i δ(λ − θ_i), normalised to integrate to one;
    :meth:`evaluate` smooths it with a Gaussian kernel for plotting (Ghorbani et al. 2019).
    """

    nodes: torch.Tensor
    weights: torch.Tensor

    def evaluate(
        self, grid: torch.Tensor, sigma: float | None = None
    ) -> tuple[torch.Tensor, float]:
        """Smoothed density on ``grid``; ``sigma`` defaults to 1% of the spectrum's range."""
        nodes, weights = self.nodes.double().cpu(), self.weights.double().cpu()
        if sigma is None:
            span = float(nodes.max() - nodes.min())
            sigma = max(0.01 * span, 1e-12)
        grid = grid.double().cpu()
        kernel = torch.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / sigma) ** 2)
        kernel = kernel / (sigma * math.sqrt(2 * math.pi))
        density = (kernel * weights[None]).sum(2).mean(1)
        return density, sigma

    def moment(self, order: int = 1) -> float:
        """E[λ^order] under the estimated density (order 1: tr(H)/d)."""
        return float((self.weights.double() * self.nodes.double() ** order).sum(1).mean())


def slq_density(
    matvec: MatVec,
    dim: int,
    *,
    steps: int = 30,
    probes: int = 4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> SpectralDensity:
    """Spectral density of H by stochastic Lanczos quadrature from ``probes`` Rademacher starts."""
    if steps < 1 or probes < 1:
        raise InvalidArgument(None, "the spectral density needs at least one probe and one step")
    generator = generator or torch.Generator().manual_seed(0)
    v0 = rademacher((probes, dim), generator, dtype=dtype, device=device)
    nodes, weights = lanczos_tridiagonal(matvec, v0, steps)
    return SpectralDensity(nodes, weights)
