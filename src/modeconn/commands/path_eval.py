"""The ``path-eval`` command: evaluate a saved curve at evenly spaced values of t."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeconn.commands.family import prepare_family_data
from modeconn.connectivity.checkpoints import load_curve
from modeconn.connectivity.curves import Curve, segment
from modeconn.connectivity.evaluate import EVAL_BATCH, evaluate_path, path_summary, ts_grid
from modeconn.connectivity.metrics import PathMetric
from modeconn.data.prepare import DataConfig, PreparedData
from modeconn.distributed import resolve_device
from modeconn.io import write_table
from modeconn.models import ModelSpec
from modeconn.rundir import RunDir, open_run


@dataclass
class PathEvaluation:
    """A saved curve's evaluation along t, set up before its run directory is touched: the
    curve and its data are loaded, so a missing file or a data set that does not fit is
    reported with nothing written."""

    curve: Curve
    spec: ModelSpec
    data: PreparedData
    ts: list[float]
    config: dict[str, Any]
    measure: dict[str, Any]
    with_segment: bool
    progress: bool

    @classmethod
    def load(
        cls,
        curve_path: str | Path,
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
        progress: bool = True,
    ) -> PathEvaluation:
        """Load the curve and its data (see :func:`run_path_eval` for the options)."""
        ts = ts_grid(points)
        dev = resolve_device(device)
        curve, spec, meta = load_curve(curve_path, dev)
        prepared = prepare_family_data(meta, spec, curve_path, data, data_dir, test_limit)
        split = bn_split or meta.get("train_split", "train")
        config = {
            "command": "path-eval",
            "curve": str(curve_path),
            "points": points,
            "metrics": [m.name for m in metrics],
            "data": prepared.config.to_dict(),
            "bn_split": split,
            "train_eval_limit": train_eval_limit,
            "segment": with_segment,
            "device": str(dev),
        }
        measure = dict(
            bn_split=split,
            metrics=metrics,
            device=dev,
            batch_size=batch_size,
            train_eval_limit=train_eval_limit,
        )
        return cls(curve, spec, prepared, ts, config, measure, with_segment, progress)

    def write(self, run: RunDir) -> dict[str, Any]:
        """Evaluate the curve (and the straight segment between its endpoints) into ``run``:
        ``path.csv``, ``segment.csv``, ``path.png``; return the summary's figures."""
        from modeconn.report.plots import plot_path

        rows = self._evaluate(self.curve, self.ts, "curve")
        write_table(run.file("path.csv"), rows)
        seg_rows = None
        if self.with_segment:
            seg_rows = self._evaluate(segment(self.curve), sorted(set(self.ts) | {0.5}), "segment")
            write_table(run.file("segment.csv"), seg_rows)
        title = f"{self.curve.kind} curve, {self.spec.arch}"
        plot_path(run.file("path.png"), rows, seg_rows, title=title)
        return path_summary(rows, seg_rows)

    def _evaluate(self, curve: Curve, ts: list[float], description: str) -> list[dict[str, Any]]:
        return evaluate_path(
            curve,
            self.data,
            ts,
            progress=self.progress,
            description=description,
            **self.measure,
        )


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
    accuracy, input-Hessian eigenvalue, …); ``extra_config`` adds entries to ``config.json``.
    """
    evaluation = PathEvaluation.load(
        curve_path,
        points=points,
        metrics=metrics,
        data=data,
        data_dir=data_dir,
        test_limit=test_limit,
        bn_split=bn_split,
        train_eval_limit=train_eval_limit,
        with_segment=with_segment,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    config = {**evaluation.config, **(extra_config or {})}
    with open_run(out, config, force=force) as run:
        summary = evaluation.write(run)
        run.finish(summary)
    return summary
