"""The ``path-eval`` command: evaluate a saved curve at evenly spaced values of t."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modeconn.commands.family import prepare_family_data
from modeconn.connectivity.checkpoints import load_curve
from modeconn.connectivity.curves import segment
from modeconn.connectivity.evaluate import EVAL_BATCH, evaluate_path, path_summary, ts_grid
from modeconn.connectivity.metrics import PathMetric
from modeconn.distributed import resolve_device
from modeconn.experiment import DataConfig
from modeconn.io import write_table
from modeconn.rundir import RunDir


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
    prepared = prepare_family_data(meta, spec, curve_path, data, data_dir, test_limit)
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
