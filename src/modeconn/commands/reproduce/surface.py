"""``modeconn reproduce surface``: Bezier surfaces join four models (Ren et al., ICLR 2025).

The claims: a low-loss Bezier surface joins several trained models; points on it improve on
averaging the models' weights and on ensembling their outputs; and with carefully chosen control
points a surface is low-loss even without training it ("no optimisation").

Per seed ``s``, every step a run directory below ``out/seed_s`` (reused when finished, resumed
when interrupted):

1. ``corner_a`` … ``corner_d``: four models trained from seeds 4s … 4s+3 (initialisation and
   batch order) on one data split drawn with seed s, which holds out ``val_size`` training
   images that no model, curve or surface ever trains on;
2. with ``align`` (the default), ``aligned_b`` … ``aligned_d``: B, C, D permuted onto A by
   weight matching (``modeconn align``). Independently trained models sit in basins that differ
   by a permutation of their hidden units; aligned, their surface has far less to bridge;
3. ``curve_ab``, ``curve_cd``, ``curve_ac``, ``curve_bd``: 3-bend Bezier curves between adjacent
   corners;
4. ``no_opt``: the surface assembled from those curves without training it
   (:func:`~modeconn.connectivity.surface_analysis.surface_from_curves`, centre
   ``no_opt_centre``),
   evaluated on the grid (its checkpoint in ``no_opt_surface``);
5. ``surface``: a Bezier surface of ``num_bends`` control points per side trained through the
   four corners and evaluated on the grid.

Every grid point has its BatchNorm statistics recomputed from training data; the best point and
the best corner are those of lowest loss on the held-out training images, never on the test set.
The claim holds for a seed when the largest test loss on the trained surface is within
``LOSS_RATIO_MAX`` (25%) of the worst corner's; it holds when it holds for every seed. Reported
beside it: best point against best corner, the surface's grid ensemble against the corners'
ensemble, the weight average of the corners, and the same figures for the no-optimisation surface.

The steps and their checkpoints are in :mod:`modeconn.commands.reproduce.surface_steps`; this
module holds the settings, the claim's figures, the tables and figure, and the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeconn.commands.reproduce.aggregate import (
    claim_head,
    numeric_row,
    per_seed_figures,
    seeds_holding,
    write_tables,
)
from modeconn.commands.reproduce.claim import Claim, StepOptions
from modeconn.commands.reproduce.surface_steps import corner_average_figures, run_surface_steps
from modeconn.commands.steps import check_experiment
from modeconn.connectivity.surfaces import CENTRES
from modeconn.data.prepare import DataConfig
from modeconn.errors import InvalidArgument
from modeconn.io import read_table
from modeconn.report.plots import plot_surface_comparison
from modeconn.rundir import RunDir

#: The claim: the trained surface's largest test loss is at most this much above the worst
#: corner's (0.25: within 25%).
LOSS_RATIO_MAX = 0.25


@dataclass
class SurfaceSettings:
    """What the surface experiment trains and measures.

    The defaults are the full Fashion-MNIST setting: ``lenet`` corners on a 10,000-image
    stratified training subset of which ``val_size`` images are held out (for choosing points),
    test figures on a stratified ``test_limit`` subset, and BatchNorm statistics and the "train"
    columns at each grid point from a ``train_eval_limit`` stratified subset of the training
    split (every grid point costs one pass over it). :meth:`quick` is the digits setting the
    tests run. ``num_bends`` is the trained surface's control grid per side (3: degree 2); the
    no-optimisation surface is always degree (2, 2), from 3-bend curves.
    """

    dataset: str = "fashion-mnist"
    model: str = "lenet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train_limit: int | None = 10000
    val_size: int = 1000
    test_limit: int | None = 2000
    train_eval_limit: int | None = 2000
    epochs: int = 8
    lr: float = 0.05
    align: bool = True
    curve_epochs: int = 6
    surface_epochs: int = 10
    surface_lr: float = 0.05
    num_bends: tuple[int, int] = (3, 3)
    no_opt_centre: str = "coons"
    grid: int = 9
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def quick(cls) -> SurfaceSettings:
        """A small digits setting (well under a minute on one CPU thread) for tests."""
        return cls(
            dataset="digits",
            model="mlp",
            model_kwargs={"hidden": [64]},
            train_limit=None,
            val_size=200,
            test_limit=None,
            train_eval_limit=None,
            epochs=10,
            curve_epochs=6,
            surface_epochs=8,
            grid=5,
        )

    def validate(self) -> SurfaceSettings:
        check_experiment(self.model, self.model_kwargs, self.seeds)
        for name in ("epochs", "curve_epochs", "surface_epochs", "val_size"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"{name} must be at least 1")
        if len(self.num_bends) != 2 or min(self.num_bends) < 3:
            raise InvalidArgument(
                "num_bends",
                f"num_bends counts the control points per side, corners included: at least 3 "
                f"(degree 2), got {self.num_bends}",
            )
        if self.no_opt_centre not in CENTRES:
            raise InvalidArgument(
                "no_opt_centre",
                f"unknown centre '{self.no_opt_centre}' (use {', '.join(CENTRES)})",
            )
        if self.grid < 3 or self.grid % 2 == 0:
            raise InvalidArgument(
                "grid", f"grid must be odd and at least 3 (to hold the centre), got {self.grid}"
            )
        return self

    def data(self, seed: int, data_dir: str | None) -> DataConfig:
        """One data split for every step of a seed, so the held-out images stay held out."""
        return DataConfig(
            dataset=self.dataset,
            data_dir=data_dir,
            val_size=self.val_size,
            train_limit=self.train_limit,
            test_limit=self.test_limit,
            seed=seed,
        )


def surface_claim_figures(
    trained: dict[str, float], no_opt: dict[str, float], average: dict[str, float]
) -> dict[str, Any]:
    """The claim's figures for one seed from the two grid summaries and the weight average.

    ``loss_ratio`` is the trained surface's largest test loss over the worst corner's; the claim
    holds when it is at most 1 + :data:`LOSS_RATIO_MAX`. Differences are surface minus reference
    (accuracy in fractions; positive: the surface wins).

    >>> grid = {"max_test_loss": 0.5, "corner_max_test_loss": 0.4, "best_test_acc": 0.9,
    ...         "best_corner_test_acc": 0.88, "ensemble_grid_acc": 0.91,
    ...         "ensemble_corners_acc": 0.92, "best_test_loss": 0.3, "ensemble_grid_loss": 0.25,
    ...         "ensemble_corners_loss": 0.24, "best_corner_test_loss": 0.35}
    >>> f = surface_claim_figures(grid, grid, {"test_acc": 0.5, "test_loss": 1.5})
    >>> f["loss_ratio"], f["holds"], round(f["best_vs_best_corner_acc"], 6)
    (1.25, True, 0.02)
    >>> f["ensemble_vs_corners_ensemble"]
    'corners by 1.00 points'
    """
    figures: dict[str, Any] = {}
    for prefix, grid in (("", trained), ("no_opt_", no_opt)):
        ratio = grid["max_test_loss"] / grid["corner_max_test_loss"]
        figures[f"{prefix}max_test_loss"] = grid["max_test_loss"]
        figures[f"{prefix}loss_ratio"] = ratio
        figures[f"{prefix}holds"] = ratio <= 1.0 + LOSS_RATIO_MAX + 1e-9
        figures[f"{prefix}best_test_acc"] = grid["best_test_acc"]
        figures[f"{prefix}best_test_loss"] = grid["best_test_loss"]
        figures[f"{prefix}ensemble_acc"] = grid["ensemble_grid_acc"]
        figures[f"{prefix}ensemble_loss"] = grid["ensemble_grid_loss"]
        comparisons = (
            ("best_vs_best_corner", grid["best_test_acc"], trained["best_corner_test_acc"]),
            ("best_vs_average", grid["best_test_acc"], average["test_acc"]),
            (
                "ensemble_vs_corners_ensemble",
                grid["ensemble_grid_acc"],
                trained["ensemble_corners_acc"],
            ),
        )
        for name, ours, theirs in comparisons:
            figures[f"{prefix}{name}_acc"] = ours - theirs
            figures[f"{prefix}{name}"] = _winner(ours - theirs)
    figures.update(
        corner_max_test_loss=trained["corner_max_test_loss"],
        best_corner_test_acc=trained["best_corner_test_acc"],
        best_corner_test_loss=trained["best_corner_test_loss"],
        corners_ensemble_acc=trained["ensemble_corners_acc"],
        corners_ensemble_loss=trained["ensemble_corners_loss"],
        average_test_acc=average["test_acc"],
        average_test_loss=average["test_loss"],
    )
    return figures


def _winner(difference: float) -> str:
    """Who wins a comparison of accuracies, and by how many percentage points."""
    if abs(difference) < 5e-5:
        return "tie"
    return f"{'surface' if difference > 0 else 'corners'} by {100 * abs(difference):.2f} points"


def surface_table_rows(seed: int, figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The Markdown table's rows for one seed: one model (or ensemble) per row."""

    def row(what: str, acc: float, loss: float) -> dict[str, Any]:
        return {"seed": seed, "model": what, "test_acc": acc, "test_loss": loss}

    f = figures
    rows = [
        row("best corner (held-out choice)", f["best_corner_test_acc"], f["best_corner_test_loss"]),
        row("corners' ensemble", f["corners_ensemble_acc"], f["corners_ensemble_loss"]),
        row("weight average of the corners", f["average_test_acc"], f["average_test_loss"]),
    ]
    for prefix, label in (("", "trained surface"), ("no_opt_", "no-optimisation surface")):
        rows += [
            row(f"{label}: best point", f[f"{prefix}best_test_acc"], f[f"{prefix}best_test_loss"]),
            row(f"{label}: grid ensemble", f[f"{prefix}ensemble_acc"], f[f"{prefix}ensemble_loss"]),
        ]
    return rows


@dataclass
class SurfaceSeed:
    """One seed's result: the claim's figures (:func:`surface_claim_figures`, with the
    alignment barriers when aligning), and per surface (``trained``, ``no_opt``) its grid table
    and its best point (u, v)."""

    seed: int
    figures: dict[str, Any]
    grids: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    best: dict[str, tuple[float, float]] = field(default_factory=dict)


def run_seed(seed: int, base: Path, settings: SurfaceSettings, options: StepOptions) -> SurfaceSeed:
    """One seed's steps (module doc), the corners' weight average, and the seed's figures."""
    steps = run_surface_steps(base, seed, settings, options)
    average = corner_average_figures(
        steps.corners,
        settings.data(seed, options.data_dir),
        train_eval_limit=settings.train_eval_limit,
        device=options.device,
    )
    figures = surface_claim_figures(steps.trained, steps.no_opt, average)
    for name, aligned in steps.aligned.items():
        figures[f"barrier_unaligned_{name.lower()}"] = aligned["barrier_unaligned"]
        figures[f"barrier_aligned_{name.lower()}"] = aligned["barrier_aligned"]
    grids = {
        "trained": read_table(base / "surface" / "grid.csv"),
        "no_opt": read_table(base / "no_opt" / "grid.csv"),
    }
    best = {
        "trained": (steps.trained["best_u"], steps.trained["best_v"]),
        "no_opt": (steps.no_opt["best_u"], steps.no_opt["best_v"]),
    }
    return SurfaceSeed(seed, figures, grids, best)


def _verdict_rows(results: Sequence[SurfaceSeed]) -> list[dict[str, Any]]:
    """The second Markdown table: each seed's verdicts and comparisons in words."""
    return [
        {
            "seed": r.seed,
            "loss_ratio": r.figures["loss_ratio"],
            "holds": r.figures["holds"],
            "no_opt_loss_ratio": r.figures["no_opt_loss_ratio"],
            "no_opt_holds": r.figures["no_opt_holds"],
            "best point vs best corner": r.figures["best_vs_best_corner"],
            "best point vs weight average": r.figures["best_vs_average"],
            "surface ensemble vs corners' ensemble": r.figures["ensemble_vs_corners_ensemble"],
        }
        for r in results
    ]


def write_outputs(run: RunDir, settings: SurfaceSettings, results: Sequence[SurfaceSeed]) -> None:
    """``table.csv`` (every figure of every seed), ``table.md`` (the models compared, then the
    verdicts) and ``surface_claim.png`` (both surfaces of the first seed)."""
    rows = [{"seed": r.seed, **r.figures} for r in results]
    models = [row for r in results for row in surface_table_rows(r.seed, r.figures)]
    write_tables(run, [numeric_row(r) for r in rows], models, _verdict_rows(results))
    first = results[0]
    degrees = f"{settings.num_bends[0] - 1}×{settings.num_bends[1] - 1}"
    plot_surface_comparison(
        run.file("surface_claim.png"),
        {
            f"trained surface (degree {degrees})": first.grids["trained"],
            f"no optimisation (from 4 curves, {settings.no_opt_centre} centre)": (
                first.grids["no_opt"]
            ),
        },
        best=first.best,
        title=f"{settings.dataset} / {settings.model}, seed {first.seed}"
        + (", corners aligned to A" if settings.align else ", corners not aligned"),
    )


CLAIM_TEXT = (
    "a Bezier surface trained through four models is low-loss: its largest test loss on "
    f"the grid is within {LOSS_RATIO_MAX:.0%} of the worst corner's (Ren et al., "
    "ICLR 2025); its best point (chosen on held-out training data) and its ensemble are "
    "compared with the best corner, the weight average and the corners' ensemble"
)


def verdict(settings: SurfaceSettings, results: Sequence[SurfaceSeed]) -> dict[str, Any]:
    """The summary: the claim holds when it holds for every seed; every seed's figures."""
    flags = [r.figures["holds"] for r in results]
    return {
        **claim_head("surface", CLAIM_TEXT, all(flags)),
        "seeds_holding": seeds_holding(flags),
        "aligned": settings.align,
        **per_seed_figures([{"seed": r.seed, **r.figures} for r in results]),
    }


SURFACE = Claim(
    full=SurfaceSettings,
    quick=SurfaceSettings.quick,
    run_seed=run_seed,
    write_outputs=write_outputs,
    verdict=verdict,
)
