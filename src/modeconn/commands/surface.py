"""The ``surface`` command: train a Bezier surface through four saved models and evaluate it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.checkpoints import foreign_record
from modeconn.commands.family import FamilySession, check_family_options
from modeconn.commands.surface_eval import report_surface
from modeconn.connectivity.checkpoints import save_surface
from modeconn.connectivity.surfaces import CORNER_NAMES, Surface
from modeconn.connectivity.train import curve_train_config
from modeconn.data.prepare import DataConfig
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models import build_model
from modeconn.models.foreign import ForeignArchitecture
from modeconn.training import TrainConfig


def _check_options(
    model_paths: Sequence[str | Path], num_bends: tuple[int, int], t_per_batch: int, grid: int
) -> None:
    """Reject bad options before anything is loaded or written."""
    if len(model_paths) != 4:
        raise ModeconnError(f"a surface joins 4 models, got {len(model_paths)}")
    if min(num_bends) < 2 or num_bends[0] * num_bends[1] <= 4:
        raise ModeconnError(f"the control grid needs a point besides the corners, got {num_bends}")
    check_family_options(num_bends=3, t_per_batch=t_per_batch)
    if grid < 2:
        raise InvalidArgument("grid", f"grid must be at least 2, got {grid}")


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
    foreign: ForeignArchitecture | None = None,
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
    _check_options(model_paths, num_bends, t_per_batch, grid)
    config = config or curve_train_config()
    s = FamilySession(model_paths, CORNER_NAMES, data, config, train_split, device, foreign)
    options = {
        "command": "surface",
        "models": [str(p) for p in model_paths],
        "num_bends": list(num_bends),
        "t_per_batch": t_per_batch,
        "stratified": stratified,
        "grid": grid,
        "train_eval_limit": train_eval_limit,
        **foreign_record(foreign),
    }
    with s.open_run(out, options, force=force, resume=resume) as run:
        torch.manual_seed(config.seed)
        surface = Surface.from_corners(build_model(s.spec), s.states(), num_bends).to(s.dev)

        def save(model: nn.Module, metrics: dict[str, Any]) -> None:
            path = run.file("surface.safetensors")
            save_surface(path, model, s.spec, s.data.dataset, {**s.meta, "metrics": metrics})

        last = s.train(
            run,
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
                    run,
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
        run.finish(summary)
    return summary
