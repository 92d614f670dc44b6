"""The ``connect`` command: train a curve between two saved models.

Curves are trained in memory by :mod:`modeconn.connectivity`; this module loads the saved
models, gives the training a run directory (config, per-epoch metrics, resumable state, DDP
under ``torchrun``), and writes the curve checkpoint after every epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.checkpoints import foreign_record, load_model
from modeconn.commands.family import FamilySession, check_family_options
from modeconn.connectivity.checkpoints import family_kind, load_curve, save_curve
from modeconn.connectivity.curves import INITS, Curve, StateDict
from modeconn.connectivity.train import curve_train_config, set_interior_points
from modeconn.data.prepare import DataConfig
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models import build_model
from modeconn.models.foreign import ForeignArchitecture
from modeconn.training import TrainConfig


def _init_points_from(path: str | Path, kind: str, num_bends: int) -> list[StateDict]:
    """Interior points from a checkpoint: every interior point = a model's weights, or the
    interior points of a curve with the same kind and number of bends."""
    source = family_kind(path)
    if source == "model":
        state = load_model(path).model.state_dict()
        return [state] * (num_bends - 2)
    if source == "curve":
        other, _, _ = load_curve(path)
        if (other.kind, other.num_bends) != (kind, num_bends):
            raise ModeconnError(
                f"init curve {path} is a {other.num_bends}-bend {other.kind}, "
                f"not a {num_bends}-bend {kind}"
            )
        return other.control_points()[1:-1]
    raise InvalidArgument("init", f"init {path} is a {source} checkpoint; give a model or a curve")


def _initial_curve(
    s: FamilySession, kind: str, num_bends: int, fix_endpoints: bool, init: str | Path, noise: float
) -> Curve:
    """The curve between the session's two models before training, on the session's device:
    interior points on the segment (``"linear"``), with noise (``"noise"``), or from a
    checkpoint (see :func:`_init_points_from`)."""
    state_a, state_b = s.states()
    init_mode = init if init in ("linear", "noise") else "linear"
    curve = Curve.from_endpoints(
        build_model(s.spec), state_a, state_b, kind, num_bends, fix_endpoints, init_mode, noise
    )
    if init_mode != init:
        set_interior_points(curve, _init_points_from(init, kind, num_bends))
    return curve.to(s.dev)


def run_connect(
    model_a_path: str | Path,
    model_b_path: str | Path,
    out: str | Path,
    *,
    data: DataConfig | None = None,
    config: TrainConfig | None = None,
    kind: str = "bezier",
    num_bends: int = 3,
    fix_endpoints: bool = True,
    init: str | Path = "linear",
    noise: float = 0.1,
    train_split: str | None = None,
    t_per_batch: int = 1,
    stratified: bool = False,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
    foreign: ForeignArchitecture | None = None,
) -> dict[str, Any]:
    """Train a curve between two saved models into run directory ``out``; return its summary.

    ``init`` is ``"linear"`` (interior points on the segment), ``"noise"`` (the segment plus
    relative Gaussian noise of size ``noise``) or a checkpoint path: a model (every interior point
    starts at its weights) or a curve of the same kind and bends. ``train_split`` defaults to
    ``"bonafide"`` when ``data.bonafide`` is set, else ``"train"``. Writes ``curve.safetensors`` +
    ``curve.json`` after every epoch; under ``torchrun`` it trains with DDP. ``foreign`` reads
    endpoint weights without a sidecar.
    """
    config = config or curve_train_config()
    check_family_options(kind=kind, num_bends=num_bends, t_per_batch=t_per_batch)
    if str(init) not in INITS and not Path(init).exists():
        raise InvalidArgument(
            "init", f"init {init}: use linear, noise, or the path of a checkpoint"
        )
    s = FamilySession(
        [model_a_path, model_b_path], ["A", "B"], data, config, train_split, device, foreign
    )
    options = {
        "command": "connect",
        "model_a": str(model_a_path),
        "model_b": str(model_b_path),
        "kind": kind,
        "num_bends": num_bends,
        "fix_endpoints": fix_endpoints,
        "init": str(init),
        "noise": noise,
        "t_per_batch": t_per_batch,
        "stratified": stratified,
        **foreign_record(foreign),
    }
    with s.open_run(out, options, force=force, resume=resume) as run:
        torch.manual_seed(config.seed)
        curve = _initial_curve(s, kind, num_bends, fix_endpoints, init, noise)
        meta = {**s.meta, "curve_init": str(init)}

        def save(model: nn.Module, metrics: dict[str, Any]) -> None:
            path = run.file("curve.safetensors")
            save_curve(path, model, s.spec, s.data.dataset, {**meta, "metrics": metrics})

        last = s.train(
            run,
            curve,
            save,
            prefix="mid",
            description=f"connect {s.spec.arch}",
            t_per_batch=t_per_batch,
            stratified=stratified,
            progress=progress,
        )
        summary: dict[str, Any] = {}
        if s.ctx.is_main:
            keys = ("train_loss", "train_acc", "mid_test_loss", "mid_test_acc")
            summary = {"epochs": config.epochs, **{k: last.get(k) for k in keys}}
            save(curve, summary)
        run.finish(summary)
    return summary
