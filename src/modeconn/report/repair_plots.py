"""Figures of a repair run: clean accuracy and attack success along the path, baselines as
horizontal lines, and the bonafide-size sweep."""

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


def plot_repair(
    run_dir: Path,
    rows: Sequence[dict[str, float]],
    candidates: Sequence[Any],
    key: str | None,
    t: float,
    sweep: Sequence[dict[str, float]] = (),
) -> None:
    """Write ``repair_path.png`` (and ``repair_sweep.png`` when a sweep ran)."""
    ts = [r["t"] for r in rows]
    panels = [("test_acc", "clean accuracy (test)")] + ([(key, LABELS[key])] if key else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (col, label) in zip(axes[0], panels, strict=True):
        ax.plot(ts, [r[col] for r in rows], "o-", color="k", ms=3, label="path repair")
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
        for i, cand in enumerate(c for c in candidates[3:] if metric_key in c.metrics):
            ax.axhline(
                cand.metrics[metric_key], ls=":", color=colors[i % len(colors)], label=cand.name
            )
        ax.axvline(t, color="tab:green", lw=1, label=f"chosen t={t:.2f}")
        ax.set_xlabel("t")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("Path repair: the curve trained on bonafide data")
    _save(fig, run_dir / "repair_path.png")
    if sweep:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        ns = [r["bonafide"] for r in sweep]
        ax.plot(ns, [r["clean_acc"] for r in sweep], "o-", label="clean accuracy")
        if key:
            ax.plot(ns, [r[key] for r in sweep], "s-", label=LABELS[key])
        ax.set_xscale("log")
        ax.set_xlabel("bonafide samples")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Repair against the size of the clean data")
        _save(fig, run_dir / "repair_sweep.png")
