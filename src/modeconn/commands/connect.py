"""The ``connect``, ``surface``, ``path-eval`` and ``extract`` commands.

Curves and surfaces are trained and evaluated in memory by :mod:`modeconn.connectivity`; these
functions load the saved models, give the training a run directory (config, per-epoch metrics,
resumable state, DDP under ``torchrun``), and write the tables, figures and checkpoints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.checkpoints import Checkpoint, load_model, save_model
from modeconn.connectivity.checkpoints import (
    check_same_architecture,
    endpoint_meta,
    family_kind,
    load_curve,
    load_family,
    load_surface,
    save_curve,
    save_surface,
)
from modeconn.connectivity.curves import (
    INITS,
    ControlPointModel,
    Curve,
    StateDict,
    check_curve_kind,
    segment,
)
from modeconn.connectivity.evaluate import (
    EVAL_BATCH,
    PointData,
    center_coefficients,
    evaluate_path,
    evaluate_surface,
    holdout_split_of,
    path_summary,
    ts_grid,
)
from modeconn.connectivity.metrics import PathMetric
from modeconn.connectivity.surfaces import CORNER_NAMES, Surface
from modeconn.connectivity.train import curve_train_config, set_interior_points, train_family
from modeconn.distributed import init_distributed, resolve_device
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.experiment import DataConfig, PreparedData, check_compatible, prepare_data
from modeconn.io import write_table
from modeconn.models import build_model
from modeconn.rundir import RunDir
from modeconn.training import EvalFn, TrainConfig, evaluate_model


def _load_models(paths: Sequence[str | Path], names: Sequence[str]) -> list[Checkpoint]:
    """Load the endpoint (corner) models on the CPU and check they share one architecture."""
    for path, name in zip(paths, names, strict=True):
        kind = family_kind(path)
        if kind != "model":
            raise ModeconnError(f"{name} ({path}) is a {kind} checkpoint, not a model")
    ckpts = [load_model(p) for p in paths]
    check_same_architecture(ckpts, names)
    return ckpts


def _resolve_split(data: DataConfig, train_split: str | None) -> str:
    split = train_split or ("bonafide" if data.bonafide else "train")
    if split not in ("train", "bonafide"):
        raise ModeconnError(f"a curve trains on 'train' or 'bonafide' data, not '{split}'")
    if split == "bonafide" and not data.bonafide:
        raise InvalidArgument(
            "bonafide", "training on bonafide data needs a bonafide subset (bonafide=N)"
        )
    return split


def _center_evaluator(data: PreparedData, split: str, dev: torch.device, prefix: str) -> EvalFn:
    """Per-epoch figures at the family's middle point (BatchNorm recomputed from ``split``)."""
    point_data = PointData(data, split, dev)

    def evaluate(model: nn.Module) -> dict[str, float]:
        mid = model.model_from_coefficients(center_coefficients(model), point_data.own, dev)
        res = evaluate_model(mid, point_data.test, dev)
        return {f"{prefix}_test_loss": res["loss"], f"{prefix}_test_acc": res["acc"]}

    return evaluate


class _Session:
    """What ``connect`` and ``surface`` share: distributed set-up, run directory, data, models."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        names: Sequence[str],
        out: str | Path,
        data: DataConfig | None,
        config: TrainConfig,
        train_split: str | None,
        device: str,
        force: bool,
        resume: bool,
    ) -> None:
        config.validate()
        self.config = config
        self.ctx, self.dev = init_distributed(device, os.environ.get("MODECONN_INIT_METHOD"))
        self.ckpts = _load_models(paths, names)
        self.spec = self.ckpts[0].spec
        own_dataset = self.ckpts[0].dataset or DataConfig.dataset
        if data is None:
            data = DataConfig(dataset=own_dataset, seed=config.seed)
        elif not data.dataset:  # "the models' own data set"
            data = replace(data, dataset=own_dataset)
        self.data = data
        self.split = _resolve_split(self.data, train_split)
        run = RunDir(out, force=force, resume=resume) if self.ctx.is_main else None
        self.ctx.barrier()
        self.run = run or RunDir.attach(out, resuming=resume and (Path(out) / "state").exists())
        self.prepared = prepare_data(self.data)
        check_compatible(self.spec, self.prepared, str(paths[0]))
        self.meta = {
            **endpoint_meta(self.ckpts),
            "data": self.data.to_dict(),
            "train_split": self.split,
        }

    def write_config(self, options: dict[str, Any]) -> None:
        if self.ctx.is_main:
            self.run.write_config(
                {
                    **options,
                    "data": self.data.to_dict(),
                    "train_split": self.split,
                    "train": self.config.to_dict(),
                    "device": str(self.dev),
                    "world_size": self.ctx.world_size,
                }
            )

    def loader(self):
        return self.prepared.train_loader(
            self.config.batch_size, split=self.split, device=self.dev, dist_ctx=self.ctx
        )

    def states(self) -> list[dict[str, torch.Tensor]]:
        return [c.model.state_dict() for c in self.ckpts]

    def train(
        self,
        family: ControlPointModel,
        save: Callable[[nn.Module, dict[str, Any]], None],
        *,
        prefix: str,
        description: str,
        t_per_batch: int,
        stratified: bool,
        progress: bool,
    ) -> dict[str, Any]:
        """Train ``family`` in the one loop, saving it after every epoch with ``save(model,
        metrics)`` and reporting its centre point's test figures as ``PREFIX_test_*``; returns the
        last epoch's record (empty on processes other than the main one)."""

        def checkpoint(model: nn.Module, epoch: int, record: dict[str, float]) -> None:
            save(model, {**record, "epoch": epoch})

        result = train_family(
            family,
            self.loader(),
            self.config,
            t_per_batch=t_per_batch,
            stratified=stratified,
            run=self.run,
            evaluate=_center_evaluator(self.prepared, self.split, self.dev, prefix),
            on_epoch_end=checkpoint,
            device=self.dev,
            dist_ctx=self.ctx,
            progress=progress,
            description=description,
        )
        return result.last if self.ctx.is_main else {}

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run finished (main process) and wait for the other processes."""
        if self.ctx.is_main:
            self.run.write_summary(summary)
            self.run.clear_state()
        self.ctx.barrier()


def _check_options(*, num_bends: int, t_per_batch: int, kind: str = "bezier") -> None:
    """Reject bad options before anything is written to the run directory."""
    check_curve_kind(kind)
    if num_bends < 3:
        raise InvalidArgument(
            "num_bends",
            f"num_bends counts the endpoints; it needs a free point, so >= 3 (got {num_bends})",
        )
    if t_per_batch < 1:
        raise InvalidArgument("t_per_batch", f"t_per_batch must be at least 1, got {t_per_batch}")


def _init_points_from(path: str | Path, kind: str, num_bends: int) -> list[StateDict]:
    """Interior points from a checkpoint: every interior point = a model's weights, or the
    interior points of a curve with the same kind and number of bends."""
    source = family_kind(path)
    if source == "model":
        state = load_model(path).model.state_dict()
        return [state] * (num_bends - 2)
    if source == "curve":
        other, _, _ = load_curve(path)
        if (other.kind, other.num_bends) != (kind, num_bends):
            raise ModeconnError(
                f"init curve {path} is a {other.num_bends}-bend {other.kind}, "
                f"not a {num_bends}-bend {kind}"
            )
        return other.control_points()[1:-1]
    raise InvalidArgument("init", f"init {path} is a {source} checkpoint; give a model or a curve")


def run_connect(
    model_a_path: str | Path,
    model_b_path: str | Path,
    out: str | Path,
    *,
    data: DataConfig | None = None,
    config: TrainConfig | None = None,
    kind: str = "bezier",
    num_bends: int = 3,
    fix_endpoints: bool = True,
    init: str | Path = "linear",
    noise: float = 0.1,
    train_split: str | None = None,
    t_per_batch: int = 1,
    stratified: bool = False,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a curve between two saved models into run directory ``out``; return its summary.

    ``init`` is ``"linear"`` (interior points on the segment), ``"noise"`` (the segment plus
    relative Gaussian noise of size ``noise``) or a checkpoint path: a model (every interior point
    starts at its weights) or a curve of the same kind and bends. ``train_split`` defaults to
    ``"bonafide"`` when ``data.bonafide`` is set, else ``"train"``. Writes ``curve.safetensors`` +
    ``curve.json`` after every epoch; under ``torchrun`` it trains with DDP.
    """
    config = config or curve_train_config()
    _check_options(kind=kind, num_bends=num_bends, t_per_batch=t_per_batch)
    if str(init) not in INITS and not Path(init).exists():
        raise InvalidArgument(
            "init", f"init {init}: use linear, noise, or the path of a checkpoint"
        )
    s = _Session(
        [model_a_path, model_b_path],
        ["A", "B"],
        out,
        data,
        config,
        train_split,
        device,
        force,
        resume,
    )
    s.write_config(
        {
            "command": "connect",
            "model_a": str(model_a_path),
            "model_b": str(model_b_path),
            "kind": kind,
            "num_bends": num_bends,
            "fix_endpoints": fix_endpoints,
            "init": str(init),
            "noise": noise,
            "t_per_batch": t_per_batch,
            "stratified": stratified,
        }
    )
    torch.manual_seed(config.seed)
    state_a, state_b = s.states()
    init_mode = init if init in ("linear", "noise") else "linear"
    curve = Curve.from_endpoints(
        build_model(s.spec), state_a, state_b, kind, num_bends, fix_endpoints, init_mode, noise
    )
    if init_mode != init:
        set_interior_points(curve, _init_points_from(init, kind, num_bends))
    curve.to(s.dev)
    meta = {**s.meta, "curve_init": str(init)}

    def save(model: nn.Module, metrics: dict[str, Any]) -> None:
        save_curve(
            s.run.file("curve.safetensors"),
            model,
            s.spec,
            s.data.dataset,
            {**meta, "metrics": metrics},
        )

    last = s.train(
        curve,
        save,
        prefix="mid",
        description=f"connect {s.spec.arch}",
        t_per_batch=t_per_batch,
        stratified=stratified,
        progress=progress,
    )
    summary: dict[str, Any] = {}
    if s.ctx.is_main:
        keys = ("train_loss", "train_acc", "mid_test_loss", "mid_test_acc")
        summary = {"epochs": config.epochs, **{k: last.get(k) for k in keys}}
        save(curve, summary)
    s.finish(summary)
    return summary


def run_surface(
    model_paths: Sequence[str | Path],
    out: str | Path,
    *,
    data: DataConfig | None = None,
    config: TrainConfig | None = None,
    num_bends: tuple[int, int] = (3, 3),
    train_split: str | None = None,
    t_per_batch: int = 1,
    stratified: bool = False,
    grid: int = 11,
    train_eval_limit: int | None = None,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a Bezier surface through four saved models A, B, C, D and evaluate it on a grid.

    The corners sit at (u, v) = (0, 0), (1, 0), (0, 1), (1, 1) and stay fixed; the other control
    points start from their bilinear blend and train with (u, v) ~ U[0, 1]². Then the surface is
    evaluated on a ``grid``×``grid`` lattice (BatchNorm recomputed at every point, from the
    ``train_eval_limit`` stratified subset of the training data when given): ``grid.csv``,
    ``surface.png``, the best point as ``best.safetensors`` (chosen on the validation split when
    ``data.val_size`` makes one), and the grid ensemble against the corners' ensemble in the
    summary.
    """
    if len(model_paths) != 4:
        raise ModeconnError(f"a surface joins 4 models, got {len(model_paths)}")
    config = config or curve_train_config()
    if min(num_bends) < 2 or num_bends[0] * num_bends[1] <= 4:
        raise ModeconnError(f"the control grid needs a point besides the corners, got {num_bends}")
    _check_options(num_bends=3, t_per_batch=t_per_batch)
    if grid < 2:
        raise InvalidArgument("grid", f"grid must be at least 2, got {grid}")
    s = _Session(model_paths, CORNER_NAMES, out, data, config, train_split, device, force, resume)
    s.write_config(
        {
            "command": "surface",
            "models": [str(p) for p in model_paths],
            "num_bends": list(num_bends),
            "t_per_batch": t_per_batch,
            "stratified": stratified,
            "grid": grid,
            "train_eval_limit": train_eval_limit,
        }
    )
    torch.manual_seed(config.seed)
    surface = Surface.from_corners(build_model(s.spec), s.states(), num_bends).to(s.dev)
    path = s.run.file("surface.safetensors")

    def save(model: nn.Module, metrics: dict[str, Any]) -> None:
        save_surface(path, model, s.spec, s.data.dataset, {**s.meta, "metrics": metrics})

    last = s.train(
        surface,
        save,
        prefix="center",
        description=f"surface {s.spec.arch}",
        t_per_batch=t_per_batch,
        stratified=stratified,
        progress=progress,
    )
    summary: dict[str, Any] = {}
    if s.ctx.is_main:
        keys = ("train_loss", "train_acc")
        summary = {"epochs": config.epochs, **{k: last.get(k) for k in keys}}
        save(surface, summary)
        summary.update(
            report_surface(
                s.run,
                surface,
                s.spec,
                s.meta,
                s.prepared,
                grid=grid,
                bn_split=s.split,
                device=s.dev,
                train_eval_limit=train_eval_limit,
                progress=progress,
            )
        )
    s.finish(summary)
    return summary


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
            raise InvalidArgument(
                ("t", "u", "v"), "a point on a curve is given by t (and not u or v)"
            )
        coords = {"t": float(t)}
    elif kind == "surface":
        if u is None or v is None or t is not None:
            raise InvalidArgument(
                ("u", "v", "t"), "a point on a surface is given by u and v (and not t)"
            )
        coords = {"u": float(u), "v": float(v)}
    else:
        raise ModeconnError(f"this is a {kind} checkpoint, not a curve or surface")
    for name, value in coords.items():
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InvalidArgument(name, f"{name} must lie in [0, 1], got {value}")
    return coords


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
    train_eval_limit: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Evaluate ``surface`` on a grid; write ``grid.csv``, ``surface.png`` and the best point
    (``best.safetensors`` + ``best.json``, BatchNorm recomputed) into ``run``; return figures.

    The best point is chosen on held-out training data when the data has some (the validation
    split, or the bonafide hold-out for a surface trained on bonafide data), else on the
    surface's own training data; ``train_eval_limit`` measures BatchNorm statistics and the
    "train" columns on a stratified subset of ``bn_split``."""
    from modeconn.report.plots import plot_surface

    dev = torch.device(device)
    evaluation = evaluate_surface(
        surface,
        data,
        grid,
        bn_split=bn_split,
        holdout_split=holdout_split_of(data, bn_split),
        metrics=metrics,
        device=dev,
        batch_size=batch_size,
        train_eval_limit=train_eval_limit,
        progress=progress,
    )
    write_table(run.file("grid.csv"), evaluation.rows)
    summary = evaluation.summary
    plot_surface(
        run.file("surface.png"), evaluation.rows, best=(summary["best_u"], summary["best_v"])
    )
    point_data = PointData(data, bn_split, dev, batch_size, train_eval_limit)
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
    train_eval_limit: int | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a saved surface on a ``grid``×``grid`` lattice into run directory ``out`` (see
    :func:`report_surface`)."""

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
            "train_eval_limit": train_eval_limit,
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
        train_eval_limit=train_eval_limit,
        progress=progress,
    )
    run.write_summary(summary)
    return summary
