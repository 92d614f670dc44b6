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
   (:func:`~modeconn.connectivity.surfaces.grid_from_curves`, centre ``no_opt_centre``),
   evaluated on the grid (its checkpoint in ``no_opt_surface``);
5. ``surface``: a Bezier surface of ``num_bends`` control points per side trained through the
   four corners and evaluated on the grid.

Every grid point has its BatchNorm statistics recomputed from training data; the best point and
the best corner are those of lowest loss on the held-out training images, never on the test set.
The claim holds for a seed when the largest test loss on the trained surface is within
``LOSS_RATIO_MAX`` (25%) of the worst corner's; it holds when it holds for every seed. Reported
beside it: best point against best corner, the surface's grid ensemble against the corners'
ensemble, the weight average of the corners, and the same figures for the no-optimisation surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modeconn.checkpoints import load_model
from modeconn.commands.align import run_align
from modeconn.commands.connect import run_connect, run_surface, run_surface_eval
from modeconn.commands.steps import check_experiment, run_step
from modeconn.commands.train import run_train
from modeconn.connectivity.checkpoints import endpoint_meta, load_curve, save_surface
from modeconn.connectivity.curves import load_buffers
from modeconn.connectivity.evaluate import PointData, evaluate_point, holdout_split_of
from modeconn.connectivity.surfaces import CENTRES, CORNER_NAMES, EDGES, Surface, grid_from_curves
from modeconn.distributed import resolve_device
from modeconn.errors import InvalidArgument
from modeconn.experiment import DataConfig, prepare_data
from modeconn.io import atomic_write_text, markdown_table, read_json, read_table, write_table
from modeconn.models import build_model
from modeconn.rundir import RunDir
from modeconn.training import TrainConfig

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


def _steps(
    base: Path,
    seed: int,
    settings: SurfaceSettings,
    *,
    data_dir: str | None,
    device: str,
    force: bool,
    progress: bool,
) -> list[Path]:
    """Run one seed's steps (module doc); return the four corners' run directories."""
    data = settings.data(seed, data_dir)
    corners: list[Path] = []
    for k, name in enumerate(CORNER_NAMES):
        path = base / f"corner_{name.lower()}"

        def train(path: Path, resume: bool, model_seed: int = 4 * seed + k) -> dict[str, Any]:
            return run_train(
                path,
                model=settings.model,
                model_kwargs=settings.model_kwargs,
                data=data,
                config=TrainConfig(
                    epochs=settings.epochs, batch_size=128, lr=settings.lr, seed=model_seed
                ),
                data_seed=seed,
                device=device,
                force=not resume,
                resume=resume,
                progress=progress,
            )

        run_step(path, force, train)
        corners.append(path)
    if settings.align:
        for k in range(1, 4):
            path = base / f"aligned_{CORNER_NAMES[k].lower()}"

            def align(path: Path, resume: bool, other: Path = corners[k]) -> dict[str, Any]:
                return run_align(
                    corners[0],
                    other,
                    path,
                    method="weight",
                    data=data,
                    points=5,
                    seed=seed,
                    device=device,
                    force=True,
                    progress=progress,
                )

            run_step(path, force, align)
            corners[k] = path
    by_name = dict(zip(CORNER_NAMES, corners, strict=True))
    for first, second in EDGES:

        def connect(path: Path, resume: bool, a=by_name[first], b=by_name[second]):
            return run_connect(
                a,
                b,
                path,
                data=data,
                config=_family_config(settings.curve_epochs, settings.surface_lr, seed),
                num_bends=3,
                device=device,
                force=not resume,
                resume=resume,
                progress=progress,
            )

        run_step(base / f"curve_{(first + second).lower()}", force, connect)

    def no_opt(path: Path, resume: bool) -> dict[str, Any]:
        checkpoint = base / "no_opt_surface"
        save_no_opt_surface(checkpoint, corners, base, settings.no_opt_centre, data)
        return run_surface_eval(
            checkpoint,
            path,
            grid=settings.grid,
            data=data,
            train_eval_limit=settings.train_eval_limit,
            device=device,
            force=True,
            progress=progress,
        )

    run_step(base / "no_opt", force, no_opt)

    def surface(path: Path, resume: bool) -> dict[str, Any]:
        return run_surface(
            corners,
            path,
            data=data,
            config=_family_config(settings.surface_epochs, settings.surface_lr, seed),
            num_bends=settings.num_bends,
            grid=settings.grid,
            train_eval_limit=settings.train_eval_limit,
            device=device,
            force=not resume,
            resume=resume,
            progress=progress,
        )

    run_step(base / "surface", force, surface)
    return corners


def _family_config(epochs: int, lr: float, seed: int) -> TrainConfig:
    """The reference curve schedule (constant, linear decay, 1%), SGD with momentum."""
    return TrainConfig(
        epochs=epochs,
        batch_size=128,
        lr=lr,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="mc",
        seed=seed,
    )


def save_no_opt_surface(
    path: Path, corners: list[Path], base: Path, centre: str, data: DataConfig
) -> Path:
    """Assemble the no-optimisation surface from the corner models and the four edge curves
    below ``base`` (``curve_ab`` …) and save it as a surface checkpoint at ``path``."""
    ckpts = [load_model(p) for p in corners]
    params = {name for name, _ in ckpts[0].model.named_parameters()}
    states = [{k: v for k, v in c.model.state_dict().items() if k in params} for c in ckpts]
    edge_points = []
    for first, second in EDGES:
        curve, _, _ = load_curve(base / f"curve_{(first + second).lower()}")
        edge_points.append(curve.control_points()[1])
    model = build_model(ckpts[0].spec)
    load_buffers(model, ckpts[0].model.state_dict())
    surface = Surface(model, grid_from_curves(states, edge_points, centre), degrees=(2, 2))
    meta = {
        **endpoint_meta(ckpts),
        "data": data.to_dict(),
        "train_split": "train",
        "construction": {"from": "curves", "centre": centre},
    }
    return save_surface(path, surface, ckpts[0].spec, data.dataset, meta)


def weight_average_figures(
    corners: list[Path], data: DataConfig, *, train_eval_limit: int | None, device: str
) -> dict[str, float]:
    """Test loss/accuracy of the plain mean of the corners' weights (BatchNorm recomputed from
    the training data), the "averaging" a surface point should beat."""
    dev = resolve_device(device)
    ckpts = [load_model(p) for p in corners]
    states = [c.model.state_dict() for c in ckpts]
    bilinear = Surface.from_corners(build_model(ckpts[0].spec), states, (2, 2)).to(dev)
    prepared = prepare_data(data)
    point_data = PointData(
        prepared,
        "train",
        dev,
        own_limit=train_eval_limit,
        holdout_split=holdout_split_of(prepared, "train"),
    )
    with torch.no_grad():
        average = bilinear.model_at(0.5, 0.5, point_data.own, dev)
    row, _ = evaluate_point(average, point_data)
    return {"test_loss": row["test_loss"], "test_acc": row["test_acc"]}


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


def run_surface_claim(
    run: RunDir,
    settings: SurfaceSettings,
    *,
    data_dir: str | None,
    device: str,
    force: bool,
    progress: bool,
) -> dict[str, Any]:
    """The ``surface`` experiment (module doc): steps, table, figure and summary."""
    from modeconn.report.plots import plot_surface_comparison

    out = run.path
    per_seed: list[dict[str, Any]] = []
    md_rows: list[dict[str, Any]] = []
    for seed in settings.seeds:
        base = out / f"seed_{seed}"
        corners = _steps(
            base, seed, settings, data_dir=data_dir, device=device, force=force, progress=progress
        )
        average = weight_average_figures(
            corners,
            settings.data(seed, data_dir),
            train_eval_limit=settings.train_eval_limit,
            device=device,
        )
        figures = surface_claim_figures(
            read_json(base / "surface" / "summary.json"),
            read_json(base / "no_opt" / "summary.json"),
            average,
        )
        if settings.align:
            for name in CORNER_NAMES[1:]:
                aligned = read_json(base / f"aligned_{name.lower()}" / "summary.json")
                figures[f"barrier_unaligned_{name.lower()}"] = aligned["barrier_unaligned"]
                figures[f"barrier_aligned_{name.lower()}"] = aligned["barrier_aligned"]
        per_seed.append({"seed": seed, **figures})
        md_rows += surface_table_rows(seed, figures)
        if seed == settings.seeds[0]:
            plot_surface_comparison(
                run.file("surface_claim.png"),
                {
                    f"trained surface (degree {settings.num_bends[0] - 1}×"
                    f"{settings.num_bends[1] - 1})": read_table(base / "surface" / "grid.csv"),
                    f"no optimisation (from 4 curves, {settings.no_opt_centre} centre)": (
                        read_table(base / "no_opt" / "grid.csv")
                    ),
                },
                best={
                    "trained": _best_uv(base / "surface"),
                    "no_opt": _best_uv(base / "no_opt"),
                },
                title=f"{settings.dataset} / {settings.model}, seed {seed}"
                + (", corners aligned to A" if settings.align else ", corners not aligned"),
            )
    numeric = [
        {
            k: (float(v) if isinstance(v, bool) else v)
            for k, v in r.items()
            if not isinstance(v, str)
        }
        for r in per_seed
    ]
    write_table(run.file("table.csv"), numeric)
    verdicts = [
        {
            "seed": r["seed"],
            "loss_ratio": r["loss_ratio"],
            "holds": r["holds"],
            "no_opt_loss_ratio": r["no_opt_loss_ratio"],
            "no_opt_holds": r["no_opt_holds"],
            "best point vs best corner": r["best_vs_best_corner"],
            "best point vs weight average": r["best_vs_average"],
            "surface ensemble vs corners' ensemble": r["ensemble_vs_corners_ensemble"],
        }
        for r in per_seed
    ]
    atomic_write_text(
        run.file("table.md"), markdown_table(md_rows) + "\n\n" + markdown_table(verdicts) + "\n"
    )
    held = sum(r["holds"] for r in per_seed)
    summary: dict[str, Any] = {
        "experiment": "surface",
        "claim": (
            "a Bezier surface trained through four models is low-loss: its largest test loss on "
            f"the grid is within {LOSS_RATIO_MAX:.0%} of the worst corner's (Ren et al., "
            "ICLR 2025); its best point (chosen on held-out training data) and its ensemble are "
            "compared with the best corner, the weight average and the corners' ensemble"
        ),
        "holds": held == len(per_seed),
        "seeds_holding": f"{held}/{len(per_seed)}",
        "aligned": settings.align,
    }
    for r in per_seed:
        for key, value in r.items():
            if key != "seed":
                summary[f"seed{r['seed']}_{key}"] = value
    return summary


def _best_uv(path: Path) -> tuple[float, float]:
    summary = read_json(path / "summary.json")
    return (summary["best_u"], summary["best_v"])
