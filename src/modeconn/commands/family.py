"""What the curve and surface commands share.

``connect`` and ``surface`` train a family of models (control points) between saved models: a
:class:`FamilySession` gives them the distributed set-up, the run directory, the data and the
endpoint models. ``path-eval``, ``extract`` and ``surface-eval`` evaluate a saved family on the
data it was trained with (:func:`data_from_meta`, :func:`prepare_family_data`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.checkpoints import Checkpoint, is_foreign, load_model, model_input_shape
from modeconn.connectivity.checkpoints import check_same_architecture, endpoint_meta, family_kind
from modeconn.connectivity.curves import ControlPointModel, check_curve_kind
from modeconn.connectivity.evaluate import PointData, center_coefficients
from modeconn.connectivity.train import train_family
from modeconn.data.prepare import DataConfig, PreparedData, prepare_data
from modeconn.data.registry import DatasetInfo
from modeconn.distributed import init_distributed
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models.foreign import ForeignArchitecture
from modeconn.models.sizing import check_compatible
from modeconn.rundir import RunDir, open_run
from modeconn.training import EvalFn, TrainConfig, evaluate_model


def _load_models(
    paths: Sequence[str | Path],
    names: Sequence[str],
    foreign: ForeignArchitecture | None = None,
    data: DatasetInfo | None = None,
) -> list[Checkpoint]:
    """Load the endpoint (corner) models on the CPU and check they share one architecture;
    weights without a sidecar are read through ``foreign``, sized for the data set ``data``."""
    for path, name in zip(paths, names, strict=True):
        if is_foreign(path, foreign):
            continue
        kind = family_kind(path)
        if kind != "model":
            raise ModeconnError(f"{name} ({path}) is a {kind} checkpoint, not a model")
    dataset = data.name if data is not None else None
    ckpts = [load_model(p, foreign=foreign, data=data, dataset=dataset) for p in paths]
    check_same_architecture(ckpts, names)
    return ckpts


def _family_data(data: DataConfig | None, own_dataset: str, seed: int) -> DataConfig:
    """The data a family trains on: ``own_dataset`` (the models') unless one is named."""
    if data is None:
        return DataConfig(dataset=own_dataset, seed=seed)
    if not data.dataset:  # "the models' own data set"
        return replace(data, dataset=own_dataset)
    return data


def _resolve_split(data: DataConfig, train_split: str | None) -> str:
    split = train_split or ("bonafide" if data.bonafide else "train")
    if split not in ("train", "bonafide"):
        raise ModeconnError(f"a curve trains on 'train' or 'bonafide' data, not '{split}'")
    if split == "bonafide" and not data.bonafide:
        raise InvalidArgument(
            "bonafide", "training on bonafide data needs a bonafide subset (bonafide=N)"
        )
    return split


def _center_evaluator(data: PreparedData, split: str, dev: torch.device, prefix: str) -> EvalFn:
    """Per-epoch figures at the family's middle point (BatchNorm recomputed from ``split``)."""
    point_data = PointData(data, split, dev)

    def evaluate(model: nn.Module) -> dict[str, float]:
        mid = model.model_from_coefficients(center_coefficients(model), point_data.own, dev)
        res = evaluate_model(mid, point_data.test, dev)
        return {f"{prefix}_test_loss": res["loss"], f"{prefix}_test_acc": res["acc"]}

    return evaluate


class FamilySession:
    """What ``connect`` and ``surface`` share: distributed set-up, data, endpoint models, and
    the training of a family in its run directory.

    Everything a user can get wrong (the models, the data, the split) is checked here, before
    :meth:`open_run` touches the run directory. ``foreign`` reads weights without a sidecar."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        names: Sequence[str],
        data: DataConfig | None,
        config: TrainConfig,
        train_split: str | None,
        device: str,
        foreign: ForeignArchitecture | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.ctx, self.dev = init_distributed(device, os.environ.get("MODECONN_INIT_METHOD"))
        if any(is_foreign(p, foreign) for p in paths):  # the data set sizes the models
            self.data = _family_data(data, DataConfig.dataset, config.seed)
            self.split = _resolve_split(self.data, train_split)
            self.prepared = prepare_data(self.data)
            self.ckpts = _load_models(paths, names, foreign, self.prepared.info)
        else:
            self.ckpts = _load_models(paths, names)
            own_dataset = self.ckpts[0].dataset or DataConfig.dataset
            self.data = model_input_shape(
                _family_data(data, own_dataset, config.seed), self.ckpts[0].spec
            )
            self.split = _resolve_split(self.data, train_split)
            self.prepared = prepare_data(self.data)
        self.spec = self.ckpts[0].spec
        check_compatible(self.spec, self.prepared, str(paths[0]))
        self.meta = {
            **endpoint_meta(self.ckpts),
            "data": self.data.to_dict(),
            "train_split": self.split,
        }

    def open_run(
        self, out: str | Path, options: dict[str, Any], *, force: bool, resume: bool
    ) -> AbstractContextManager[RunDir]:
        """The run directory (:func:`~modeconn.rundir.open_run`, on every DDP process), its
        config the command's ``options`` with the data, split, training and device added."""
        config = {
            **options,
            "data": self.data.to_dict(),
            "train_split": self.split,
            "train": self.config.to_dict(),
            "device": str(self.dev),
            "world_size": self.ctx.world_size,
        }
        return open_run(out, config, force=force, resume=resume, dist_ctx=self.ctx)

    def loader(self):
        return self.prepared.train_loader(
            self.config.batch_size, split=self.split, device=self.dev, dist_ctx=self.ctx
        )

    def states(self) -> list[dict[str, torch.Tensor]]:
        return [c.model.state_dict() for c in self.ckpts]

    def train(
        self,
        run: RunDir,
        family: ControlPointModel,
        save: Callable[[nn.Module, dict[str, Any]], None],
        *,
        prefix: str,
        description: str,
        t_per_batch: int,
        stratified: bool,
        progress: bool,
    ) -> dict[str, Any]:
        """Train ``family`` in the one loop, saving it after every epoch with ``save(model,
        metrics)`` and reporting its centre point's test figures as ``PREFIX_test_*``; returns the
        last epoch's record (empty on processes other than the main one)."""

        def checkpoint(model: nn.Module, epoch: int, record: dict[str, float]) -> None:
            save(model, {**record, "epoch": epoch})

        result = train_family(
            family,
            self.loader(),
            self.config,
            t_per_batch=t_per_batch,
            stratified=stratified,
            run=run,
            evaluate=_center_evaluator(self.prepared, self.split, self.dev, prefix),
            on_epoch_end=checkpoint,
            device=self.dev,
            dist_ctx=self.ctx,
            progress=progress,
            description=description,
        )
        return result.last if self.ctx.is_main else {}


def check_family_options(*, num_bends: int, t_per_batch: int, kind: str = "bezier") -> None:
    """Reject bad options before anything is written to the run directory."""
    check_curve_kind(kind)
    if num_bends < 3:
        raise InvalidArgument(
            "num_bends",
            f"num_bends counts the endpoints; it needs a free point, so >= 3 (got {num_bends})",
        )
    if t_per_batch < 1:
        raise InvalidArgument("t_per_batch", f"t_per_batch must be at least 1, got {t_per_batch}")


def data_from_meta(
    meta: dict[str, Any], *, data_dir: str | None = None, test_limit: int | None = None
) -> DataConfig:
    """The data config a curve or surface was trained with (so its bonafide split is redrawn
    exactly), with the data directory and test subset optionally replaced."""
    stored = dict(meta.get("data") or {})
    if not stored:
        stored = {"dataset": meta.get("dataset") or "fashion-mnist"}
    if data_dir is not None:
        stored["data_dir"] = str(data_dir)
    if test_limit is not None:
        stored["test_limit"] = test_limit
    return DataConfig(**stored)


def prepare_family_data(meta, spec, source, data, data_dir, test_limit) -> PreparedData:
    config = data or data_from_meta(meta, data_dir=data_dir, test_limit=test_limit)
    prepared = prepare_data(model_input_shape(config, spec))
    check_compatible(spec, prepared, str(source))
    return prepared
