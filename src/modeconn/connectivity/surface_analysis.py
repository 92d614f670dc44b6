"""Surfaces through four models that need no training, and what a trained one is compared with.

Ren et al. (ICLR 2025) compare a trained Bezier surface with (a) the surface assembled from four
trained curves without optimising it ("no optimisation": each edge of a degree-(2, 2) surface
is exactly one 3-bend curve, :func:`surface_from_curves`) and (b) the plain average of the four
corners' weights (:func:`weight_average_figures`, BatchNorm recomputed). Both work on models and
data in memory; loading and saving checkpoints is the caller's business.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modeconn.connectivity.curves import Curve, load_buffers
from modeconn.connectivity.evaluate import PointData, evaluate_point, holdout_split_of
from modeconn.connectivity.surfaces import Surface, grid_from_curves
from modeconn.data.prepare import PreparedData

StateDict = dict[str, torch.Tensor]


def surface_from_curves(
    base: nn.Module, corners: Sequence[nn.Module], edge_curves: Sequence[Curve], centre: str
) -> Surface:
    """The degree-(2, 2) surface whose edges are the 3-bend curves ``edge_curves`` (A–B, C–D,
    A–C, B–D: :data:`~modeconn.connectivity.surfaces.EDGES`) between the corner models A, B, C,
    D, with the centre control point of :func:`~modeconn.connectivity.surfaces.grid_from_curves`.

    ``base`` (the architecture, modified in place) takes its buffers from A.
    """
    params = {name for name, _ in corners[0].named_parameters()}
    states = [{k: v for k, v in c.state_dict().items() if k in params} for c in corners]
    edge_points = [curve.control_points()[1] for curve in edge_curves]
    load_buffers(base, corners[0].state_dict())
    return Surface(base, grid_from_curves(states, edge_points, centre), degrees=(2, 2))


def weight_average_figures(
    base: nn.Module,
    corners: Sequence[StateDict],
    data: PreparedData,
    *,
    train_eval_limit: int | None,
    device: torch.device,
) -> dict[str, float]:
    """Test loss and accuracy of the plain mean of the four corners' weights, the "averaging" a
    surface point should beat.

    The mean is the centre of the bilinear surface through the corners; its BatchNorm statistics
    are recomputed from the training split (or its stratified ``train_eval_limit`` subset), as at
    every grid point of a surface. ``base`` (the architecture) is left untouched.
    """
    bilinear = Surface.from_corners(base, corners, (2, 2)).to(device)
    point_data = PointData(
        data,
        "train",
        device,
        own_limit=train_eval_limit,
        holdout_split=holdout_split_of(data, "train"),
    )
    with torch.no_grad():
        average = bilinear.model_at(0.5, 0.5, point_data.own, device)
    row, _ = evaluate_point(average, point_data)
    return {"test_loss": row["test_loss"], "test_acc": row["test_acc"]}
