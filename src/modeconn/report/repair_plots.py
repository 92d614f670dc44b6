"""Figures of a repair run: clean accuracy and attack success along the path, baselines as
horizontal lines, the bonafide-size sweep and every row's backdoor-connected path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from modeconn.io import atomic_write

LABELS = {"asr": "attack success rate", "injection_success": "injection success"}


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def plot_candidates(path: Path, table: Sequence[Any], key: str | None, chosen: str) -> None:
    """Clean accuracy against the attack's figure for every candidate and baseline — the repair's
    frontier at a glance (up and to the left is better); the chosen model is circled."""
    if not key:
        return
    rows = [c for c in table if "clean_acc" in c.metrics and key in c.metrics]
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(rows):
        x, y = 100 * c.metrics[key], 100 * c.metrics["clean_acc"]
        ax.scatter([x], [y], s=40, color=colors[i % len(colors)], label=c.name, zorder=3)
        if c.name == chosen:
            ax.scatter([x], [y], s=220, facecolors="none", edgecolors="k", lw=1.5, zorder=4)
    ax.set_xlabel(f"{LABELS[key]} (%)")
    ax.set_ylabel("clean accuracy, test (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"Every candidate and baseline; circled: the chosen one ({chosen})", fontsize=9)
    _save(fig, path)


def plot_depth(path: Path, depth: dict[str, Sequence[dict[str, float]]], chosen: str) -> None:
    """The backdoor-connected paths: clean accuracy and ASR against t on the straight line from
    each model (t = 0) back to the tampered one (t = 1), one line per model; the chosen one
    thick. A deep repair keeps the ASR low far along the line, a superficial one does not."""
    panels = (("test_acc", "clean accuracy (test)"), ("asr", LABELS["asr"]))
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (col, label) in zip(axes[0], panels, strict=True):
        for i, (name, rows) in enumerate(depth.items()):
            ax.plot(
                [r["t"] for r in rows],
                [r[col] for r in rows],
                "o-",
                ms=3,
                lw=2.5 if name == chosen else 1.2,
                color=colors[i % len(colors)],
                label=name,
            )
        ax.set_xlabel("t (0: the model, 1: the tampered model)")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][1].axhline(0.5, ls=":", color="0.4", lw=1)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("Backdoor-connected paths: the straight line back to the tampered model")
    _save(fig, path)


def plot_repair(run_dir: Path, result: Any, key: str | None, sweep: Sequence[dict] = ()) -> None:
    """Write ``repair_candidates.png``, ``repair_path.png`` (when a path was trained),
    ``repair_sweep.png`` (when a sweep ran) and ``depth.png`` (when the backdoor-connected paths
    were measured)."""
    plot_candidates(run_dir / "repair_candidates.png", result.table, key, result.chosen.name)
    if result.depth:
        plot_depth(run_dir / "depth.png", result.depth, result.chosen.name)
    rows, t = result.rows, result.t
    others = [*result.references, *result.baselines]
    if rows:
        _plot_path(run_dir / "repair_path.png", rows, others, key, t)
    if sweep:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        ns = [r["bonafide"] for r in sweep]
        ax.plot(ns, [r["clean_acc"] for r in sweep], "o-", label="clean accuracy")
        if key:
            ax.plot(ns, [r[key] for r in sweep], "s-", label=LABELS[key])
        if all("retuning_asr" in r for r in sweep):
            ax.plot(ns, [r["retuning_asr"] for r in sweep], "^--", label="ASR after retuning")
        ax.set_xscale("log")
        ax.set_xlabel("bonafide samples")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Repair against the size of the clean data")
        _save(fig, run_dir / "repair_sweep.png")


def _plot_path(
    path: Path,
    rows: Sequence[dict[str, float]],
    others: Sequence[Any],
    key: str | None,
    t: float,
) -> None:
    ts = [r["t"] for r in rows]
    panels = [("test_acc", "clean accuracy (test)")] + ([(key, LABELS[key])] if key else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (col, label) in zip(axes[0], panels, strict=True):
        ax.plot(ts, [r[col] for r in rows], "o-", color="k", ms=3, label="path")
        if col == "test_acc":
            ax.plot(
                ts,
                [r["bonafide_holdout_acc"] for r in rows],
                "s--",
                color="0.5",
                ms=3,
                label="held-out bonafide",
            )
        metric_key = "clean_acc" if col == "test_acc" else col
        for i, cand in enumerate(c for c in others if metric_key in c.metrics):
            ax.axhline(
                cand.metrics[metric_key], ls=":", color=colors[i % len(colors)], label=cand.name
            )
        ax.axvline(t, color="tab:green", lw=1, label=f"chosen t={t:.2f}")
        ax.set_xlabel("t")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("The repair path: a curve trained on bonafide data")
    _save(fig, path)
