"""Training curves and surfaces through the one training loop.

The objective (:class:`PointObjective`) draws the point of each mini-batch — t ~ U(0, 1) for a
curve, (u, v) ~ U[0, 1]² for a surface — and minimises CE(f(x; φ(t)), y) + ½·wd·‖φ(t)‖²
(Garipov et al. 2018): the weight decay acts on the point of the family, not on each control
point, so the loop's own weight decay is switched off (``handles_weight_decay``). Everything
else — schedule, progress, metrics, atomic checkpoints, ``--resume``, DDP — is the loop's.

:func:`fit_curve` trains a curve from two parameter sets in memory (path repair builds on it);
:func:`train_curve` and :func:`train_surface` are the ``connect`` and ``surface`` commands.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.checkpoints import Checkpoint, load_model
from modeconn.connectivity.checkpoints import (
    check_same_architecture,
    endpoint_meta,
    family_kind,
    load_curve,
    save_curve,
    save_surface,
)
from modeconn.connectivity.curves import CURVE_KINDS, INITS, ControlPointModel, Curve, StateDict
from modeconn.connectivity.evaluate import PointData, center_coefficients, report_surface
from modeconn.connectivity.surfaces import CORNER_NAMES, Surface
from modeconn.distributed import DistContext, init_distributed
from modeconn.errors import ModeconnError
from modeconn.experiment import DataConfig, PreparedData, check_compatible, prepare_data
from modeconn.models import build_model
from modeconn.rundir import RunDir
from modeconn.training import (
    BatchSource,
    EpochEndFn,
    EvalFn,
    Objective,
    TrainConfig,
    TrainResult,
    evaluate_model,
    train,
)

#: Reference settings for curve training (Garipov et al. 2018; Zhao et al. 2020).
CURVE_DEFAULTS: dict[str, Any] = {
    "epochs": 100,
    "batch_size": 128,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "schedule": "mc",
}


def curve_train_config(**overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` with the reference curve settings, updated by ``overrides``."""
    return TrainConfig(**{**CURVE_DEFAULTS, **overrides})


class PointObjective(Objective):
    """CE at a random point of a curve or surface plus ½·wd·‖φ‖² at that point.

    ``points_per_batch`` > 1 splits each mini-batch into that many chunks, each at its own point
    (same compute, lower variance). ``stratified`` draws, per epoch and per coordinate, one value
    from each of ``steps × points_per_batch`` equal strata of [0, 1] in random order, so every
    epoch covers the family evenly. Draws use the global RNG, which the loop re-seeds every epoch,
    so a resumed run sees the same points.
    """

    handles_weight_decay = True

    def __init__(
        self,
        coordinates: int,
        weight_decay: float,
        points_per_batch: int = 1,
        stratified: bool = False,
        steps_per_epoch: int = 1,
    ) -> None:
        if points_per_batch < 1:
            raise ModeconnError(f"--t-per-batch must be at least 1, got {points_per_batch}")
        self.coordinates = coordinates
        self.weight_decay = weight_decay
        self.points_per_batch = points_per_batch
        self.stratified = stratified
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self._queue: torch.Tensor | None = None
        self._next = 0

    def start_epoch(self, epoch: int, model: nn.Module) -> None:
        """Draw this epoch's stratified points (when stratified)."""
        if not self.stratified:
            return
        n = self.steps_per_epoch * self.points_per_batch
        strata = torch.stack([torch.randperm(n) for _ in range(self.coordinates)], dim=1)
        self._queue = (strata + torch.rand(n, self.coordinates)) / n
        self._next = 0

    def sample(self) -> torch.Tensor:
        """The points of the next mini-batch: points_per_batch × coordinates, in [0, 1]."""
        k = self.points_per_batch
        if self._queue is not None and self._next + k <= len(self._queue):
            points = self._queue[self._next : self._next + k]
            self._next += k
            return points
        return torch.rand(k, self.coordinates)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        points = self.sample()
        logits, penalty = model(x, *points.unbind(1), weight_decay=self.weight_decay)
        return F.cross_entropy(logits, y) + penalty, logits


def train_family(
    family: ControlPointModel,
    loader: BatchSource,
    config: TrainConfig,
    *,
    t_per_batch: int = 1,
    stratified: bool = False,
    run: RunDir | None = None,
    evaluate: EvalFn | None = None,
    on_epoch_end: EpochEndFn | None = None,
    device: torch.device | str = "cpu",
    dist_ctx: DistContext | None = None,
    progress: bool = True,
    description: str = "curve",
) -> TrainResult:
    """Train the free control points of ``family`` with :class:`PointObjective` in the one loop."""
    objective = PointObjective(
        family.coordinates, config.weight_decay, t_per_batch, stratified, len(loader)
    )
    return train(
        family,
        loader,
        config,
        objective=objective,
        run=run,
        evaluate=evaluate,
        on_epoch_end=on_epoch_end,
        device=device,
        dist_ctx=dist_ctx,
        progress=progress,
        description=description,
    )


def fit_curve(
    base_model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    loader: BatchSource,
    config: TrainConfig,
    *,
    kind: str = "bezier",
    num_bends: int = 3,
    fix_endpoints: bool = True,
    init: str = "linear",
    noise: float = 0.1,
    init_points: Sequence[StateDict] | None = None,
    t_per_batch: int = 1,
    stratified: bool = False,
    evaluate: Callable[[Curve], dict[str, float]] | None = None,
    on_epoch_end: EpochEndFn | None = None,
    run: RunDir | None = None,
    device: torch.device | str = "cpu",
    dist_ctx: DistContext | None = None,
    progress: bool = False,
) -> Curve:
    """Train a curve from ``state_a`` to ``state_b`` on ``loader`` (no run directory needed).

    ``base_model`` gives the architecture and is left untouched (the curve works on a copy).
    ``init_points`` replace the interior control points (``num_bends − 2`` parameter dicts).
    ``evaluate``/``on_epoch_end``/``run`` are passed to the training loop (per-epoch figures,
    checkpoints, resumable state). The global RNG is seeded from ``config.seed`` first, so the
    result is reproducible.
    """
    config.validate()
    torch.manual_seed(config.seed)
    curve = Curve.from_endpoints(
        base_model, state_a, state_b, kind, num_bends, fix_endpoints, init, noise
    )
    if init_points is not None:
        set_interior_points(curve, init_points)
    train_family(
        curve,
        loader,
        config,
        t_per_batch=t_per_batch,
        stratified=stratified,
        run=run,
        evaluate=evaluate,
        on_epoch_end=on_epoch_end,
        device=device,
        dist_ctx=dist_ctx,
        progress=progress,
    )
    return curve.eval()


def set_interior_points(curve: Curve, points: Sequence[StateDict]) -> None:
    """Overwrite the interior control points θ_1 … θ_{n−1} (e.g. from another curve)."""
    if len(points) != curve.num_bends - 2:
        raise ModeconnError(
            f"{len(points)} interior points given for a curve with {curve.num_bends - 2}"
        )
    for offset, point in enumerate(points, start=1):
        curve.set_control_point(offset, point)


# --- commands --------------------------------------------------------------------------------


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
        raise ModeconnError("training on bonafide data needs a bonafide subset (--bonafide N)")
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
    if kind not in CURVE_KINDS:
        raise ModeconnError(f"unknown curve kind '{kind}' (use {', '.join(CURVE_KINDS)})")
    if num_bends < 3:
        raise ModeconnError(
            f"--num-bends counts the endpoints; it needs a free point, so >= 3 (got {num_bends})"
        )
    if t_per_batch < 1:
        raise ModeconnError(f"--t-per-batch must be at least 1, got {t_per_batch}")


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
                f"--init curve {path} is a {other.num_bends}-bend {other.kind}, "
                f"not a {num_bends}-bend {kind}"
            )
        return other.control_points()[1:-1]
    raise ModeconnError(f"--init {path} is a {source} checkpoint; give a model or a curve")


def train_curve(
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
        raise ModeconnError(f"--init {init}: use linear, noise, or the path of a checkpoint")
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


def train_surface(
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
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a Bezier surface through four saved models A, B, C, D and evaluate it on a grid.

    The corners sit at (u, v) = (0, 0), (1, 0), (0, 1), (1, 1) and stay fixed; the other control
    points start from their bilinear blend and train with (u, v) ~ U[0, 1]². Then the surface is
    evaluated on a ``grid``×``grid`` lattice (BatchNorm recomputed at every point): ``grid.csv``,
    ``surface.png``, the best point as ``best.safetensors``, and the grid ensemble against the
    corners' ensemble in the summary.
    """
    if len(model_paths) != 4:
        raise ModeconnError(f"a surface joins 4 models, got {len(model_paths)}")
    config = config or curve_train_config()
    if min(num_bends) < 2 or num_bends[0] * num_bends[1] <= 4:
        raise ModeconnError(f"the control grid needs a point besides the corners, got {num_bends}")
    _check_options(num_bends=3, t_per_batch=t_per_batch)
    if grid < 2:
        raise ModeconnError(f"--grid must be at least 2, got {grid}")
    s = _Session(model_paths, CORNER_NAMES, out, data, config, train_split, device, force, resume)
    s.write_config(
        {
            "command": "surface",
            "models": [str(p) for p in model_paths],
            "num_bends": list(num_bends),
            "t_per_batch": t_per_batch,
            "stratified": stratified,
            "grid": grid,
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
                progress=progress,
            )
        )
    s.finish(summary)
    return summary
