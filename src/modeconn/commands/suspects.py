"""Loading the models a user suspects and the bonafide data to examine them with.

``scan`` and ``repair`` both start here: the checkpoint(s), checked to be one architecture, and
the bonafide subset of the training split of their data set (the sidecar's unless given), drawn
with the command's seed, without augmentation; one clear line on bad input. Weights without a
sidecar are read through a :class:`ForeignArchitecture`; the data set (given, or the default) then
comes first, since its images and classes size the model. A folder's images are converted to the
input shape the model takes: its sidecar's, or the one the :class:`ForeignArchitecture` names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from modeconn.checkpoints import (
    DEFAULT_DATASET,
    Checkpoint,
    is_foreign,
    load_model,
    model_input_shape,
)
from modeconn.data.prepare import DataConfig, PreparedData, prepare_data, with_input_shape
from modeconn.data.registry import DatasetInfo
from modeconn.defenses.repair import RepairConfig
from modeconn.errors import ModeconnError
from modeconn.models.foreign import ForeignArchitecture
from modeconn.models.sizing import check_compatible

__all__ = [
    "DEFAULT_BONAFIDE",
    "DEFAULT_DATASET",
    "bonafide_data",
    "load_repair_inputs",
    "load_suspects",
    "suspects_with_data",
]

#: Clean training images a scan or repair uses when the data configuration names no size.
DEFAULT_BONAFIDE = 2500


def load_suspects(
    paths: Sequence[str | Path],
    device: torch.device,
    *,
    foreign: ForeignArchitecture | None = None,
    data: DatasetInfo | None = None,
) -> list[Checkpoint]:
    """Load the checkpoints; they must share one architecture (the same model spec). Weights
    without a sidecar are read through ``foreign``, sized for the data set ``data``."""
    dataset = data.name if data is not None else None
    checkpoints = [
        load_model(p, device=device, foreign=foreign, data=data, dataset=dataset) for p in paths
    ]
    first = checkpoints[0]
    for path, other in zip(paths[1:], checkpoints[1:], strict=True):
        if other.spec.to_dict() != first.spec.to_dict():
            raise ModeconnError(
                f"{paths[0]} ({first.spec.arch}) and {path} ({other.spec.arch}) are different "
                "architectures"
            )
    return checkpoints


def _bonafide_config(data: DataConfig | None, dataset: str | None, seed: int) -> DataConfig:
    """The data configuration of a scan or repair: ``dataset`` when none is named (else
    ``DEFAULT_DATASET``), ``DEFAULT_BONAFIDE`` images when no size is given, no augmentation, the
    command's seed."""
    data = data if data is not None else DataConfig(dataset=None)
    return dataclasses.replace(
        data,
        dataset=data.dataset or dataset or DEFAULT_DATASET,
        bonafide=DEFAULT_BONAFIDE if data.bonafide is None else data.bonafide,
        augment=False,
        seed=seed,
    )


def bonafide_data(
    data: DataConfig | None, checkpoint: Checkpoint, source: str | Path, *, seed: int
) -> tuple[DataConfig, PreparedData]:
    """The data configuration (see :func:`_bonafide_config`; the sidecar's data set and input
    shape when none is named) and its prepared splits, checked against the checkpoint's input
    shape and classes."""
    data = model_input_shape(_bonafide_config(data, checkpoint.dataset, seed), checkpoint.spec)
    prepared = prepare_data(data)
    check_compatible(checkpoint.spec, prepared, str(source))
    return data, prepared


def suspects_with_data(
    paths: Sequence[str | Path],
    data: DataConfig | None,
    device: torch.device,
    *,
    seed: int,
    foreign: ForeignArchitecture | None = None,
) -> tuple[list[Checkpoint], DataConfig, PreparedData]:
    """The checkpoints (:func:`load_suspects`) and their bonafide data (:func:`bonafide_data`).

    When some of the weights have no sidecar and are read through ``foreign``, the data set (the
    one named, or ``DEFAULT_DATASET``) is prepared first, and its shape sizes them.
    """
    if not any(is_foreign(p, foreign) for p in paths):
        checkpoints = load_suspects(paths, device)
        config, prepared = bonafide_data(data, checkpoints[0], paths[0], seed=seed)
        return checkpoints, config, prepared
    config = _bonafide_config(data, None, seed)
    config = with_input_shape(config, foreign.image_size, foreign.channels)
    prepared = prepare_data(config)
    checkpoints = load_suspects(paths, device, foreign=foreign, data=prepared.info)
    check_compatible(checkpoints[0].spec, prepared, str(paths[0]))
    return checkpoints, config, prepared


def load_repair_inputs(
    model_paths: Sequence[str | Path],
    config: RepairConfig,
    data: DataConfig | None,
    device: torch.device,
    *,
    foreign: ForeignArchitecture | None = None,
) -> tuple[Checkpoint, Checkpoint | None, DataConfig, PreparedData]:
    """A repair's inputs: the tampered model, the second one (or None), and the bonafide data
    drawn with the repair's seed; weights without a sidecar are read through ``foreign``."""
    if not 1 <= len(model_paths) <= 2:
        raise ModeconnError("repair takes one or two models")
    checkpoints, data, prepared = suspects_with_data(
        model_paths, data, device, seed=config.seed, foreign=foreign
    )
    tampered, *rest = checkpoints
    return tampered, (rest[0] if rest else None), data, prepared
