"""Tensor-product Bezier surfaces joining four models (mode connectivity via Bezier surfaces).

φ(u, v) = Σ_i Σ_j b_i(u) b_j(v) θ_ij over an (n+1)×(m+1) grid of control points. The four corners
are the given models and stay fixed: θ_00 = A, θ_n0 = B, θ_0m = C, θ_nm = D, so the surface
passes through them at (u, v) = (0, 0), (1, 0), (0, 1) and (1, 1). The other points start from
the bilinear blend of the corners, which makes the initial surface the bilinear interpolation of
the four models' weights (a Bezier surface reproduces bilinear functions).

A surface can also be assembled without training it (:func:`grid_from_curves`, the "no
optimisation" surface of Ren et al., ICLR 2025): its boundary is four trained 3-bend Bezier curves
between adjacent corners, and its centre control point follows from them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from modeconn.connectivity.curves import (
    ControlPointModel,
    StateDict,
    _as_t,
    _check_point,
    bezier_coefficients,
    load_buffers,
)
from modeconn.errors import InvalidArgument, ModeconnError

CORNER_NAMES = ("A", "B", "C", "D")
#: (u, v) of the corners A, B, C, D.
CORNERS_UV = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))


def surface_coefficients(
    u: float | torch.Tensor, v: float | torch.Tensor, degree_u: int, degree_v: int
) -> torch.Tensor:
    """b_i(u) b_j(v) over the (n+1)×(m+1) grid, flattened row-major (index i·(m+1)+j).

    ``u`` and ``v`` are numbers, or 1-D tensors of k points (the result is then k×P).
    """
    bu = bezier_coefficients(u, degree_u).unsqueeze(-1)
    bv = bezier_coefficients(v, degree_v).unsqueeze(-2)
    return (bu * bv).flatten(-2)


def corner_indices(degree_u: int, degree_v: int) -> tuple[int, int, int, int]:
    """Flat indices of the corners A=(0,0), B=(1,0), C=(0,1), D=(1,1) in the control grid."""
    m1 = degree_v + 1
    return (0, degree_u * m1, degree_v, degree_u * m1 + degree_v)


def bilinear_grid(
    corners: Sequence[StateDict], degree_u: int, degree_v: int
) -> list[dict[str, torch.Tensor]]:
    """Control points θ_ij = bilinear blend of the four corners at (i/n, j/m), row-major."""
    a, b, c, d = corners
    grid = []
    for i in range(degree_u + 1):
        s = i / degree_u
        for j in range(degree_v + 1):
            r = j / degree_v
            w = ((1 - s) * (1 - r), s * (1 - r), (1 - s) * r, s * r)
            grid.append({n: w[0] * a[n] + w[1] * b[n] + w[2] * c[n] + w[3] * d[n] for n in a})
    # Exact corners (the blend above is exact in exact arithmetic; make it exact in floats too).
    for idx, corner in zip(corner_indices(degree_u, degree_v), corners, strict=True):
        grid[idx] = {name: t.clone() for name, t in corner.items()}
    return grid


#: How :func:`grid_from_curves` sets the centre control point.
CENTRES = ("coons", "mean")
#: The edges of the unit square, as pairs of corners, in the order :func:`grid_from_curves` takes.
EDGES = (("A", "B"), ("C", "D"), ("A", "C"), ("B", "D"))


def grid_from_curves(
    corners: Sequence[StateDict], edge_points: Sequence[StateDict], centre: str = "coons"
) -> list[dict[str, torch.Tensor]]:
    """The 3×3 control grid of a degree-(2, 2) surface whose edges are four quadratic curves.

    ``corners`` are A, B, C, D; ``edge_points`` the middle control points of the 3-bend Bezier
    curves A–B (v = 0), C–D (v = 1), A–C (u = 0) and B–D (u = 1) (:data:`EDGES`). Each edge of
    the surface is then exactly its curve. The centre θ_11 is

    * ``"coons"``: the bilinearly blended Coons patch of the four curves, written as a Bezier
      surface: θ_11 = (θ_AB + θ_CD + θ_AC + θ_BD) / 2 − (A + B + C + D) / 4 — the surface that
      blends the two pairs of opposite curves linearly and corrects for the corners;
    * ``"mean"``: the mean of the four edge points.

    Only the parameter names of A are used; the result is row-major (index i·3 + j for θ_ij).
    """
    if len(corners) != 4 or len(edge_points) != 4:
        raise ModeconnError(
            f"a surface from curves needs 4 corners and 4 edge points, "
            f"got {len(corners)} and {len(edge_points)}"
        )
    if centre not in CENTRES:
        raise InvalidArgument("centre", f"unknown centre '{centre}' (use {', '.join(CENTRES)})")
    a, b, c, d = corners
    ab, cd, ac, bd = edge_points
    names = [n for n in a if all(n in e for e in edge_points)]

    def combine(weights: Sequence[float], states: Sequence[StateDict]) -> dict[str, torch.Tensor]:
        return {n: sum(w * s[n] for w, s in zip(weights, states, strict=True)) for n in names}

    if centre == "coons":
        middle = combine([0.5] * 4 + [-0.25] * 4, [ab, cd, ac, bd, a, b, c, d])
    else:
        middle = combine([0.25] * 4, [ab, cd, ac, bd])
    rows = ((a, ac, c), (ab, middle, cd), (b, bd, d))  # θ_i0, θ_i1, θ_i2 for i = 0, 1, 2
    return [{n: p[n].clone() for n in names} for row in rows for p in row]


class Surface(ControlPointModel):
    """A tensor-product Bezier surface φ(u, v) of degrees (n, m) through weight space.

    ``points`` is the control grid flattened row-major ((n+1)·(m+1) parameter dicts, index
    i·(m+1)+j for θ_ij); ``fixed`` defaults to the four corners.
    """

    coordinates = 2

    def __init__(
        self,
        base: nn.Module,
        points: Sequence[StateDict],
        degrees: tuple[int, int] = (2, 2),
        fixed: Sequence[bool] | None = None,
    ) -> None:
        n, m = (int(d) for d in degrees)
        if n < 1 or m < 1:
            raise InvalidArgument(None, f"surface degrees must be >= 1, got {degrees}")
        if len(points) != (n + 1) * (m + 1):
            raise ModeconnError(
                f"a degree ({n}, {m}) surface needs {(n + 1) * (m + 1)} control points, "
                f"got {len(points)}"
            )
        if fixed is None:
            corners = set(corner_indices(n, m))
            fixed = [i in corners for i in range(len(points))]
        super().__init__(base, points, fixed)
        self.degrees = (n, m)

    @classmethod
    def from_corners(
        cls,
        base: nn.Module,
        corners: Sequence[StateDict],
        num_bends: tuple[int, int] = (3, 3),
    ) -> Surface:
        """A surface through the four corner models A, B, C, D, initialised bilinearly.

        ``num_bends`` is the control grid's size (n+1, m+1), corners included. The buffers of a
        copy of ``base`` (the caller's model is left untouched) are set from A.
        """
        if len(corners) != 4:
            raise ModeconnError(f"a surface needs 4 corner models, got {len(corners)}")
        if min(num_bends) < 2:
            raise InvalidArgument(None, f"the control grid must be at least 2×2, got {num_bends}")
        for name, corner in zip(CORNER_NAMES, corners, strict=True):
            _check_point(corner, base, f"model {name}")
        n, m = num_bends[0] - 1, num_bends[1] - 1
        params = {name for name, _ in base.named_parameters()}
        param_corners = [{k: v for k, v in c.items() if k in params} for c in corners]
        base = copy.deepcopy(base)
        load_buffers(base, corners[0])
        return cls(base, bilinear_grid(param_corners, n, m), degrees=(n, m))

    @property
    def num_bends(self) -> tuple[int, int]:
        """Control-grid size (n+1, m+1)."""
        return (self.degrees[0] + 1, self.degrees[1] + 1)

    def coefficients(self, u: float | torch.Tensor, v: float | torch.Tensor) -> torch.Tensor:
        """b_i(u) b_j(v), flattened row-major, on the surface's device."""
        dev = self.device
        return surface_coefficients(_as_t(u, dev), _as_t(v, dev), *self.degrees)

    def weights_at(
        self, u: float | torch.Tensor, v: float | torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """φ(u, v) as a name → tensor dict of the base model's parameters."""
        return self.weights_from_coefficients(self.coefficients(u, v))

    def forward(
        self,
        x: torch.Tensor,
        u: float | torch.Tensor,
        v: float | torch.Tensor,
        *,
        weight_decay: float | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits at φ(u, v); 1-D ``u``, ``v`` of k values split the batch into k chunks."""
        return self.run(x, self.coefficients(u, v), weight_decay=weight_decay)

    def model_at(
        self,
        u: float,
        v: float,
        bn_loader: Iterable[Any] | None = None,
        device: torch.device | str | None = None,
    ) -> nn.Module:
        """An ordinary model with φ(u, v) loaded (BatchNorm recomputed from ``bn_loader``)."""
        return self.model_from_coefficients(self.coefficients(u, v), bn_loader, device)

    def corner_states(self) -> list[Mapping[str, torch.Tensor]]:
        """The parameters of A, B, C, D."""
        return [self.control_point(i) for i in corner_indices(*self.degrees)]

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, fixed={[i for i, f in enumerate(self.fixed_mask) if f]}"
