"""Training curves and surfaces through the one training loop.

The objective (:class:`PointObjective`) draws the point of each mini-batch — t ~ U(0, 1) for a
curve, (u, v) ~ U[0, 1]² for a surface — and minimises CE(f(x; φ(t)), y) + ½·wd·‖φ(t)‖²
(Garipov et al. 2018): the weight decay acts on the point of the family, not on each control
point, so the loop's own weight decay is switched off (``handles_weight_decay``). Everything
else — schedule, progress, metrics, atomic checkpoints, ``--resume``, DDP — is the loop's.

:func:`fit_curve` trains a curve from two parameter sets in memory (path repair builds on it);
:func:`train_family` any curve or surface on a batch source; the ``connect`` and ``surface``
commands (:mod:`modeconn.commands.connect`) give them run directories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.connectivity.curves import ControlPointModel, Curve, StateDict
from modeconn.distributed import DistContext
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.training import (
    BatchSource,
    EpochEndFn,
    EvalFn,
    Objective,
    TrainConfig,
    TrainingRun,
    TrainResult,
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
            raise InvalidArgument(
                "points_per_batch", f"points_per_batch must be at least 1, got {points_per_batch}"
            )
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
    run: TrainingRun | None = None,
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
    run: TrainingRun | None = None,
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
