"""Evaluating curves and surfaces point by point, and the ``path-eval`` / ``extract`` commands.

At every point the ordinary model φ(t) is built, its BatchNorm statistics are recomputed from the
family's own training data (``bn_split``: ``train``, or ``bonafide`` for a curve trained on bonafide
data — never the test set), and then loss and accuracy are measured on that same split ("train"
columns) and on the test split, followed by every registered :class:`PathMetric`. The data is
loaded and prepared once per command, however many points are evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.connectivity.curves import ControlPointModel, Curve
from modeconn.connectivity.metrics import PathMetric
from modeconn.connectivity.surfaces import CORNER_NAMES, CORNERS_UV, Surface
from modeconn.data import make_eval_loader, stratified_indices
from modeconn.data.prepare import PreparedData
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.io import atomic_write_text, read_table, write_table  # noqa: F401 (re-exported)
from modeconn.progress import make_progress
from modeconn.training import evaluate_model

EVAL_BATCH = 512
#: The splits a point may be chosen on: training data held out from the family's training.
HOLDOUT_SPLITS = ("val", "bonafide_holdout")


# --- one point -------------------------------------------------------------------------------


@dataclass
class PointData:
    """The prepared data and the loaders every point reuses (built once per command).

    ``own`` iterates over ``split`` — the family's own training data, for BatchNorm statistics and
    the "train" columns — or, with ``own_limit``, over a seeded class-stratified subset of it
    (cheaper on large data sets); ``test`` over the test split, or with ``test_limit`` over a
    seeded class-stratified subset of it (the same images at every point). ``holdout_split``
    (``val`` or ``bonafide_holdout``: training data the family never saw) adds the ``holdout``
    loader and the ``holdout_loss``/``holdout_acc`` columns, on which points are chosen.
    """

    data: PreparedData
    split: str
    device: torch.device
    batch_size: int = EVAL_BATCH
    own_limit: int | None = None
    test_limit: int | None = None
    holdout_split: str | None = None
    own: Any = field(init=False)
    test: Any = field(init=False)
    holdout: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.split == "test":
            raise ModeconnError("BatchNorm statistics must not come from the test split")
        if self.holdout_split is not None:
            if self.holdout_split not in HOLDOUT_SPLITS:
                raise InvalidArgument(
                    "holdout_split",
                    f"points are chosen on held-out training data ({', '.join(HOLDOUT_SPLITS)}), "
                    f"not on '{self.holdout_split}'",
                )
            self.holdout = self.data.eval_loader(self.holdout_split, self.batch_size, self.device)
        images, labels = self.data.tensors(self.split)
        indices = self.data.indices(self.split)
        if self.own_limit is not None and self.own_limit < len(indices):
            keep = stratified_indices(labels[indices], self.own_limit, self.data.config.seed)
            indices = indices[keep]
        self.own = make_eval_loader(images, labels, indices, self.batch_size, self.device)
        self.test = self.data.eval_loader(
            "test", self.batch_size, self.device, limit=self.test_limit
        )


@torch.no_grad()
def log_probabilities(
    model: nn.Module, loader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax outputs (eval mode) and labels over ``loader``, on the CPU."""
    model.eval()
    outs, labels = [], []
    for x, y in loader:
        outs.append(F.log_softmax(model(x.to(device)), dim=1).cpu())
        labels.append(y.cpu())
    return torch.cat(outs), torch.cat(labels)


def nll_accuracy(log_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean negative log-likelihood and accuracy of (log-)probabilities."""
    return {
        "loss": F.nll_loss(log_probs, labels).item(),
        "acc": (log_probs.argmax(1) == labels).float().mean().item(),
    }


def evaluate_point(
    model: nn.Module,
    point_data: PointData,
    metrics: Sequence[PathMetric] = (),
    *,
    keep_test_log_probs: bool = False,
) -> tuple[dict[str, float], torch.Tensor | None]:
    """Train/test loss and accuracy plus every metric's columns for a model at one point.

    ``model`` has its BatchNorm statistics already recomputed. With ``keep_test_log_probs`` the
    test set's log-probabilities are returned too (for ensembles over points).
    """
    dev = point_data.device
    own = evaluate_model(model, point_data.own, dev)
    log_probs, labels = log_probabilities(model, point_data.test, dev)
    test = nll_accuracy(log_probs, labels)
    row = {
        "train_loss": own["loss"],
        "train_acc": own["acc"],
        "test_loss": test["loss"],
        "test_acc": test["acc"],
    }
    if point_data.holdout is not None:
        holdout = evaluate_model(model, point_data.holdout, dev)
        row.update(holdout_loss=holdout["loss"], holdout_acc=holdout["acc"])
    for metric in metrics:
        model.eval()
        row.update(metric(model, point_data.data, dev))
    return row, (log_probs if keep_test_log_probs else None)


# --- paths -----------------------------------------------------------------------------------


def evaluate_path(
    curve: Curve,
    data: PreparedData,
    ts: Sequence[float],
    *,
    bn_split: str = "train",
    metrics: Sequence[PathMetric] = (),
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH,
    train_eval_limit: int | None = None,
    test_limit: int | None = None,
    progress: bool = False,
    description: str = "path",
) -> list[dict[str, float]]:
    """One row per t: ``t, train_loss, train_acc, test_loss, test_acc, step_length`` and the
    metrics' columns.

    ``step_length`` is the Euclidean distance in weight space (trainable parameters) from the
    previous row's point, 0 at the first; its sum is the length of the path as evaluated.

    The "train" columns are measured on ``bn_split``, the data the curve was trained on, which
    is also where BatchNorm statistics come from; ``train_eval_limit`` uses a stratified subset
    of it; ``test_limit`` measures the test columns on a stratified subset of the test split
    (give the metrics the same limit). The straight segment is evaluated the same way:
    ``evaluate_path(segment(curve), ...)``.
    """
    dev = torch.device(device)
    curve.to(dev)
    point_data = PointData(data, bn_split, dev, batch_size, train_eval_limit, test_limit)
    rows = []
    previous: torch.Tensor | None = None
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=len(ts), status="")
        for t in ts:
            with torch.no_grad():
                weights = torch.cat([w.flatten() for w in curve.weights_at(float(t)).values()])
            step = 0.0 if previous is None else float((weights - previous).norm())
            previous = weights
            model = curve.model_at(float(t), point_data.own, dev)
            row, _ = evaluate_point(model, point_data, metrics)
            ordered: dict[str, float] = {"t": float(t)}
            for key, value in row.items():  # step_length after the four standard columns
                ordered[key] = value
                if key == "test_acc":
                    ordered["step_length"] = step
            rows.append(ordered)
            bar.update(task, advance=1, status=f"t {t:.2f} test acc {row['test_acc']:.3f}")
    return rows


def barrier_height(errors: Sequence[float]) -> float:
    """The barrier of a path: its largest test error minus the larger of its endpoints' errors.

    >>> round(barrier_height([0.1, 0.3, 0.2]), 6), barrier_height([0.3, 0.2, 0.1])
    (0.1, 0.0)
    """
    return max(errors) - max(errors[0], errors[-1])


def path_integral(values: Sequence[float], steps: Sequence[float]) -> float:
    """The length-weighted mean of ``values`` along a path: ∫ f dl / ∫ dl by the trapezoid rule.

    ``steps[i]`` is the weight-space distance from point i − 1 to point i (``steps[0]`` is
    ignored), so a stretch of the path where the weights move far counts for more than one where
    they barely move — the integral Garipov et al.'s evaluation reports. A path of length 0
    gives the plain mean.

    >>> path_integral([1.0, 3.0, 3.0], [0.0, 1.0, 3.0])
    2.75
    >>> path_integral([1.0, 3.0], [0.0, 0.0])
    2.0
    """
    if len(values) != len(steps) or not values:
        raise InvalidArgument(None, "path_integral needs one step per value")
    length = sum(steps[1:])
    if length <= 0:
        return sum(values) / len(values)
    area = sum(0.5 * (values[i - 1] + values[i]) * steps[i] for i in range(1, len(values)))
    return area / length


def _length_figures(rows: Sequence[dict[str, float]], prefix: str = "") -> dict[str, float]:
    """Path length and the length-weighted integrals of loss and error (needs ``step_length``)."""
    if not rows or "step_length" not in rows[0]:
        return {}
    steps = [r["step_length"] for r in rows]
    columns = {
        "train_loss": [r["train_loss"] for r in rows],
        "test_loss": [r["test_loss"] for r in rows],
        "train_error": [1.0 - r["train_acc"] for r in rows],
        "test_error": [1.0 - r["test_acc"] for r in rows],
    }
    figures = {f"{prefix}path_length": sum(steps[1:])}
    for name, values in columns.items():
        figures[f"{prefix}{name}_integral"] = path_integral(values, steps)
    return figures


def path_summary(
    rows: Sequence[dict[str, float]], segment_rows: Sequence[dict[str, float]] | None = None
) -> dict[str, float]:
    """Flat summary of a path table: the worst point, the endpoints, the segment's midpoint, and
    (for rows with ``step_length``) the path's length and length-weighted loss/error integrals."""
    err = [1.0 - r["test_acc"] for r in rows]
    worst = max(range(len(rows)), key=err.__getitem__)
    best = min(range(len(rows)), key=err.__getitem__)
    mid = min(rows, key=lambda r: abs(r["t"] - 0.5))
    summary = {
        "points": len(rows),
        "max_test_error": err[worst],
        "max_test_error_t": rows[worst]["t"],
        "min_test_error": err[best],
        "min_test_error_t": rows[best]["t"],
        "mid_test_error": 1.0 - mid["test_acc"],
        "endpoint_a_test_error": err[0],
        "endpoint_b_test_error": err[-1],
        "endpoint_max_test_error": max(err[0], err[-1]),
        "barrier_test_error": barrier_height(err),
        "max_train_loss": max(r["train_loss"] for r in rows),
        "max_test_loss": max(r["test_loss"] for r in rows),
        **_length_figures(rows),
    }
    if segment_rows:
        seg_err = [1.0 - r["test_acc"] for r in segment_rows]
        seg_mid = min(segment_rows, key=lambda r: abs(r["t"] - 0.5))
        summary.update(
            segment_mid_test_error=1.0 - seg_mid["test_acc"],
            segment_max_test_error=max(seg_err),
            segment_max_train_loss=max(r["train_loss"] for r in segment_rows),
            segment_barrier_test_error=barrier_height(seg_err),
            **_length_figures(segment_rows, "segment_"),
        )
    return summary


# --- surfaces --------------------------------------------------------------------------------


@dataclass
class SurfaceEvaluation:
    """Grid table (one row per (u, v)) and the ensembles' figures."""

    rows: list[dict[str, float]]
    summary: dict[str, float]


def holdout_split_of(data: PreparedData, bn_split: str) -> str | None:
    """The held-out training data that goes with a family trained on ``bn_split``: the bonafide
    hold-out for a bonafide family, the validation split otherwise; None when it is empty."""
    split = "bonafide_holdout" if bn_split == "bonafide" else "val"
    return split if data.split_sizes()[split] > 0 else None


def evaluate_surface(
    surface: Surface,
    data: PreparedData,
    grid: int = 11,
    *,
    bn_split: str = "train",
    holdout_split: str | None = None,
    metrics: Sequence[PathMetric] = (),
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH,
    train_eval_limit: int | None = None,
    test_limit: int | None = None,
    progress: bool = False,
    description: str = "surface",
) -> SurfaceEvaluation:
    """Evaluate ``surface`` on a ``grid``×``grid`` lattice of (u, v) in [0, 1]².

    BatchNorm statistics are recomputed at every point from ``bn_split`` (or the stratified
    ``train_eval_limit`` subset of it that also gives the "train" columns). Besides the table,
    compares the output ensemble of all grid points (mean softmax) with the ensemble of the four
    corners, and names the best point and the best corner — lowest loss on ``holdout_split``
    (training data the surface never saw) when given, else on the surface's own training data;
    the test set never chooses.
    """
    if grid < 2:
        raise InvalidArgument(None, f"the evaluation grid needs at least 2×2 points, got {grid}")
    dev = torch.device(device)
    surface.to(dev)
    point_data = PointData(
        data, bn_split, dev, batch_size, train_eval_limit, test_limit, holdout_split
    )
    coords = [i / (grid - 1) for i in range(grid)]
    rows: list[dict[str, float]] = []
    prob_sum: torch.Tensor | None = None
    corners: dict[tuple[float, float], torch.Tensor] = {}
    labels = torch.cat([y.cpu() for _, y in point_data.test])
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=grid * grid, status="")
        for u in coords:
            for v in coords:
                model = surface.model_at(u, v, point_data.own, dev)
                row, log_probs = evaluate_point(
                    model, point_data, metrics, keep_test_log_probs=True
                )
                rows.append({"u": u, "v": v, **row})
                probs = log_probs.exp()
                prob_sum = probs if prob_sum is None else prob_sum + probs
                if u in (0.0, 1.0) and v in (0.0, 1.0):
                    corners[(u, v)] = probs
                bar.update(task, advance=1, status=f"test acc {row['test_acc']:.3f}")
    summary = _surface_summary(rows, prob_sum / len(rows), corners, labels)
    return SurfaceEvaluation(rows=rows, summary=summary)


def _ensemble(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return nll_accuracy(probs.clamp_min(1e-12).log(), labels)


def _surface_summary(rows, grid_probs, corners, labels) -> dict[str, float]:
    choose = "holdout_loss" if "holdout_loss" in rows[0] else "train_loss"
    best = min(rows, key=lambda r: r[choose])
    grid_ens = _ensemble(grid_probs, labels)
    corner_ens = _ensemble(torch.stack(list(corners.values())).mean(0), labels)
    corner_rows = {
        name: next(r for r in rows if r["u"] == u and r["v"] == v)
        for name, (u, v) in zip(CORNER_NAMES, CORNERS_UV, strict=True)
    }
    best_corner_name = min(corner_rows, key=lambda n: corner_rows[n][choose])
    best_corner = corner_rows[best_corner_name]
    summary: dict[str, float] = {
        "points": len(rows),
        "chosen_on_holdout": float(choose == "holdout_loss"),
        "best_u": best["u"],
        "best_v": best["v"],
        "best_train_loss": best["train_loss"],
        "best_test_loss": best["test_loss"],
        "best_test_acc": best["test_acc"],
        "best_corner": float(CORNER_NAMES.index(best_corner_name)),
        "best_corner_test_loss": best_corner["test_loss"],
        "best_corner_test_acc": best_corner["test_acc"],
        "max_test_error": max(1.0 - r["test_acc"] for r in rows),
        "max_test_loss": max(r["test_loss"] for r in rows),
        "corner_max_test_loss": max(r["test_loss"] for r in corner_rows.values()),
        "mean_test_acc": sum(r["test_acc"] for r in rows) / len(rows),
        "ensemble_grid_acc": grid_ens["acc"],
        "ensemble_grid_loss": grid_ens["loss"],
        "ensemble_corners_acc": corner_ens["acc"],
        "ensemble_corners_loss": corner_ens["loss"],
    }
    if choose == "holdout_loss":
        summary["best_holdout_loss"] = best["holdout_loss"]
    for name, row in corner_rows.items():
        summary[f"corner_{name.lower()}_test_acc"] = row["test_acc"]
        summary[f"corner_{name.lower()}_test_loss"] = row["test_loss"]
    return summary


# --- tables ----------------------------------------------------------------------------------


def ts_grid(points: int) -> list[float]:
    """``points`` equally spaced values of t from 0 to 1."""
    if points < 2:
        raise InvalidArgument("points", f"points must be at least 2 (the endpoints), got {points}")
    return [i / (points - 1) for i in range(points)]


def center_coefficients(family: ControlPointModel) -> torch.Tensor:
    """Coefficients of the family's middle point: t = 0.5, or (u, v) = (0.5, 0.5)."""
    return family.coefficients(*([0.5] * family.coordinates))
