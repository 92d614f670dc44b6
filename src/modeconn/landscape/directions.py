"""Loss landscapes in weight space: directions, and 1D/2D scans along them.

A *direction* is a mapping from parameter name to a tensor of that parameter's shape. A scan moves
the model's trainable parameters to θ + Σ cᵢ dᵢ for a grid of coordinates c, calls an evaluator at
every point (loss and accuracy; or the robust loss with PGD regenerated against the displaced model
— the adversarial landscape whose flatness AWP seeks), and puts the original weights back exactly.

* :func:`filter_normalized_direction` — Li et al. (2018): a Gaussian direction whose every filter
  (row of a linear weight, output channel of a convolution) is rescaled to the norm of the matching
  filter of θ, so that scans of networks of different scale compare; zero on biases and
  BatchNorm (every parameter with fewer than two dimensions), which Li et al. found best.
* :func:`line_through`, :func:`plane_through` — the segment through two models and the plane
  through three (Garipov et al. 2018), in an orthonormal basis of that plane.

Buffers (BatchNorm running statistics) are not moved; an evaluator may recompute them at each
point when the network has BatchNorm.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from modeconn.errors import ModeconnError

Direction = dict[str, torch.Tensor]
Evaluator = Callable[[nn.Module], dict[str, float]]


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a direction moves, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def is_filter_weight(param: torch.Tensor) -> bool:
    """Conv and linear weights (≥ 2 dims) carry filters; biases and BN parameters (1 dim) do not."""
    return param.ndim >= 2


def filter_normalize(direction: Direction, model: nn.Module) -> Direction:
    """Rescale each filter of ``direction`` to the norm of the same filter of ``model``.

    A filter is a slice along the first dimension (an output unit or channel). Parameters with
    fewer than two dimensions get a zero direction.
    """
    out: Direction = {}
    for name, weight in trainable_parameters(model).items():
        d = direction[name]
        if not is_filter_weight(weight):
            out[name] = torch.zeros_like(weight)
            continue
        w_norm = weight.detach().flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        scale = (w_norm / d_norm).view(-1, *([1] * (d.ndim - 1)))
        out[name] = d * scale
    return out


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> Direction:
    """A random Gaussian direction, filter-normalised to ``model`` (Li et al. 2018)."""
    raw = {
        name: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        for name, p in trainable_parameters(model).items()
    }
    return filter_normalize(raw, model)


def difference(model_a: nn.Module, model_b: nn.Module) -> Direction:
    """θ_B − θ_A; the two models must have the same parameter names and shapes."""
    pa, pb = trainable_parameters(model_a), trainable_parameters(model_b)
    if pa.keys() != pb.keys():
        missing = sorted(set(pa) ^ set(pb))
        raise ModeconnError(f"the models do not share an architecture: '{missing[0]}' differs")
    out: Direction = {}
    for name, a in pa.items():
        if a.shape != pb[name].shape:
            raise ModeconnError(
                f"the models do not share an architecture: '{name}' has shapes "
                f"{tuple(a.shape)} and {tuple(pb[name].shape)}"
            )
        out[name] = (pb[name].detach().to(a.device) - a.detach()).clone()
    return out


def dot(d1: Direction, d2: Direction) -> float:
    """The Euclidean inner product of two directions (in float64)."""
    return float(sum((d1[k].double() * d2[k].double()).sum() for k in d1))


def norm(d: Direction) -> float:
    return math.sqrt(dot(d, d))


def combine(terms: Sequence[tuple[float, Direction]]) -> Direction:
    """Σ cᵢ dᵢ."""
    keys = terms[0][1].keys()
    return {k: sum(c * d[k] for c, d in terms) for k in keys}


@contextmanager
def displaced(
    model: nn.Module, directions: Sequence[Direction], coords: Sequence[float]
) -> Iterator[nn.Module]:
    """The model moved to θ + Σ cᵢ dᵢ inside the block; θ restored bit for bit afterwards."""
    params = trainable_parameters(model)
    origin = {name: p.detach().clone() for name, p in params.items()}
    try:
        with torch.no_grad():
            for name, p in params.items():
                shift = sum(c * d[name] for c, d in zip(coords, directions, strict=True))
                p.copy_(origin[name] + shift)
        yield model
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(origin[name])


def scan(
    model: nn.Module,
    directions: Sequence[Direction],
    points: Sequence[Sequence[float]],
    evaluate: Evaluator,
    names: Sequence[str],
    progress: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """Evaluate the model at θ + Σ cᵢ dᵢ for every coordinate tuple in ``points``.

    Returns one row per point: the coordinates under ``names`` followed by the evaluator's figures.
    """
    rows = []
    for coords in points:
        with displaced(model, directions, coords) as moved:
            figures = evaluate(moved)
        rows.append({**dict(zip(names, map(float, coords), strict=True)), **figures})
        if progress is not None:
            progress()
    return rows


def scan_1d(
    model: nn.Module,
    direction: Direction,
    alphas: Sequence[float],
    evaluate: Evaluator,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """The loss along θ + α·d (rows keyed ``alpha``)."""
    return scan(model, [direction], [(a,) for a in alphas], evaluate, ["alpha"], progress)


def scan_2d(
    model: nn.Module,
    d1: Direction,
    d2: Direction,
    alphas: Sequence[float],
    betas: Sequence[float],
    evaluate: Evaluator,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """The loss on the grid θ + α·d₁ + β·d₂ (rows keyed ``alpha``, ``beta``)."""
    points = list(itertools.product(alphas, betas))
    return scan(model, [d1, d2], points, evaluate, ["alpha", "beta"], progress)


def line_through(
    model_a: nn.Module,
    model_b: nn.Module,
    ts: Sequence[float],
    evaluate: Evaluator,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """The loss along θ(t) = θ_A + t(θ_B − θ_A) (rows keyed ``t``); t outside [0, 1] extrapolates.

    Runs on a copy of ``model_a``, so neither model changes.
    """
    work = copy.deepcopy(model_a)
    direction = difference(model_a, model_b)
    return scan(work, [direction], [(t,) for t in ts], evaluate, ["t"], progress)


@dataclass
class Plane:
    """The plane through three models: origin θ₀ and an orthonormal basis (e₁, e₂).

    ``positions`` are the (x, y) coordinates of the three models in that basis: (0, 0), (‖θ₁−θ₀‖,
    0) and the projection of θ₂ − θ₀.
    """

    e1: Direction
    e2: Direction
    positions: list[tuple[float, float]]

    def extent(self, margin: float = 0.2) -> tuple[tuple[float, float], tuple[float, float]]:
        """The (x, y) ranges that show all three models with ``margin`` of the span around them."""
        xs, ys = zip(*self.positions, strict=True)
        span = max(max(xs) - min(xs), max(ys) - min(ys))
        return (
            (min(xs) - margin * span, max(xs) + margin * span),
            (min(ys) - margin * span, max(ys) + margin * span),
        )


def plane_basis(models: Sequence[nn.Module]) -> Plane:
    """Gram–Schmidt on θ₁ − θ₀ and θ₂ − θ₀ (Garipov et al. 2018, Fig. 1)."""
    if len(models) != 3:
        raise ModeconnError(f"a plane needs exactly three models, got {len(models)}")
    u = difference(models[0], models[1])
    v = difference(models[0], models[2])
    u_norm = norm(u)
    if u_norm == 0:
        raise ModeconnError("the first two models are identical: they span no plane")
    e1 = {k: t / u_norm for k, t in u.items()}
    v_x = dot(v, e1)
    v_perp = combine([(1.0, v), (-v_x, e1)])
    v_y = norm(v_perp)
    if v_y <= 1e-9 * max(u_norm, norm(v)):
        raise ModeconnError("the three models lie on one line: they span no plane")
    e2 = {k: t / v_y for k, t in v_perp.items()}
    return Plane(e1, e2, [(0.0, 0.0), (u_norm, 0.0), (v_x, v_y)])


def plane_through(
    models: Sequence[nn.Module],
    xs: Sequence[float],
    ys: Sequence[float],
    evaluate: Evaluator,
    progress: Callable[[], None] | None = None,
) -> tuple[list[dict[str, float]], Plane]:
    """The loss on a grid of the plane through three models (rows keyed ``x``, ``y``)."""
    plane = plane_basis(models)
    work = copy.deepcopy(models[0])
    points = list(itertools.product(xs, ys))
    rows = scan(work, [plane.e1, plane.e2], points, evaluate, ["x", "y"], progress)
    return rows, plane
