"""Python API behind ``modeconn hessian`` and ``modeconn landscape``.

Each function loads a checkpoint, prepares its data once, measures, and — given a run directory —
writes ``config.json``, ``summary.json``, CSV tables and PNG figures there, returning the summary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.attacks.config import AttackConfig
from modeconn.checkpoints import Checkpoint, foreign_record, load_model, load_model_and_data
from modeconn.connectivity.bn import has_batchnorm
from modeconn.data.prepare import DataConfig, PreparedData
from modeconn.distributed import resolve_device
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.io import write_table
from modeconn.landscape.directions import (
    Evaluator,
    filter_normalized_direction,
    line_through,
    plane_basis,
    plane_through,
    scan_1d,
    scan_2d,
)
from modeconn.landscape.input_hessian import input_hessian_stats
from modeconn.landscape.linalg import SOLVERS
from modeconn.landscape.metrics import loss_evaluator, robust_evaluator
from modeconn.landscape.weight_hessian import (
    WeightHessian,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
)
from modeconn.models.foreign import ForeignArchitecture
from modeconn.progress import make_progress
from modeconn.report import landscape_plots as plots
from modeconn.rundir import RunDir, open_optional_run, open_run


def _load(
    model_path: str | Path,
    dataset: str | None,
    data_dir: str | None,
    seed: int,
    device: torch.device,
    foreign: ForeignArchitecture | None,
) -> tuple[Checkpoint, PreparedData]:
    """A checkpoint and the data set it was trained on (or the one asked for), checked to fit;
    ``foreign`` reads weights without a sidecar."""
    data = DataConfig(dataset=dataset, data_dir=data_dir, seed=seed)
    ckpt, _, prepared = load_model_and_data(model_path, data, device=device, foreign=foreign)
    return ckpt, prepared


def _check_solver(method: str, iters: int, tol: float) -> None:
    if method not in SOLVERS:
        raise InvalidArgument("method", f"unknown method '{method}' (use {', '.join(SOLVERS)})")
    if iters < 1:
        raise InvalidArgument("iters", f"iters must be at least 1, got {iters}")
    if not tol > 0:
        raise InvalidArgument("tol", f"tol must be positive, got {tol}")


# --- modeconn hessian -----------------------------------------------------------------------


def run_hessian(
    model_path: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    limit: int | None = 1000,
    batch_size: int = 256,
    method: str = "power",
    iters: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    foreign: ForeignArchitecture | None = None,
) -> dict[str, Any]:
    """λ_max of the input Hessian for every image of ``split`` (or a stratified ``limit``).

    Summary: ``input_hessian_lmax`` (mean), ``input_hessian_lmax_max``, the fraction of images whose
    iteration converged, the mean number of Hessian-vector products per image, and the time. With
    ``out``: also ``eigenvalues.csv`` (one row per image) and ``input_hessian.png``. ``foreign``
    reads weights without a sidecar.
    """
    _check_solver(method, iters, tol)
    if batch_size < 1:
        raise InvalidArgument("batch_size", f"batch_size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    ckpt, data = _load(model_path, dataset, data_dir, seed, dev, foreign)
    loader = data.eval_loader(split, batch_size, dev, limit=limit)
    options = {
        "command": "hessian",
        "model_path": str(model_path),
        "data": data.config.to_dict(),
        "split": split,
        "limit": limit,
        "batch_size": batch_size,
        "method": method,
        "iters": iters,
        "tol": tol,
        "seed": seed,
        "device": str(dev),
        **foreign_record(foreign),
    }
    with open_optional_run(out, options, force=force) as run:
        start = time.perf_counter()
        stats = input_hessian_stats(
            ckpt.model, loader, method=method, iters=iters, tol=tol, seed=seed, device=dev
        )
        summary: dict[str, Any] = {
            **stats.summary(),
            "method": method,
            "seconds": time.perf_counter() - start,
        }
        if run is not None:
            labels = torch.cat([y for _, y in loader]).tolist()
            _write_eigenvalues(run, labels, stats, f"{Path(model_path).name}: {split} images")
            run.finish(summary)
    return summary


def _write_eigenvalues(run: RunDir, labels: list[int], stats, title: str) -> None:
    """``eigenvalues.csv`` (one row per image) and the histogram ``input_hessian.png``."""
    write_table(
        run.file("eigenvalues.csv"),
        [
            {
                "index": i,
                "label": int(lab),
                "lmax": float(v),
                "converged": int(c),
                "hvps": int(h),
            }
            for i, (lab, v, c, h) in enumerate(
                zip(labels, stats.eigenvalues, stats.converged, stats.matvecs, strict=True)
            )
        ],
    )
    plots.plot_histogram(
        run.file("input_hessian.png"),
        stats.eigenvalues.tolist(),
        xlabel="λ_max of the input Hessian",
        title=title,
    )


# --- modeconn landscape ---------------------------------------------------------------------


@dataclass(frozen=True)
class LandscapeConfig:
    """What ``modeconn landscape`` measures, and on how much data.

    The weight Hessian and the scans use ``limit`` images of ``split`` (the training loss, as in
    Li et al. 2018); robust (adversarial) figures use ``robust_limit`` of them, PGD being costly.
    ``span`` is the half-width of the random-direction scans in units of the filter-normalised
    direction; ``points`` the number of 1D points, ``grid`` the 2D grid size per axis. For a
    network with BatchNorm the running statistics are recomputed at every scan point from the
    same ``limit`` images (the weights moved, so the stored statistics no longer match them).
    """

    split: str = "train"
    limit: int | None = 512
    batch_size: int = 256
    spectrum: bool = True
    top_k: int = 5
    method: str = "lanczos"
    iters: int = 100
    tol: float = 1e-3
    trace_samples: int = 50
    trace_tol: float = 0.02
    density: bool = True
    density_steps: int = 30
    density_probes: int = 2
    scan_1d: bool = True
    scan_2d: bool = True
    span: float = 1.0
    points: int = 21
    grid: int = 11
    adversarial: AttackConfig | None = None
    robust_limit: int | None = 256
    seed: int = 0
    through_margin: float = 0.25
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _check_solver(self.method, self.iters, self.tol)
        if self.top_k < 1:
            raise InvalidArgument("top_k", f"top_k must be at least 1, got {self.top_k}")
        if self.points < 2 or self.grid < 2:
            raise InvalidArgument(("points", "grid"), "points and grid must be at least 2")
        if not self.span > 0:
            raise InvalidArgument("span", f"span must be positive, got {self.span}")
        if self.trace_samples < 1 or self.density_steps < 1 or self.density_probes < 1:
            raise InvalidArgument(
                ("trace_samples", "density_steps", "density_probes"),
                "trace_samples, density_steps and density_probes must be ≥ 1",
            )
        if self.adversarial is not None:
            self.adversarial.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _linspace(low: float, high: float, n: int) -> list[float]:
    return [low + (high - low) * i / (n - 1) for i in range(n)]


class _Landscape:
    """One ``modeconn landscape`` run: the model, its data loaders, the evaluator, the outputs."""

    def __init__(
        self,
        model: nn.Module,
        data: PreparedData,
        cfg: LandscapeConfig,
        run: RunDir,
        device: torch.device,
        progress: bool,
    ) -> None:
        self.model, self.data, self.cfg, self.run, self.device = model, data, cfg, run, device
        self.progress = progress
        self.loader = data.eval_loader(cfg.split, cfg.batch_size, device, limit=cfg.limit)
        bn_loader = self.loader if has_batchnorm(model) else None
        if cfg.adversarial is not None:
            robust_loader = data.eval_loader(
                cfg.split, cfg.batch_size, device, limit=cfg.robust_limit
            )
            self.evaluate: Evaluator = robust_evaluator(
                robust_loader, cfg.adversarial, device, bn_loader=bn_loader
            )
        else:
            self.evaluate = loss_evaluator(self.loader, device, bn_loader=bn_loader)
        self.summary: dict[str, Any] = {}

    def _bar(self, description: str, total: int):
        bar = make_progress(self.progress)
        task = bar.add_task(description, total=total, status="")
        return bar, lambda: bar.update(task, advance=1)

    def spectrum(self) -> None:
        """Top-k eigenvalues, trace (deflated by the top-k) and the spectral density."""
        cfg = self.cfg
        hessian = WeightHessian(self.model, list(self.loader), device=self.device)
        eig = hessian_eigenvalues(
            hessian, k=cfg.top_k, method=cfg.method, iters=cfg.iters, tol=cfg.tol, seed=cfg.seed
        )
        eig_hvps = hessian.matvecs
        values = eig.values.reshape(-1).tolist()
        trace = hessian_trace(
            hessian,
            max_samples=cfg.trace_samples,
            tol=cfg.trace_tol,
            eigenvectors=eig.vectors.reshape(len(values), -1),
            seed=cfg.seed,
        )
        write_table(
            self.run.file("hessian_top.csv"),
            [{"rank": i + 1, "eigenvalue": v} for i, v in enumerate(values)],
        )
        plots.plot_top_eigenvalues(self.run.file("hessian_top.png"), values, trace=trace.trace)
        self.summary.update(
            {
                "loss": hessian.loss(),
                "hessian_lmax": values[0],
                **{f"hessian_eig_{i + 1}": v for i, v in enumerate(values)},
                "hessian_eig_hvps": eig_hvps,
                "hessian_trace": trace.trace,
                "hessian_trace_stderr": trace.stderr,
                "hessian_trace_probes": trace.samples,
                "parameters": hessian.dim,
            }
        )
        if cfg.density:
            density = hessian_density(
                hessian, steps=cfg.density_steps, probes=cfg.density_probes, seed=cfg.seed
            )
            nodes = density.nodes
            low, high = float(nodes.min()), float(nodes.max())
            pad = 0.05 * (high - low or 1.0)
            grid = torch.linspace(low - pad, high + pad, 400)
            dens, sigma = density.evaluate(grid)
            write_table(
                self.run.file("hessian_density.csv"),
                [
                    {"eigenvalue": float(g), "density": float(d)}
                    for g, d in zip(grid, dens, strict=True)
                ],
            )
            plots.plot_density(
                self.run.file("hessian_density.png"), grid.tolist(), dens.tolist(), values
            )
            self.summary["hessian_density_sigma"] = sigma

    def random_scans(self) -> None:
        """1D and 2D scans along filter-normalised random directions (Li et al. 2018)."""
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        d1 = filter_normalized_direction(self.model, generator)
        d2 = filter_normalized_direction(self.model, generator)
        tag = " (PGD at every point)" if cfg.adversarial is not None else ""
        if cfg.scan_1d:
            alphas = _linspace(-cfg.span, cfg.span, cfg.points)
            bar, tick = self._bar("1D scan", len(alphas))
            with bar:
                rows = scan_1d(self.model, d1, alphas, self.evaluate, tick)
            write_table(self.run.file("scan_1d.csv"), rows)
            plots.plot_scan_1d(
                self.run.file("scan_1d.png"), rows, title=f"filter-normalised direction{tag}"
            )
            self.summary.update(_sharpness(rows, "alpha", "scan_1d"))
        if cfg.scan_2d:
            axis = _linspace(-cfg.span, cfg.span, cfg.grid)
            bar, tick = self._bar("2D scan", len(axis) ** 2)
            with bar:
                rows = scan_2d(self.model, d1, d2, axis, axis, self.evaluate, tick)
            write_table(self.run.file("scan_2d.csv"), rows)
            plots.plot_scan_2d(
                self.run.file("scan_2d.png"),
                rows,
                marks={"θ": (0.0, 0.0)},
                title=f"filter-normalised directions{tag}",
            )

    def through(self, others: Sequence[nn.Module], names: Sequence[str]) -> None:
        """The line through this model and one other, or the plane through it and two others."""
        cfg = self.cfg
        if len(others) == 1:
            ts = _linspace(-cfg.through_margin, 1 + cfg.through_margin, cfg.points)
            bar, tick = self._bar("line", len(ts))
            with bar:
                rows = line_through(self.model, others[0], ts, self.evaluate, tick)
            write_table(self.run.file("line.csv"), rows)
            plots.plot_scan_1d(
                self.run.file("line.png"), rows, x="t", title=f"segment to {names[0]} (t = 1)"
            )
            self.summary.update(_sharpness(rows, "t", "line"))
        elif len(others) == 2:
            models = [self.model, *others]
            (x_lo, x_hi), (y_lo, y_hi) = plane_basis(models).extent(cfg.through_margin)
            xs, ys = _linspace(x_lo, x_hi, cfg.grid), _linspace(y_lo, y_hi, cfg.grid)
            bar, tick = self._bar("plane", len(xs) * len(ys))
            with bar:
                rows, plane = plane_through(models, xs, ys, self.evaluate, tick)
            write_table(self.run.file("plane.csv"), rows)
            marks = dict(zip(["θ", *names], plane.positions, strict=True))
            plots.plot_scan_2d(
                self.run.file("plane.png"),
                rows,
                "x",
                "y",
                marks=marks,
                title="plane through models",
            )
        else:
            raise InvalidArgument("through", "through takes one model (a line) or two (a plane)")


def _sharpness(rows: Sequence[dict[str, float]], key: str, prefix: str) -> dict[str, float]:
    """Flat summary of a 1D scan: the loss at the origin and the largest rise above it."""
    origin = min(rows, key=lambda r: abs(r[key]))
    out = {f"{prefix}_max_loss_rise": max(r["loss"] for r in rows) - origin["loss"]}
    if "robust_loss" in origin:
        out[f"{prefix}_max_robust_loss_rise"] = (
            max(r["robust_loss"] for r in rows) - origin["robust_loss"]
        )
    return out


def run_landscape(
    model_path: str | Path,
    out: str | Path,
    *,
    through: Sequence[str | Path] = (),
    config: LandscapeConfig | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    foreign: ForeignArchitecture | None = None,
) -> dict[str, Any]:
    """Weight-space geometry of a model, written to run directory ``out``.

    Hessian spectrum (top-k, trace, density), 1D/2D scans along filter-normalised random
    directions, and — with ``through`` — the line (one more model) or plane (two more) through
    given models. With ``config.adversarial`` every scan point is also attacked with PGD afresh.
    ``foreign`` reads weights without a sidecar (the model's and those of ``through``).
    """
    cfg = config or LandscapeConfig()
    cfg.validate()
    if len(through) > 2:
        raise InvalidArgument("through", "through takes one model (a line) or two (a plane)")
    dev = resolve_device(device)
    ckpt, data = _load(model_path, dataset, data_dir, cfg.seed, dev, foreign)
    others = []
    for path in through:
        other = load_model(
            path, device=dev, foreign=foreign, data=data.info, dataset=data.info.name
        )
        if other.spec.to_dict() != ckpt.spec.to_dict():
            raise ModeconnError(f"{path} has a different architecture from {model_path}")
        others.append(other.model)
    options = {
        "command": "landscape",
        "model_path": str(model_path),
        "through": [str(p) for p in through],
        "data": data.config.to_dict(),
        "landscape": cfg.to_dict(),
        "device": str(dev),
        **foreign_record(foreign),
    }
    with open_run(out, options, force=force) as run:
        torch.manual_seed(cfg.seed)
        job = _Landscape(ckpt.model, data, cfg, run, dev, progress)
        start = time.perf_counter()
        if cfg.spectrum:
            job.spectrum()
        if cfg.scan_1d or cfg.scan_2d:
            job.random_scans()
        if others:
            names = [Path(p).stem if Path(p).is_file() else Path(p).name for p in through]
            job.through(others, names)
        job.summary["seconds"] = time.perf_counter() - start
        run.finish(job.summary)
    return job.summary
