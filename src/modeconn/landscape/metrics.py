"""Landscape figures measured on a model: path metrics, scan evaluators, correlation.

* :class:`InputHessianMetric` — a path metric (see :mod:`modeconn.connectivity.metrics`) giving
  the mean and max input-Hessian λ_max over a test subset: the ``input_hessian_lmax`` columns of
  ``path.csv``.
* :func:`loss_evaluator`, :func:`robust_evaluator` — what a weight-space scan measures at each
  point; the robust one regenerates PGD against the displaced model (the adversarial landscape).
* :func:`pearson` — the correlation of, e.g., robust loss and λ_max along a path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from modeconn.data.prepare import PreparedData
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.landscape.directions import Evaluator
from modeconn.landscape.input_hessian import input_hessian_stats
from modeconn.training import evaluate_model


class InputHessianMetric:
    """Mean and max over a test subset of the input-Hessian λ_max, as path-table columns.

    ``limit`` images of ``split`` (stratified, the same at every t); per image, power iteration
    (or Lanczos) to relative residual ``tol`` or ``iters`` Hessian-vector products.
    """

    name = "input_hessian"

    def __init__(
        self,
        limit: int | None = 256,
        iters: int = 100,
        tol: float = 1e-3,
        method: str = "power",
        split: str = "test",
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.limit = limit
        self.iters = iters
        self.tol = tol
        self.method = method
        self.split = split
        self.batch_size = batch_size
        self.seed = seed

    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device | str
    ) -> dict[str, float]:
        stats = input_hessian_stats(
            model,
            data.eval_loader(self.split, self.batch_size, device, limit=self.limit),
            method=self.method,
            iters=self.iters,
            tol=self.tol,
            seed=self.seed,
            device=device,
        )
        return {"input_hessian_lmax": stats.mean, "input_hessian_lmax_max": stats.max}


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation coefficient of two equally long sequences (NaN if one is constant).

    >>> round(pearson([1, 2, 3], [2, 4, 6]), 12), round(pearson([1, 2, 3], [3, 2, 1]), 12)
    (1.0, -1.0)
    >>> pearson([1, 2, 3], [5, 5, 5])
    nan
    """
    if len(x) != len(y):
        raise ModeconnError(f"pearson needs sequences of equal length, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise InvalidArgument(None, "pearson needs at least two points")
    a = torch.as_tensor(list(x), dtype=torch.float64)
    b = torch.as_tensor(list(y), dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else math.nan


def loss_evaluator(loader, device: torch.device | str, bn_loader=None) -> Evaluator:
    """``{"loss", "acc"}`` at each point; BatchNorm statistics recomputed on ``bn_loader`` first."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        _refresh_bn(model, bn_loader, device)
        return evaluate_model(model, loader, device)

    return evaluate


def robust_evaluator(
    loader, attack, device: torch.device | str, bn_loader=None, clean: bool = True
) -> Evaluator:
    """Clean ``loss``/``acc`` (optional) and ``robust_loss``/``robust_acc`` at each point.

    The attack (``attack``, an :class:`~modeconn.attacks.config.AttackConfig`) is run afresh against
    the model at every point, in eval mode — the adversarial weight landscape.
    """
    from modeconn.defenses.adversarial import RobustEvaluation

    def evaluate(model: nn.Module) -> dict[str, float]:
        _refresh_bn(model, bn_loader, device)
        out = evaluate_model(model, loader, device) if clean else {}
        robust = RobustEvaluation(attack=attack).on_loader(model, loader, device)
        return {**out, **robust}

    return evaluate


def _refresh_bn(model: nn.Module, bn_loader, device) -> None:
    if bn_loader is not None:
        from modeconn.connectivity.bn import update_bn

        update_bn(model, bn_loader, device)


def robust_path_summary(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The robust-loss barrier of a path table (Zhao et al. 2020, §5), in flat keys.

    ``robust_barrier`` is the largest robust loss along the path minus the larger endpoint value
    (positive: an interior maximum above both endpoints); ``test_barrier`` the same for the
    standard test loss; ``pcc_robust_loss_lmax`` Pearson's r of robust loss and input-Hessian
    λ_max over the points (when the table has both columns).
    """
    out: dict[str, float] = {}
    for column, key in (("robust_loss", "robust"), ("test_loss", "test")):
        if column not in rows[0]:
            continue
        values = [r[column] for r in rows]
        peak = max(range(len(values)), key=values.__getitem__)
        out[f"{key}_loss_max"] = values[peak]
        out[f"{key}_loss_max_t"] = rows[peak]["t"]
        out[f"{key}_barrier"] = values[peak] - max(values[0], values[-1])
    if "robust_loss" in rows[0] and "input_hessian_lmax" in rows[0]:
        out["pcc_robust_loss_lmax"] = pearson(
            [r["robust_loss"] for r in rows], [r["input_hessian_lmax"] for r in rows]
        )
    return out


def robust_barrier_figures(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """How far one path shows Zhao et al.'s robust-loss barrier (2020, §5, Fig. 4), as ratios.

    The claim: along a path trained on the standard loss there is no barrier in the standard
    loss but there is one in the robust (adversarial) loss. From a table with ``t``,
    ``test_loss`` and ``robust_loss`` columns (endpoints first and last):

    - ``robust_excess``: the largest robust loss strictly inside the path minus the larger
      endpoint value, over the endpoints' mean robust loss (positive: a peak above both ends);
    - ``robust_peak_t``: where that interior maximum is;
    - ``standard_excess``: the largest test loss anywhere on the path minus the worse
      endpoint's, over the worse endpoint's (≤ 0: no standard-loss barrier at all);
    - ``pcc_robust_loss_lmax``: Pearson's r of robust loss and input-Hessian λ_max over the
      points, when the table has the ``input_hessian_lmax`` column.

    >>> rows = [{"t": 0.0, "test_loss": 0.5, "robust_loss": 2.0},
    ...         {"t": 0.5, "test_loss": 0.5, "robust_loss": 3.3},
    ...         {"t": 1.0, "test_loss": 0.4, "robust_loss": 1.0}]
    >>> figures = robust_barrier_figures(rows)
    >>> round(figures["robust_excess"], 6), figures["robust_peak_t"], figures["standard_excess"]
    (0.866667, 0.5, 0.0)
    """
    if len(rows) < 3:
        raise InvalidArgument(None, "a robust barrier needs at least one point inside the path")
    robust = [r["robust_loss"] for r in rows]
    test = [r["test_loss"] for r in rows]
    inside = max(range(1, len(rows) - 1), key=robust.__getitem__)
    ends = (robust[0], robust[-1])
    worse_test = max(test[0], test[-1])
    out = {
        "robust_excess": (robust[inside] - max(ends)) / (sum(ends) / 2),
        "robust_peak_t": rows[inside]["t"],
        "standard_excess": (max(test) - worse_test) / worse_test,
    }
    if "input_hessian_lmax" in rows[0]:
        out["pcc_robust_loss_lmax"] = pearson(robust, [r["input_hessian_lmax"] for r in rows])
    return out
