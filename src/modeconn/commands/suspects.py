"""Loading the models a user suspects and the bonafide data to examine them with.

``scan`` and ``repair`` both start here: the checkpoint(s), checked to be one architecture, and
the bonafide subset of the training split of their data set (the sidecar's unless given), drawn
with the command's seed, without augmentation; one clear line on bad input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from modeconn.checkpoints import Checkpoint, load_model
from modeconn.data.prepare import DataConfig, PreparedData, prepare_data
from modeconn.defenses.repair import RepairConfig
from modeconn.errors import ModeconnError
from modeconn.models.sizing import check_compatible

#: The data set of a checkpoint whose sidecar names none.
DEFAULT_DATASET = "fashion-mnist"
#: Clean training images a scan or repair uses when the data configuration names no size.
DEFAULT_BONAFIDE = 2500


def load_suspects(paths: Sequence[str | Path], device: torch.device) -> list[Checkpoint]:
    """Load the checkpoints; they must share one architecture (the same model spec)."""
    checkpoints = [load_model(p, device=device) for p in paths]
    first = checkpoints[0]
    for path, other in zip(paths[1:], checkpoints[1:], strict=True):
        if other.spec.to_dict() != first.spec.to_dict():
            raise ModeconnError(
                f"{paths[0]} ({first.spec.arch}) and {path} ({other.spec.arch}) are different "
                "architectures"
            )
    return checkpoints


def bonafide_data(
    data: DataConfig | None, checkpoint: Checkpoint, source: str | Path, *, seed: int
) -> tuple[DataConfig, PreparedData]:
    """The data configuration (the sidecar's data set when none is named, ``DEFAULT_BONAFIDE``
    images when no size is given, no augmentation, the command's seed) and its prepared splits,
    checked against the checkpoint's input shape and classes."""
    data = data if data is not None else DataConfig(dataset=None)
    data = dataclasses.replace(
        data,
        dataset=data.dataset or checkpoint.dataset or DEFAULT_DATASET,
        bonafide=DEFAULT_BONAFIDE if data.bonafide is None else data.bonafide,
        augment=False,
        seed=seed,
    )
    prepared = prepare_data(data)
    check_compatible(checkpoint.spec, prepared, str(source))
    return data, prepared


def load_repair_inputs(
    model_paths: Sequence[str | Path],
    config: RepairConfig,
    data: DataConfig | None,
    device: torch.device,
) -> tuple[Checkpoint, Checkpoint | None, DataConfig, PreparedData]:
    """A repair's inputs: the tampered model, the second one (or None), and the bonafide data
    drawn with the repair's seed."""
    if not 1 <= len(model_paths) <= 2:
        raise ModeconnError("repair takes one or two models")
    tampered, *rest = load_suspects(model_paths, device)
    data, prepared = bonafide_data(data, tampered, model_paths[0], seed=config.seed)
    return tampered, (rest[0] if rest else None), data, prepared
