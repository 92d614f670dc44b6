"""Evaluating curves and surfaces point by point, and the ``path-eval`` / ``extract`` commands.

At every point the ordinary model φ(t) is built, its BatchNorm statistics are recomputed from the
family's own training data (``bn_split``: ``train``, or ``bonafide`` for a curve trained on bonafide
data — never the test set), and then loss and accuracy are measured on that same split ("train"
columns) and on the test split, followed by every registered :class:`PathMetric`. The data is
loaded and prepared once per command, however many points are evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.checkpoints import save_model
from modeconn.connectivity.checkpoints import family_kind, load_curve, load_family
from modeconn.connectivity.curves import ControlPointModel, Curve, segment
from modeconn.connectivity.metrics import PathMetric
from modeconn.connectivity.surfaces import CORNER_NAMES, CORNERS_UV, Surface
from modeconn.data import make_eval_loader, stratified_indices
from modeconn.distributed import resolve_device
from modeconn.errors import ModeconnError
from modeconn.experiment import DataConfig, PreparedData, check_compatible, prepare_data
from modeconn.io import atomic_write_text, read_table, write_table  # noqa: F401 (re-exported)
from modeconn.rundir import RunDir
from modeconn.training import evaluate_model, make_progress

EVAL_BATCH = 512


# --- one point -------------------------------------------------------------------------------


@dataclass
class PointData:
    """The prepared data and the loaders every point reuses (built once per command).

    ``own`` iterates over ``split`` — the family's own training data, for BatchNorm statistics and
    the "train" columns — or, with ``own_limit``, over a seeded class-stratified subset of it
    (cheaper on large data sets); ``test`` over the test split, or with ``test_limit`` over a
    seeded class-stratified subset of it (the same images at every point).
    """

    data: PreparedData
    split: str
    device: torch.device
    batch_size: int = EVAL_BATCH
    own_limit: int | None = None
    test_limit: int | None = None
    own: Any = field(init=False)
    test: Any = field(init=False)

    def __post_init__(self) -> None:
        if self.split == "test":
            raise ModeconnError("BatchNorm statistics must not come from the test split")
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
    """One row per t: ``t, train_loss, train_acc, test_loss, test_acc`` and the metrics' columns.

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
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=len(ts), status="")
        for t in ts:
            model = curve.model_at(float(t), point_data.own, dev)
            row, _ = evaluate_point(model, point_data, metrics)
            rows.append({"t": float(t), **row})
            bar.update(task, advance=1, status=f"t {t:.2f} test acc {row['test_acc']:.3f}")
    return rows


def barrier_height(errors: Sequence[float]) -> float:
    """The barrier of a path: its largest test error minus the larger of its endpoints' errors."""
    return max(errors) - max(errors[0], errors[-1])


def path_summary(
    rows: Sequence[dict[str, float]], segment_rows: Sequence[dict[str, float]] | None = None
) -> dict[str, float]:
    """Flat summary of a path table: the worst point, the endpoints, the segment's midpoint."""
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
    }
    if segment_rows:
        seg_err = [1.0 - r["test_acc"] for r in segment_rows]
        seg_mid = min(segment_rows, key=lambda r: abs(r["t"] - 0.5))
        summary.update(
            segment_mid_test_error=1.0 - seg_mid["test_acc"],
            segment_max_test_error=max(seg_err),
            segment_max_train_loss=max(r["train_loss"] for r in segment_rows),
            segment_barrier_test_error=barrier_height(seg_err),
        )
    return summary


# --- surfaces --------------------------------------------------------------------------------


@dataclass
class SurfaceEvaluation:
    """Grid table (one row per (u, v)) and the ensembles' figures."""

    rows: list[dict[str, float]]
    summary: dict[str, float]


def evaluate_surface(
    surface: Surface,
    data: PreparedData,
    grid: int = 11,
    *,
    bn_split: str = "train",
    metrics: Sequence[PathMetric] = (),
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH,
    progress: bool = False,
) -> SurfaceEvaluation:
    """Evaluate ``surface`` on a ``grid``×``grid`` lattice of (u, v) in [0, 1]².

    BatchNorm statistics are recomputed at every point. Besides the table, compares the output
    ensemble of all grid points (mean softmax) with the ensemble of the four corners, and names
    the best point — lowest loss on the surface's own training data, so the test set never
    chooses it.
    """
    if grid < 2:
        raise ModeconnError(f"the evaluation grid needs at least 2×2 points, got {grid}")
    dev = torch.device(device)
    surface.to(dev)
    point_data = PointData(data, bn_split, dev, batch_size)
    coords = [i / (grid - 1) for i in range(grid)]
    rows: list[dict[str, float]] = []
    prob_sum: torch.Tensor | None = None
    corners: dict[tuple[float, float], torch.Tensor] = {}
    labels = torch.cat([y.cpu() for _, y in point_data.test])
    with make_progress(progress) as bar:
        task = bar.add_task("surface", total=grid * grid, status="")
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
    best = min(rows, key=lambda r: r["train_loss"])
    grid_ens = _ensemble(grid_probs, labels)
    corner_ens = _ensemble(torch.stack(list(corners.values())).mean(0), labels)
    summary: dict[str, float] = {
        "points": len(rows),
        "best_u": best["u"],
        "best_v": best["v"],
        "best_train_loss": best["train_loss"],
        "best_test_loss": best["test_loss"],
        "best_test_acc": best["test_acc"],
        "max_test_error": max(1.0 - r["test_acc"] for r in rows),
        "mean_test_acc": sum(r["test_acc"] for r in rows) / len(rows),
        "ensemble_grid_acc": grid_ens["acc"],
        "ensemble_grid_loss": grid_ens["loss"],
        "ensemble_corners_acc": corner_ens["acc"],
        "ensemble_corners_loss": corner_ens["loss"],
    }
    for name, (u, v) in zip(CORNER_NAMES, CORNERS_UV, strict=True):
        row = next(r for r in rows if r["u"] == u and r["v"] == v)
        summary[f"corner_{name.lower()}_test_acc"] = row["test_acc"]
    return summary


# --- tables ----------------------------------------------------------------------------------


# --- commands --------------------------------------------------------------------------------


def data_from_meta(
    meta: dict[str, Any], *, data_dir: str | None = None, test_limit: int | None = None
) -> DataConfig:
    """The data config a curve or surface was trained with (so its bonafide split is redrawn
    exactly), with the data directory and test subset optionally replaced."""
    stored = dict(meta.get("data") or {})
    if not stored:
        stored = {"dataset": meta.get("dataset") or "fashion-mnist"}
    config = DataConfig(**stored)
    if data_dir is not None:
        config.data_dir = str(data_dir)
    if test_limit is not None:
        config.test_limit = test_limit
    return config


def ts_grid(points: int) -> list[float]:
    """``points`` equally spaced values of t from 0 to 1."""
    if points < 2:
        raise ModeconnError(f"--points must be at least 2 (the endpoints), got {points}")
    return [i / (points - 1) for i in range(points)]


def _prepare(meta, spec, source, data, data_dir, test_limit) -> PreparedData:
    config = data or data_from_meta(meta, data_dir=data_dir, test_limit=test_limit)
    prepared = prepare_data(config)
    check_compatible(spec, prepared, str(source))
    return prepared


def run_path_eval(
    curve_path: str | Path,
    out: str | Path,
    *,
    points: int = 21,
    metrics: Sequence[PathMetric] = (),
    data: DataConfig | None = None,
    data_dir: str | None = None,
    test_limit: int | None = None,
    bn_split: str | None = None,
    train_eval_limit: int | None = None,
    with_segment: bool = True,
    batch_size: int = EVAL_BATCH,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a saved curve at ``points`` values of t into run directory ``out``.

    Writes ``path.csv`` (and ``segment.csv`` for the straight segment between the endpoints),
    ``path.png`` and ``summary.json``; returns the summary. ``data`` defaults to the curve's own
    data config (``data_dir``/``test_limit`` replace parts of it) and ``bn_split`` to the split it
    was trained on; ``train_eval_limit`` evaluates the "train" columns (and recomputes BatchNorm)
    on a stratified subset of that many of its images. ``metrics`` add columns (ASR, robust
    accuracy, input-Hessian eigenvalue, …).
    """
    from modeconn.report.plots import plot_path

    ts = ts_grid(points)
    dev = resolve_device(device)
    curve, spec, meta = load_curve(curve_path, dev)
    run = RunDir(out, force=force)
    prepared = _prepare(meta, spec, curve_path, data, data_dir, test_limit)
    split = bn_split or meta.get("train_split", "train")
    run.write_config(
        {
            "command": "path-eval",
            "curve": str(curve_path),
            "points": points,
            "metrics": [m.name for m in metrics],
            "data": prepared.config.to_dict(),
            "bn_split": split,
            "train_eval_limit": train_eval_limit,
            "segment": with_segment,
            "device": str(dev),
            **(extra_config or {}),
        }
    )
    common = dict(
        bn_split=split,
        metrics=metrics,
        device=dev,
        batch_size=batch_size,
        train_eval_limit=train_eval_limit,
    )
    rows = evaluate_path(curve, prepared, ts, progress=progress, description="curve", **common)
    write_table(run.file("path.csv"), rows)
    seg_rows = None
    if with_segment:
        seg_ts = sorted(set(ts) | {0.5})
        seg = segment(curve)
        seg_rows = evaluate_path(
            seg, prepared, seg_ts, progress=progress, description="segment", **common
        )
        write_table(run.file("segment.csv"), seg_rows)
    plot_path(run.file("path.png"), rows, seg_rows, title=f"{curve.kind} curve, {spec.arch}")
    summary = path_summary(rows, seg_rows)
    run.write_summary(summary)
    return summary


def run_extract(
    path: str | Path,
    out: str | Path,
    *,
    t: float | None = None,
    u: float | None = None,
    v: float | None = None,
    data: DataConfig | None = None,
    data_dir: str | None = None,
    test_limit: int | None = None,
    bn_split: str | None = None,
    device: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Write the model at ``t`` on a curve (or ``(u, v)`` on a surface) as an ordinary checkpoint.

    BatchNorm statistics are recomputed at that point from the family's training data. The
    run directory gets ``model.safetensors`` + ``model.json`` (which records the source and the
    endpoints' attack specs) and a summary with the model's test loss and accuracy.
    """
    kind = family_kind(path)
    coords = _coordinates(kind, t, u, v)
    dev = resolve_device(device)
    family, spec, meta = load_family(path, dev)
    run = RunDir(out, force=force)
    prepared = _prepare(meta, spec, path, data, data_dir, test_limit)
    split = bn_split or meta.get("train_split", "train")
    run.write_config(
        {"command": "extract", "source": str(path), **coords, "bn_split": split, "device": str(dev)}
    )
    point_data = PointData(prepared, split, dev)
    model = family.model_from_coefficients(
        family.coefficients(*coords.values()), point_data.own, dev
    )
    res = evaluate_model(model, point_data.test, dev)
    summary = {**coords, "clean_loss": res["loss"], "clean_acc": res["acc"]}
    save_model(
        run.file("model.safetensors"),
        model,
        spec,
        dataset=prepared.config.dataset,
        metrics=summary,
        extra={
            "source": {"kind": kind, "path": str(path), **coords, "bn_split": split},
            "endpoints": meta.get("endpoints"),
            "endpoint_attacks": meta.get("endpoint_attacks"),
        },
    )
    run.write_summary(summary)
    return summary


def _coordinates(kind: str, t, u, v) -> dict[str, float]:
    if kind == "curve":
        if t is None or u is not None or v is not None:
            raise ModeconnError("a point on a curve is given by --t (and not --u/--v)")
        coords = {"t": float(t)}
    elif kind == "surface":
        if u is None or v is None or t is not None:
            raise ModeconnError("a point on a surface is given by --u and --v (and not --t)")
        coords = {"u": float(u), "v": float(v)}
    else:
        raise ModeconnError(f"this is a {kind} checkpoint, not a curve or surface")
    for name, value in coords.items():
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ModeconnError(f"--{name} must lie in [0, 1], got {value}")
    return coords


def center_coefficients(family: ControlPointModel) -> torch.Tensor:
    """Coefficients of the family's middle point: t = 0.5, or (u, v) = (0.5, 0.5)."""
    return family.coefficients(*([0.5] * family.coordinates))


def report_surface(
    run: RunDir,
    surface: Surface,
    spec,
    meta: dict[str, Any],
    data: PreparedData,
    *,
    grid: int = 11,
    bn_split: str = "train",
    metrics: Sequence[PathMetric] = (),
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH,
    progress: bool = False,
) -> dict[str, float]:
    """Evaluate ``surface`` on a grid; write ``grid.csv``, ``surface.png`` and the best point
    (``best.safetensors`` + ``best.json``, BatchNorm recomputed) into ``run``; return figures."""
    from modeconn.report.plots import plot_surface

    dev = torch.device(device)
    evaluation = evaluate_surface(
        surface,
        data,
        grid,
        bn_split=bn_split,
        metrics=metrics,
        device=dev,
        batch_size=batch_size,
        progress=progress,
    )
    write_table(run.file("grid.csv"), evaluation.rows)
    summary = evaluation.summary
    plot_surface(
        run.file("surface.png"), evaluation.rows, best=(summary["best_u"], summary["best_v"])
    )
    point_data = PointData(data, bn_split, dev, batch_size)
    best = surface.model_at(summary["best_u"], summary["best_v"], point_data.own, dev)
    save_model(
        run.file("best.safetensors"),
        best,
        spec,
        dataset=data.config.dataset,
        metrics={k: summary[k] for k in ("best_u", "best_v", "best_test_acc", "best_test_loss")},
        extra={
            "source": {
                "kind": "surface",
                "path": str(run.file("surface.safetensors")),
                "u": summary["best_u"],
                "v": summary["best_v"],
                "bn_split": bn_split,
            },
            "endpoints": meta.get("endpoints"),
            "endpoint_attacks": meta.get("endpoint_attacks"),
        },
    )
    return summary


def run_surface_eval(
    surface_path: str | Path,
    out: str | Path,
    *,
    grid: int = 11,
    metrics: Sequence[PathMetric] = (),
    data: DataConfig | None = None,
    data_dir: str | None = None,
    test_limit: int | None = None,
    bn_split: str | None = None,
    batch_size: int = EVAL_BATCH,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a saved surface on a ``grid``×``grid`` lattice into run directory ``out``."""
    from modeconn.connectivity.checkpoints import load_surface

    dev = resolve_device(device)
    surface, spec, meta = load_surface(surface_path, dev)
    run = RunDir(out, force=force)
    prepared = _prepare(meta, spec, surface_path, data, data_dir, test_limit)
    split = bn_split or meta.get("train_split", "train")
    run.write_config(
        {
            "command": "surface-eval",
            "surface": str(surface_path),
            "grid": grid,
            "metrics": [m.name for m in metrics],
            "data": prepared.config.to_dict(),
            "bn_split": split,
            "device": str(dev),
        }
    )
    summary = report_surface(
        run,
        surface,
        spec,
        meta,
        prepared,
        grid=grid,
        bn_split=split,
        metrics=metrics,
        device=dev,
        batch_size=batch_size,
        progress=progress,
    )
    run.write_summary(summary)
    return summary
