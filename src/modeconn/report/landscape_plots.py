"""Figures of the landscape commands (matplotlib Agg via :mod:`modeconn.report.plots`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from modeconn.report.plots import save_figure

Rows = Sequence[Mapping[str, float]]

_LOSS_COLUMNS = (("loss", "standard"), ("robust_loss", "robust (PGD)"))
_ACC_COLUMNS = (("acc", "standard"), ("robust_acc", "robust (PGD)"))


def plot_scan_1d(path: str | Path, rows: Rows, x: str = "alpha", *, title: str = "") -> Path:
    """Loss and error along a 1D scan; robust columns drawn too when present."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    xs = [r[x] for r in rows]
    for column, label in _LOSS_COLUMNS:
        if column in rows[0]:
            ax_loss.plot(xs, [r[column] for r in rows], marker=".", label=label)
    for column, label in _ACC_COLUMNS:
        if column in rows[0]:
            ax_err.plot(xs, [100 * (1 - r[column]) for r in rows], marker=".", label=label)
    ax_loss.set(xlabel=x, ylabel="loss", title="loss")
    ax_err.set(xlabel=x, ylabel="error (%)", title="error")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _grid(rows: Rows, x: str, y: str, column: str) -> tuple[np.ndarray, list[float], list[float]]:
    """``values[iy, ix]`` of ``column`` over the sorted x and y coordinates of a grid table."""
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    values = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        values[ys.index(r[y]), xs.index(r[x])] = r[column]
    return values, xs, ys


def plot_scan_2d(
    path: str | Path,
    rows: Rows,
    x: str = "alpha",
    y: str = "beta",
    *,
    marks: Mapping[str, tuple[float, float]] | None = None,
    title: str = "",
) -> Path:
    """Contour maps of the loss (and the robust loss when present) over a 2D grid."""
    columns = [c for c, _ in _LOSS_COLUMNS if c in rows[0]]
    fig = Figure(figsize=(5 * len(columns), 4.2), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns, strict=True):
        values, xs, ys = _grid(rows, x, y, column)
        levels = np.quantile(values[np.isfinite(values)], np.linspace(0, 1, 16))
        levels = np.unique(levels)
        filled = ax.contourf(xs, ys, values, levels=levels if len(levels) > 1 else 10)
        ax.contour(xs, ys, values, levels=filled.levels, colors="k", linewidths=0.3)
        fig.colorbar(filled, ax=ax)
        for label, (mx, my) in (marks or {}).items():
            ax.plot([mx], [my], "wo", markersize=5)
            ax.annotate(label, (mx, my), color="white", textcoords="offset points", xytext=(4, 4))
        ax.set(xlabel=x, ylabel=y, title=column.replace("_", " "))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_density(
    path: str | Path,
    grid: Sequence[float],
    density: Sequence[float],
    top: Sequence[float] = (),
    *,
    title: str = "weight-Hessian spectral density (SLQ)",
) -> Path:
    """The smoothed spectral density on a log scale, the top eigenvalues as vertical lines."""
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.add_subplot()
    dens = np.maximum(np.asarray(density, dtype=float), 1e-12)
    ax.semilogy(grid, dens)
    for i, value in enumerate(top):
        ax.axvline(value, color="tab:red", alpha=0.5, lw=0.8, label="top-k" if i == 0 else None)
    ax.set(xlabel="eigenvalue", ylabel="density", title=title)
    ax.set_ylim(bottom=max(dens.min(), 1e-8))
    if len(top):
        ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_histogram(
    path: str | Path, values: Sequence[float], *, xlabel: str, title: str = ""
) -> Path:
    """A histogram (e.g. of per-image input-Hessian λ_max), mean marked."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    arr = np.asarray(values, dtype=float)
    ax.hist(arr, bins=min(50, max(5, arr.size // 5)))
    ax.axvline(arr.mean(), color="tab:red", label=f"mean {arr.mean():.3g}")
    ax.set(xlabel=xlabel, ylabel="images", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_robust_path(path: str | Path, rows: Rows, *, pcc: float | None = None) -> Path:
    """Zhao et al. (2020), Fig. 5 style: standard and robust loss, their errors, and the
    input-Hessian λ_max against t; the Pearson correlation of robust loss and λ_max in the title."""
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_loss, ax_err, ax_eig = fig.subplots(1, 3)
    ts = [r["t"] for r in rows]
    for column, label in (("test_loss", "standard"), ("robust_loss", "robust (PGD)")):
        if column in rows[0]:
            ax_loss.plot(ts, [r[column] for r in rows], marker=".", label=label)
    for column, label in (("test_acc", "standard"), ("robust_acc", "robust (PGD)")):
        if column in rows[0]:
            ax_err.plot(ts, [100 * (1 - r[column]) for r in rows], marker=".", label=label)
    if "input_hessian_lmax" in rows[0]:
        ax_eig.plot(ts, [r["input_hessian_lmax"] for r in rows], marker=".", color="tab:green")
    ax_loss.set(xlabel="t", ylabel="loss", title="test loss")
    ax_err.set(xlabel="t", ylabel="error (%)", title="test error")
    ax_eig.set(xlabel="t", ylabel="λ_max", title="input-Hessian λ_max (mean)")
    for ax in (ax_loss, ax_err, ax_eig):
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_err.legend()
    if pcc is not None:
        fig.suptitle(f"robust loss vs input-Hessian λ_max along the path: PCC = {pcc:.3f}")
    return save_figure(fig, path)


def attack_success_rate(row: Mapping[str, float]) -> float:
    """Evasion attack success at a point: the share of correctly classified test images the
    attack turns wrong, 1 − robust_acc / test_acc (PGD starts from correct images only)."""
    return 1.0 - row["robust_acc"] / row["test_acc"] if row["test_acc"] > 0 else 0.0


def plot_robust_barrier(
    path: str | Path, rows_by_seed: Mapping[str, Rows], *, pcc: Mapping[str, float]
) -> Path:
    """Zhao et al. (2020), Fig. 4 laid out for several seeds: loss, error, attack success rate
    and input-Hessian λ_max against t; standard (solid) and robust (dashed) lines share a colour
    per seed; each seed's PCC of robust loss and λ_max in the title."""
    fig = Figure(figsize=(16, 3.8), layout="constrained")
    ax_loss, ax_err, ax_asr, ax_eig = fig.subplots(1, 4)
    for i, (seed, rows) in enumerate(rows_by_seed.items()):
        colour = f"C{i}"
        ts = [r["t"] for r in rows]
        ax_loss.plot(ts, [r["test_loss"] for r in rows], "-", color=colour, marker=".")
        ax_loss.plot(ts, [r["robust_loss"] for r in rows], "--", color=colour, marker=".")
        ax_err.plot(ts, [100 * (1 - r["test_acc"]) for r in rows], "-", color=colour, marker=".")
        ax_err.plot(ts, [100 * (1 - r["robust_acc"]) for r in rows], "--", color=colour, marker=".")
        ax_asr.plot(
            ts, [100 * attack_success_rate(r) for r in rows], color=colour, marker=".", label=seed
        )
        ax_eig.plot(ts, [r["input_hessian_lmax"] for r in rows], color=colour, marker=".")
    ax_loss.set(xlabel="t", ylabel="loss", title="test loss (solid) / robust loss (dashed)")
    ax_err.set(xlabel="t", ylabel="error (%)", title="standard (solid) / robust (dashed) error")
    ax_asr.set(xlabel="t", ylabel="attack success (%)", title="PGD attack success rate")
    ax_eig.set(xlabel="t", ylabel="λ_max", title="input-Hessian λ_max (mean)")
    for ax in (ax_loss, ax_err, ax_asr, ax_eig):
        ax.grid(alpha=0.3)
    ax_asr.legend(title="seed")
    shown = ", ".join(f"{seed} {value:.3f}" for seed, value in pcc.items())
    fig.suptitle(
        f"regular (t = 0) to adversarially trained (t = 1): PCC(robust loss, λ_max) {shown}"
    )
    return save_figure(fig, path)


def plot_robust_overfitting(
    path: str | Path, histories: Mapping[str, Rows], *, title: str = ""
) -> Path:
    """Wu et al. (2020), Fig. 1 style: test robust accuracy (left) and clean accuracy (right)
    per epoch; one line per run (label ``"<method> seed <s>"``; a method keeps its colour).

    Where the rows carry ``train_acc`` (PGD-AT's accuracy on its own adversarial training
    batches) it is drawn dashed on the left: the widening distance between the dashed and the
    solid line is the memorisation that robust overfitting is.
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_rob, ax_clean = fig.subplots(1, 2)
    methods = list(dict.fromkeys(label.split(" seed")[0] for label in histories))
    for label, rows in histories.items():
        colour = f"C{methods.index(label.split(' seed')[0])}"
        epochs = [r["epoch"] for r in rows]
        ax_rob.plot(epochs, [100 * r["robust_acc"] for r in rows], color=colour, alpha=0.8)
        if all("train_acc" in r for r in rows):
            train = [100 * r["train_acc"] for r in rows]
            ax_rob.plot(epochs, train, color=colour, alpha=0.5, linestyle="--", linewidth=1)
        ax_clean.plot(epochs, [100 * r["test_acc"] for r in rows], color=colour, alpha=0.8)
    for i, method in enumerate(methods):
        ax_rob.plot([], [], color=f"C{i}", label=method)
    if any(all("train_acc" in r for r in rows) for rows in histories.values()):
        ax_rob.plot([], [], color="grey", linestyle="--", label="training batches (PGD)")
    ax_rob.set(
        xlabel="epoch", ylabel="robust accuracy (%)", title="robust accuracy (PGD): test, training"
    )
    ax_clean.set(xlabel="epoch", ylabel="accuracy (%)", title="test clean accuracy")
    for ax in (ax_rob, ax_clean):
        ax.grid(alpha=0.3)
    ax_rob.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_top_eigenvalues(
    path: str | Path, values: Sequence[float], *, trace: float | None = None
) -> Path:
    """The top-k weight-Hessian eigenvalues by rank (and the trace, for scale, in the title)."""
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ranks = np.arange(1, len(values) + 1)
    ax.stem(ranks, values)
    title = "top weight-Hessian eigenvalues"
    if trace is not None:
        title += f" (trace ≈ {trace:.4g})"
    ax.set(xlabel="rank", ylabel="eigenvalue", title=title, xticks=ranks)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
