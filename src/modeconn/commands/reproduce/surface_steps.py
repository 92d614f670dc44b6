"""The run directories of one seed of ``modeconn reproduce surface`` (see
:mod:`modeconn.commands.reproduce.surface`), and the checkpoints they read and write.

Every step is a run directory below ``out/seed_<s>``, reused when finished and resumed when
interrupted: the corners, the aligned corners, the four edge curves, the no-optimisation surface
(its checkpoint in ``no_opt_surface``) and the trained surface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeconn.checkpoints import load_model
from modeconn.commands.align import run_align
from modeconn.commands.connect import run_connect
from modeconn.commands.reproduce.claim import StepOptions
from modeconn.commands.steps import resume_flags, run_step
from modeconn.commands.surface import run_surface
from modeconn.commands.surface_eval import run_surface_eval
from modeconn.commands.train import run_train
from modeconn.connectivity.checkpoints import endpoint_meta, load_curve, save_surface
from modeconn.connectivity.surface_analysis import surface_from_curves, weight_average_figures
from modeconn.connectivity.surfaces import CORNER_NAMES, EDGES
from modeconn.data.prepare import DataConfig, prepare_data
from modeconn.distributed import resolve_device
from modeconn.models import build_model
from modeconn.training import TrainConfig

if TYPE_CHECKING:
    from modeconn.commands.reproduce.surface import SurfaceSettings

StepRun = Callable[[Path, bool], dict[str, Any]]


@dataclass
class SurfaceSteps:
    """What one seed's steps produced: the corner models' run directories (aligned onto A when
    aligning), the alignment summaries of B, C, D, and the grid summaries of the trained and the
    no-optimisation surface."""

    corners: list[Path]
    trained: dict[str, Any]
    no_opt: dict[str, Any]
    aligned: dict[str, dict[str, Any]] = field(default_factory=dict)


def family_config(epochs: int, lr: float, seed: int) -> TrainConfig:
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


def _train_corners(
    base: Path, seed: int, settings: SurfaceSettings, data: DataConfig, options: StepOptions
) -> list[Path]:
    """Corners A … D trained from seeds 4s … 4s+3 (initialisation and batch order) on the
    seed's one data split."""
    corners: list[Path] = []
    for k, name in enumerate(CORNER_NAMES):

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
                device=options.device,
                **resume_flags(resume),
                progress=options.progress,
            )

        path = base / f"corner_{name.lower()}"
        run_step(path, options.force, train)
        corners.append(path)
    return corners


def _align_corners(
    base: Path, seed: int, corners: list[Path], data: DataConfig, options: StepOptions
) -> tuple[list[Path], dict[str, dict[str, Any]]]:
    """B, C, D permuted onto A by weight matching; the corners with the aligned ones in their
    place and the alignment summaries by corner name."""
    aligned_corners = list(corners)
    summaries: dict[str, dict[str, Any]] = {}
    for k in range(1, 4):

        def align(path: Path, resume: bool, other: Path = corners[k]) -> dict[str, Any]:
            return run_align(
                corners[0],
                other,
                path,
                method="weight",
                data=data,
                points=5,
                seed=seed,
                device=options.device,
                force=True,
                progress=options.progress,
            )

        path = base / f"aligned_{CORNER_NAMES[k].lower()}"
        summaries[CORNER_NAMES[k]] = run_step(path, options.force, align)
        aligned_corners[k] = path
    return aligned_corners, summaries


def _train_edge_curves(
    base: Path,
    seed: int,
    settings: SurfaceSettings,
    corners: list[Path],
    data: DataConfig,
    options: StepOptions,
) -> None:
    """The 3-bend Bezier curves ``curve_ab``, ``curve_cd``, ``curve_ac``, ``curve_bd``."""
    by_name = dict(zip(CORNER_NAMES, corners, strict=True))
    for first, second in EDGES:

        def connect(path: Path, resume: bool, a=by_name[first], b=by_name[second]):
            return run_connect(
                a,
                b,
                path,
                data=data,
                config=family_config(settings.curve_epochs, settings.surface_lr, seed),
                num_bends=3,
                device=options.device,
                **resume_flags(resume),
                progress=options.progress,
            )

        run_step(_curve_path(base, first, second), options.force, connect)


def _curve_path(base: Path, first: str, second: str) -> Path:
    return base / f"curve_{(first + second).lower()}"


def save_no_opt_surface(
    path: Path, corners: list[Path], base: Path, centre: str, data: DataConfig
) -> Path:
    """Assemble the no-optimisation surface from the corner models and the four edge curves
    below ``base`` (``curve_ab`` …) and save it as a surface checkpoint at ``path``."""
    ckpts = [load_model(p) for p in corners]
    curves = [load_curve(_curve_path(base, *edge))[0] for edge in EDGES]
    model = build_model(ckpts[0].spec)
    surface = surface_from_curves(model, [c.model for c in ckpts], curves, centre)
    meta = {
        **endpoint_meta(ckpts),
        "data": data.to_dict(),
        "train_split": "train",
        "construction": {"from": "curves", "centre": centre},
    }
    return save_surface(path, surface, ckpts[0].spec, data.dataset, meta)


def _no_opt_step(
    base: Path,
    settings: SurfaceSettings,
    corners: list[Path],
    data: DataConfig,
    options: StepOptions,
) -> StepRun:
    """The step that assembles the no-optimisation surface and evaluates it on the grid."""

    def no_opt(path: Path, resume: bool) -> dict[str, Any]:
        checkpoint = base / "no_opt_surface"
        save_no_opt_surface(checkpoint, corners, base, settings.no_opt_centre, data)
        return run_surface_eval(
            checkpoint,
            path,
            grid=settings.grid,
            data=data,
            train_eval_limit=settings.train_eval_limit,
            device=options.device,
            force=True,
            progress=options.progress,
        )

    return no_opt


def _surface_step(
    seed: int,
    settings: SurfaceSettings,
    corners: list[Path],
    data: DataConfig,
    options: StepOptions,
) -> StepRun:
    """The step that trains the Bezier surface through the corners and evaluates it."""

    def surface(path: Path, resume: bool) -> dict[str, Any]:
        return run_surface(
            corners,
            path,
            data=data,
            config=family_config(settings.surface_epochs, settings.surface_lr, seed),
            num_bends=settings.num_bends,
            grid=settings.grid,
            train_eval_limit=settings.train_eval_limit,
            device=options.device,
            **resume_flags(resume),
            progress=options.progress,
        )

    return surface


def run_surface_steps(
    base: Path, seed: int, settings: SurfaceSettings, options: StepOptions
) -> SurfaceSteps:
    """Run (or reuse) one seed's steps below ``base``; return what they produced."""
    data = settings.data(seed, options.data_dir)
    corners = _train_corners(base, seed, settings, data, options)
    aligned: dict[str, dict[str, Any]] = {}
    if settings.align:
        corners, aligned = _align_corners(base, seed, corners, data, options)
    _train_edge_curves(base, seed, settings, corners, data, options)
    no_opt = run_step(
        base / "no_opt", options.force, _no_opt_step(base, settings, corners, data, options)
    )
    trained = run_step(
        base / "surface", options.force, _surface_step(seed, settings, corners, data, options)
    )
    return SurfaceSteps(corners, trained, no_opt, aligned)


def corner_average_figures(
    corners: list[Path], data: DataConfig, *, train_eval_limit: int | None, device: str
) -> dict[str, float]:
    """Test loss/accuracy of the plain mean of the saved corners' weights
    (:func:`~modeconn.connectivity.surface_analysis.weight_average_figures`)."""
    dev = resolve_device(device)
    ckpts = [load_model(p) for p in corners]
    model = build_model(ckpts[0].spec)
    return weight_average_figures(
        model,
        [c.model.state_dict() for c in ckpts],
        prepare_data(data),
        train_eval_limit=train_eval_limit,
        device=dev,
    )
