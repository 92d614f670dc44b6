"""Plot helpers on matplotlib's Agg canvas (no display, no global pyplot state).

Figures are built with :class:`matplotlib.figure.Figure` directly, so plotting is safe in worker
processes and tests, and each file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from modeconn.io import atomic_write

Rows = Sequence[Mapping[str, float]]


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Render ``fig`` to ``path`` (format from the suffix) atomically."""
    FigureCanvasAgg(fig)
    p = Path(path)
    atomic_write(p, lambda tmp: fig.savefig(tmp, dpi=dpi, format=p.suffix.lstrip(".") or "png"))
    return p


def line_plot(
    path: str | Path,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "t",
    ylabel: str = "",
    title: str | None = None,
) -> Path:
    """One axis with a line per entry of ``series`` (label → values at ``x``)."""
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for label, values in series.items():
        ax.plot(x, values, marker=".", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_metrics_against_t(
    path: str | Path,
    tables: Mapping[str, Rows],
    columns: Sequence[str],
    *,
    title: str | None = None,
) -> Path:
    """A panel per column of path tables; one line per table (label → rows with a ``t`` key)."""
    fig = Figure(figsize=(4.2 * len(columns), 3.6), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns, strict=True):
        for (label, rows), style in zip(tables.items(), ("-", "--", ":", "-."), strict=False):
            ax.plot(
                [r["t"] for r in rows], [r[column] for r in rows], style, marker=".", label=label
            )
        ax.set_xlabel("t")
        ax.set_title(column)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_path(
    path: str | Path, rows: Rows, segment_rows: Rows | None = None, *, title: str | None = None
) -> Path:
    """Loss and error (1 − accuracy) against t, train and test, for the curve (solid) and the
    straight segment (dashed)."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    tables = {"curve": (rows, "-")}
    if segment_rows:
        tables["segment"] = (segment_rows, "--")
    for name, (table, style) in tables.items():
        ts = [r["t"] for r in table]
        for split, color in (("train", "tab:blue"), ("test", "tab:orange")):
            label = f"{name} {split}"
            ax_loss.plot(ts, [r[f"{split}_loss"] for r in table], style, color=color, label=label)
            errors = [100 * (1 - r[f"{split}_acc"]) for r in table]
            ax_err.plot(ts, errors, style, color=color, label=label)
    ax_loss.set(xlabel="t", ylabel="loss", title="loss along the path")
    ax_err.set(xlabel="t", ylabel="error (%)", title="error along the path")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def heatmap(
    ax,
    values: np.ndarray,
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    title: str = "",
    xlabel: str = "u",
    ylabel: str = "v",
    marks: Mapping[str, tuple[float, float]] | None = None,
):
    """Draw ``values[iy, ix]`` measured at the grid points ``xs`` × ``ys`` on ``ax``.

    Each cell is centred on its grid point (no interpolation, so nothing is shown that was not
    measured); ``marks`` label points such as the corners of a surface and the best point.
    """
    dx = (max(xs) - min(xs)) / max(len(xs) - 1, 1) / 2
    dy = (max(ys) - min(ys)) / max(len(ys) - 1, 1) / 2
    mesh = ax.imshow(
        values,
        origin="lower",
        extent=(min(xs) - dx, max(xs) + dx, min(ys) - dy, max(ys) + dy),
        aspect="auto",
        cmap="viridis",
        interpolation="nearest",
    )
    ax.figure.colorbar(mesh, ax=ax)
    mid_x, mid_y = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    for label, (x, y) in (marks or {}).items():
        best = label == "best"
        ax.plot([x], [y], "w*" if best else "wo", markersize=11 if best else 5, mec="black")
        offset = (-14 if x > mid_x else 5, -12 if y > mid_y else 5)
        if best:  # beside the star, clear of a corner's label
            offset = (-40 if x > mid_x else 14, offset[1])
        ax.annotate(label, (x, y), color="white", textcoords="offset points", xytext=offset)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return mesh


def grid_values(rows: Rows, column: str) -> tuple[np.ndarray, list[float], list[float]]:
    """Reshape a (u, v) table into ``values[iv, iu]`` with the sorted u and v coordinates."""
    us = sorted({r["u"] for r in rows})
    vs = sorted({r["v"] for r in rows})
    values = np.full((len(vs), len(us)), np.nan)
    for r in rows:
        values[vs.index(r["v"]), us.index(r["u"])] = r[column]
    return values, us, vs


def plot_surface(
    path: str | Path,
    rows: Rows,
    *,
    best: tuple[float, float] | None = None,
    corners: Sequence[str] = ("A", "B", "C", "D"),
) -> Path:
    """Heatmaps of train/test loss and error over a surface's (u, v) grid, corners labelled."""
    marks = dict(zip(corners, [(0, 0), (1, 0), (0, 1), (1, 1)], strict=True))
    if best is not None:
        marks["best"] = best
    panels = [
        ("train_loss", "train loss"),
        ("test_loss", "test loss"),
        ("train_acc", "train error (%)"),
        ("test_acc", "test error (%)"),
    ]
    fig = Figure(figsize=(10, 8), layout="constrained")
    axes = fig.subplots(2, 2).flatten()
    for ax, (column, title) in zip(axes, panels, strict=True):
        values, us, vs = grid_values(rows, column)
        if column.endswith("acc"):
            values = 100 * (1 - values)
        heatmap(ax, values, us, vs, title=title, marks=marks)
    return save_figure(fig, path)


def plot_surface_comparison(
    path: str | Path,
    surfaces: Mapping[str, Rows],
    *,
    best: Mapping[str, tuple[float, float]] | None = None,
    title: str = "",
    corners: Sequence[str] = ("A", "B", "C", "D"),
) -> Path:
    """Surfaces side by side (one column each, e.g. trained and not): test loss (top) and test
    error (bottom) over the (u, v) grid, corners and each surface's best point marked.

    ``best`` gives the best points in the order of ``surfaces``. The colour scales are shared
    along a row, so the surfaces compare at a glance.
    """
    labels = list(surfaces)
    best_points = list((best or {}).values())
    fig = Figure(figsize=(5 * len(labels), 8), layout="constrained")
    axes = fig.subplots(2, len(labels), squeeze=False)
    panels = (("test_loss", "test loss"), ("test_acc", "test error (%)"))
    for row, (column, name) in enumerate(panels):
        grids = [grid_values(surfaces[label], column) for label in labels]
        if column.endswith("acc"):
            grids = [(100 * (1 - values), us, vs) for values, us, vs in grids]
        low = min(float(np.nanmin(g[0])) for g in grids)
        high = max(float(np.nanmax(g[0])) for g in grids)
        for col, (label, (values, us, vs)) in enumerate(zip(labels, grids, strict=True)):
            marks = dict(zip(corners, [(0, 0), (1, 0), (0, 1), (1, 1)], strict=True))
            if col < len(best_points):
                marks["best"] = best_points[col]
            mesh = heatmap(axes[row, col], values, us, vs, title=f"{label}\n{name}", marks=marks)
            mesh.set_clim(low, high)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
