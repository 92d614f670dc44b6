"""The ``surface-eval`` command: evaluate a saved surface on a grid (see :func:`report_surface`,
which the ``surface`` command uses too)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modeconn.checkpoints import save_model
from modeconn.commands.family import prepare_family_data
from modeconn.connectivity.checkpoints import load_surface
from modeconn.connectivity.evaluate import EVAL_BATCH, PointData, evaluate_surface, holdout_split_of
from modeconn.connectivity.metrics import PathMetric
from modeconn.connectivity.surfaces import Surface
from modeconn.data.prepare import DataConfig, PreparedData
from modeconn.distributed import resolve_device
from modeconn.io import write_table
from modeconn.rundir import RunDir, open_run


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
    prepared = prepare_family_data(meta, spec, surface_path, data, data_dir, test_limit)
    split = bn_split or meta.get("train_split", "train")
    config = {
        "command": "surface-eval",
        "surface": str(surface_path),
        "grid": grid,
        "metrics": [m.name for m in metrics],
        "data": prepared.config.to_dict(),
        "bn_split": split,
        "train_eval_limit": train_eval_limit,
        "device": str(dev),
    }
    with open_run(out, config, force=force) as run:
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
        run.finish(summary)
    return summary
