"""Curves in weight space over any ``nn.Module`` (Garipov et al. 2018).

A curve is a family of parameter sets φ(t), t ∈ [0, 1], spanned by control points θ_0 … θ_n that
are whole parameter sets of one architecture: φ(t) = Σ_i b_i(t) θ_i. The coefficients b_i(t) are
Bernstein polynomials (Bezier curve of degree n) or hat functions on equally spaced knots
(PolyChain). A point is evaluated with :func:`torch.func.functional_call`, so any model works
unchanged — the reference code instead rewrote every layer as a "curve layer".

Only parameters lie on the curve. Buffers (BatchNorm running statistics) do not: they are
recomputed at each point before evaluation (see :mod:`modeconn.connectivity.bn`).

:class:`ControlPointModel` holds the control points and turns coefficients into weights; it is
shared with :class:`~modeconn.connectivity.surfaces.Surface`, which differs only in how the
coefficients are computed.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from modeconn.connectivity.bn import has_batchnorm, update_bn
from modeconn.errors import InvalidArgument, ModeconnError

CURVE_KINDS = ("bezier", "polychain")
INITS = ("linear", "noise")

StateDict = Mapping[str, torch.Tensor]


# --- coefficients ----------------------------------------------------------------------------


def _as_t(t: float | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """``t`` as a float32 tensor (any shape), detached: coefficients carry no gradient."""
    return torch.as_tensor(t, dtype=torch.float32, device=device).detach()


def bezier_coefficients(t: float | torch.Tensor, degree: int) -> torch.Tensor:
    """Bernstein coefficients b_i(t) = C(n, i) t^i (1 − t)^(n − i), i = 0 … n (n = ``degree``).

    ``t`` may be a number or a tensor of any shape; the result has one more trailing dimension of
    size ``degree + 1``. The coefficients are non-negative on [0, 1] and sum to 1.

    >>> bezier_coefficients(0.5, 2).tolist()
    [0.25, 0.5, 0.25]
    >>> bezier_coefficients(torch.tensor([0.0, 1.0]), 1).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    if degree < 1:
        raise ModeconnError(f"a Bezier curve needs degree >= 1, got {degree}")
    t = _as_t(t)
    i = torch.arange(degree + 1, dtype=torch.float32, device=t.device)
    binom = torch.tensor(
        [math.comb(degree, k) for k in range(degree + 1)], dtype=torch.float32, device=t.device
    )
    t = t.unsqueeze(-1)
    return binom * t.pow(i) * (1.0 - t).pow(degree - i)


def polychain_coefficients(t: float | torch.Tensor, num_bends: int) -> torch.Tensor:
    """Hat-function coefficients of a polygonal chain through ``num_bends`` equally spaced knots.

    Knot i sits at t = i / (num_bends − 1); b_i(t) = max(0, 1 − |t·(num_bends − 1) − i|), so the
    chain passes through each control point at its knot and is linear in between.

    >>> polychain_coefficients(0.25, 3).tolist()
    [0.5, 0.5, 0.0]
    """
    if num_bends < 2:
        raise InvalidArgument(None, f"a polygonal chain needs at least 2 bends, got {num_bends}")
    t = _as_t(t)
    i = torch.arange(num_bends, dtype=torch.float32, device=t.device)
    return (1.0 - (t.unsqueeze(-1) * (num_bends - 1) - i).abs()).clamp_min(0.0)


def check_curve_kind(kind: str) -> None:
    """The one check of a curve kind's name (``bezier`` or ``polychain``)."""
    if kind not in CURVE_KINDS:
        raise InvalidArgument("kind", f"unknown curve kind '{kind}' (use {', '.join(CURVE_KINDS)})")


def curve_coefficients(kind: str, t: float | torch.Tensor, num_bends: int) -> torch.Tensor:
    """Coefficients of curve ``kind`` with ``num_bends`` control points (endpoints included)."""
    if kind == "bezier":
        return bezier_coefficients(t, num_bends - 1)
    if kind == "polychain":
        return polychain_coefficients(t, num_bends)
    check_curve_kind(kind)
    raise AssertionError(f"curve kind {kind!r} has no coefficients")


# --- control points --------------------------------------------------------------------------


def parameter_names(model: nn.Module) -> list[str]:
    """Names of ``model``'s parameters in registration order: the coordinates of a control point."""
    return [name for name, _ in model.named_parameters()]


def _check_point(point: StateDict, base: nn.Module, label: str) -> None:
    """A control point must hold every parameter of ``base`` with the right shape."""
    for name, param in base.named_parameters():
        if name not in point:
            raise ModeconnError(f"{label} does not match the architecture: '{name}' missing")
        if tuple(point[name].shape) != tuple(param.shape):
            raise ModeconnError(
                f"{label} does not match the architecture: '{name}' has shape "
                f"{tuple(point[name].shape)}, expected {tuple(param.shape)}"
            )


class ControlPointModel(nn.Module):
    """A weight-space family φ(c) = Σ_i c_i θ_i spanned by control points θ_i of one ``base`` model.

    Subclasses say how coordinates (t for a curve, (u, v) for a surface) map to coefficients c.
    For every parameter of ``base`` the trainable control points are stacked into one
    ``nn.Parameter`` (``free[k]``, one row per point) and the fixed ones into one frozen parameter
    (``fixed[k]``), so a point costs two matrix-vector products per tensor and fixed points never
    receive a gradient. (One flat vector for all tensors was measured too: on CPU its huge
    matrix-vector products and the split/cat in the backward pass cost more than the per-tensor
    calls.) The base's own parameters are frozen and never used: :meth:`run` replaces all of them.
    """

    #: Number of coordinates of a point (1 for a curve's t, 2 for a surface's (u, v)).
    coordinates: int = 1

    def __init__(self, base: nn.Module, points: Sequence[StateDict], fixed: Sequence[bool]) -> None:
        super().__init__()
        if len(points) != len(fixed):
            raise RuntimeError(f"{len(points)} control points but {len(fixed)} fixed flags")
        if len(points) < 2:
            raise InvalidArgument(None, "a family of models needs at least two control points")
        for i, point in enumerate(points):
            _check_point(point, base, f"control point {i}")
        self.base = base
        for param in base.parameters():
            param.requires_grad_(False)
        self.param_names = parameter_names(base)
        self.fixed_mask = tuple(bool(f) for f in fixed)
        free_idx = [i for i, f in enumerate(self.fixed_mask) if not f]
        fixed_idx = [i for i, f in enumerate(self.fixed_mask) if f]
        self.register_buffer("free_index", torch.tensor(free_idx, dtype=torch.long), False)
        self.register_buffer("fixed_index", torch.tensor(fixed_idx, dtype=torch.long), False)
        like = dict(base.named_parameters())

        def stack(indices: list[int], name: str) -> torch.Tensor:
            ref = like[name]
            rows = [points[i][name].detach().to(ref.device, ref.dtype) for i in indices]
            return torch.stack(rows).clone() if rows else ref.new_empty((0, *ref.shape))

        self.free = nn.ParameterList(
            [
                nn.Parameter(stack(free_idx, n), requires_grad=bool(free_idx))
                for n in self.param_names
            ]
        )
        self.fixed = nn.ParameterList(
            [nn.Parameter(stack(fixed_idx, n), requires_grad=False) for n in self.param_names]
        )

    @property
    def num_points(self) -> int:
        """Number of control points (``num_bends`` for a curve)."""
        return len(self.fixed_mask)

    @property
    def device(self) -> torch.device:
        """Where the control points live."""
        return self.free_index.device

    def weights_from_coefficients(self, coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
        """φ = Σ_i coeffs[i] θ_i for every parameter (differentiable in the free points)."""
        coeffs = coeffs.to(self.device)
        groups = ((self.free, coeffs[self.free_index]), (self.fixed, coeffs[self.fixed_index]))
        groups = [(stacks, c) for stacks, c in groups if len(c)]
        weights: dict[str, torch.Tensor] = {}
        for k, name in enumerate(self.param_names):
            total = None
            for stacks, c in groups:
                rows = stacks[k]
                part = torch.mv(rows.reshape(len(rows), -1).t(), c.to(rows.dtype))
                total = part if total is None else total + part
            weights[name] = total.view(self.fixed[k].shape[1:])
        return weights

    def run(
        self, x: torch.Tensor, coeffs: torch.Tensor, *, weight_decay: float | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits of the base model with weights Σ_i coeffs[i] θ_i.

        ``coeffs`` is one coefficient vector, or a k×P matrix: then the batch is split into k
        chunks, chunk j evaluated at point j (several points per batch in one forward call, which
        DistributedDataParallel requires).

        With ``weight_decay`` = wd, the curve-training penalty ½·wd·‖φ‖² (mean over the points)
        is returned too. Its value is detached; its gradient wd·φ is added to φ's gradient by a
        hook during the backward pass — one fused add, as SGD's own weight decay costs, instead
        of a second backward path through ‖φ‖².
        """
        if coeffs.ndim == 1:
            coeffs = coeffs.unsqueeze(0)
        pairs = zip(coeffs, x.tensor_split(coeffs.shape[0]), strict=True)
        pairs = [(c, chunk) for c, chunk in pairs if chunk.shape[0]]
        outputs, penalty = [], torch.zeros((), device=x.device)
        for c, chunk in pairs:
            weights = self.weights_from_coefficients(c)
            outputs.append(functional_call(self.base, weights, (chunk,)))
            if weight_decay is not None:
                penalty = penalty + _decay(weights.values(), weight_decay / len(pairs))
        logits = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return logits if weight_decay is None else (logits, penalty)

    def _row(self, index: int) -> tuple[nn.ParameterList, int]:
        """Where control point ``index`` is stored: (``free`` or ``fixed``, row)."""
        if not 0 <= index < self.num_points:
            raise ModeconnError(f"control point {index} out of range 0..{self.num_points - 1}")
        if self.fixed_mask[index]:
            return self.fixed, int((self.fixed_index == index).nonzero())
        return self.free, int((self.free_index == index).nonzero())

    def control_point(self, index: int) -> dict[str, torch.Tensor]:
        """The parameters of control point ``index`` (detached views into the curve)."""
        stacks, row = self._row(index)
        return {n: s[row].detach() for n, s in zip(self.param_names, stacks, strict=True)}

    @torch.no_grad()
    def set_control_point(self, index: int, point: StateDict) -> None:
        """Overwrite control point ``index`` with the parameters in ``point``."""
        _check_point(point, self.base, f"control point {index}")
        stacks, row = self._row(index)
        for name, stack in zip(self.param_names, stacks, strict=True):
            stack[row].copy_(point[name])

    def control_points(self) -> list[dict[str, torch.Tensor]]:
        """All control points in order."""
        return [self.control_point(i) for i in range(self.num_points)]

    def model_from_coefficients(
        self,
        coeffs: torch.Tensor,
        bn_loader: Iterable[Any] | None = None,
        device: torch.device | str | None = None,
    ) -> nn.Module:
        """An ordinary copy of the base model with the weights at ``coeffs`` loaded into it.

        If the model has BatchNorm and ``bn_loader`` is given, its running statistics are
        recomputed at this point from ``bn_loader``; otherwise the base's buffers are kept.
        """
        with torch.no_grad():
            weights = self.weights_from_coefficients(coeffs)
        model = copy.deepcopy(self.base)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(weights[name])
                param.requires_grad_(True)
        if device is not None:
            model.to(device)
        dev = device if device is not None else self.device
        if bn_loader is not None and has_batchnorm(model):
            update_bn(model, bn_loader, dev)
        return model.eval()


def _decay(weights: Iterable[torch.Tensor], alpha: float) -> torch.Tensor:
    """Make the backward pass add ``alpha``·φ to each φ's gradient; return ½·alpha·‖φ‖² (detached).

    That is exactly the gradient of ½·alpha·‖φ‖², without building a graph for it.
    """
    squares = []
    for w in weights:
        value = w.detach()
        if w.requires_grad and alpha:
            w.register_hook(functools.partial(_add_scaled, value, alpha))
        flat = value.reshape(-1)
        squares.append(torch.dot(flat, flat))
    return 0.5 * alpha * torch.stack(squares).sum()


def _add_scaled(w: torch.Tensor, alpha: float, grad: torch.Tensor) -> torch.Tensor:
    return torch.add(grad, w, alpha=alpha)


def initial_points(
    state_a: StateDict,
    state_b: StateDict,
    knots: Sequence[float],
    *,
    init: str = "linear",
    noise: float = 0.0,
) -> list[dict[str, torch.Tensor]]:
    """Control points on the straight line: θ_i = (1 − s_i) θ_a + s_i θ_b at ``knots`` s_i.

    With ``init="noise"``, interior points (not the first and last) get Gaussian noise of
    ``noise`` times each tensor's RMS at that point, which breaks the symmetry of a straight start.
    Uses the global RNG (seed it for reproducibility).
    """
    if init not in INITS:
        raise InvalidArgument(
            None, f"unknown init '{init}' (use {', '.join(INITS)} or a checkpoint)"
        )
    points = []
    last = len(knots) - 1
    for i, s in enumerate(knots):
        point = {}
        for name, a in state_a.items():
            value = torch.lerp(a.float(), state_b[name].float(), float(s)).to(a.dtype)
            if init == "noise" and 0 < i < last and value.is_floating_point():
                rms = value.pow(2).mean().sqrt().clamp_min(1e-8)
                value = value + noise * rms * torch.randn_like(value)
            point[name] = value
        points.append(point)
    return points


class Curve(ControlPointModel):
    """A Bezier curve or polygonal chain φ(t) = Σ_i b_i(t) θ_i through weight space.

    ``points`` are the control points θ_0 … θ_n (parameter dicts; extra entries such as buffers
    are ignored); ``fixed[i]`` freezes θ_i (default: the two endpoints). ``forward(x, t)`` gives the
    logits of the base model at φ(t), differentiably in the trainable control points.
    """

    def __init__(
        self,
        base: nn.Module,
        points: Sequence[StateDict],
        kind: str = "bezier",
        fixed: Sequence[bool] | None = None,
    ) -> None:
        check_curve_kind(kind)
        if fixed is None:
            fixed = [i in (0, len(points) - 1) for i in range(len(points))]
        super().__init__(base, points, fixed)
        self.kind = kind

    @classmethod
    def from_endpoints(
        cls,
        base: nn.Module,
        state_a: StateDict,
        state_b: StateDict,
        kind: str = "bezier",
        num_bends: int = 3,
        fix_endpoints: bool = True,
        init: str = "linear",
        noise: float = 0.1,
    ) -> Curve:
        """A curve from θ_a to θ_b whose interior points start on the straight line.

        ``num_bends`` counts the endpoints (3 = one free bend). Knots are equally spaced, so a
        linear start is exactly the segment for both kinds. ``base`` is copied (the caller's model
        is left untouched); the copy's buffers are set from ``state_a`` so that, without BatchNorm
        recomputation, t = 0 reproduces model A exactly.
        """
        if num_bends < 2:
            raise InvalidArgument(
                "num_bends", f"num_bends counts the endpoints and must be >= 2, got {num_bends}"
            )
        _check_point(state_a, base, "model A")
        _check_point(state_b, base, "model B")
        names = parameter_names(base)
        knots = [i / (num_bends - 1) for i in range(num_bends)]
        params_a = {n: state_a[n] for n in names}
        params_b = {n: state_b[n] for n in names}
        points = initial_points(params_a, params_b, knots, init=init, noise=noise)
        base = copy.deepcopy(base)
        load_buffers(base, state_a)
        fixed = [fix_endpoints and i in (0, num_bends - 1) for i in range(num_bends)]
        return cls(base, points, kind=kind, fixed=fixed)

    @property
    def num_bends(self) -> int:
        """Number of control points, endpoints included."""
        return self.num_points

    @property
    def degree(self) -> int:
        """Polynomial degree of a Bezier curve (number of segments of a chain)."""
        return self.num_points - 1

    def coefficients(self, t: float | torch.Tensor) -> torch.Tensor:
        """b_0(t) … b_n(t) on the curve's device."""
        return curve_coefficients(self.kind, _as_t(t, self.device), self.num_points)

    def weights_at(self, t: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """φ(t) as a name → tensor dict of the base model's parameters."""
        return self.weights_from_coefficients(self.coefficients(t))

    def forward(
        self, x: torch.Tensor, t: float | torch.Tensor, *, weight_decay: float | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits at φ(t) (BatchNorm in train mode uses batch statistics).

        A 1-D ``t`` of k values splits the batch into k chunks, one per t; ``weight_decay`` also
        returns the penalty ½·wd·‖φ(t)‖² (see :meth:`run`).
        """
        return self.run(x, self.coefficients(t), weight_decay=weight_decay)

    def model_at(
        self,
        t: float,
        bn_loader: Iterable[Any] | None = None,
        device: torch.device | str | None = None,
    ) -> nn.Module:
        """An ordinary model with φ(t) loaded (BatchNorm recomputed from ``bn_loader``)."""
        return self.model_from_coefficients(self.coefficients(t), bn_loader, device)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, num_bends={self.num_bends}, fixed={list(self.fixed_mask)}"


def segment(curve_or_base: ControlPointModel | nn.Module, state_a=None, state_b=None) -> Curve:
    """The straight segment between two models, as a 2-bend polygonal chain.

    Given a :class:`Curve`, the segment joins its two endpoints (and shares its base's buffers);
    given a base model, it joins ``state_a`` and ``state_b``.
    """
    if isinstance(curve_or_base, Curve):
        curve = curve_or_base
        state_a, state_b = curve.control_point(0), curve.control_point(curve.num_points - 1)
        base = copy.deepcopy(curve.base)
    else:
        if state_a is None or state_b is None:
            raise ModeconnError("segment() needs a curve, or a base model and two states")
        base = copy.deepcopy(curve_or_base)
    return Curve(base, [state_a, state_b], kind="polychain", fixed=[True, True])


def load_buffers(model: nn.Module, state: StateDict) -> None:
    """Copy the buffers that ``state`` has for ``model`` (e.g. BatchNorm statistics) into it."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name in state and state[name].shape == buf.shape:
                buf.copy_(state[name])
