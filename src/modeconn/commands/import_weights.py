"""``modeconn import``: weights modeconn did not write become a modeconn checkpoint, once.

A state dict saved by the user's own code has no sidecar, so every command reading it needs
``--arch`` (and the normalisation). Imported once, into ``model.safetensors`` + ``model.json`` (and
``model.weights.safetensors``, the same weights in the user's key names), later commands need no
flags. The summary holds the model's clean test accuracy, so a wrong architecture, normalisation or
data set shows at once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from modeconn.checkpoints import (
    DEFAULT_NAME,
    is_foreign,
    load_model_and_data,
    network_weights_path,
    save_model,
)
from modeconn.commands.train import test_metrics
from modeconn.data.prepare import DataConfig
from modeconn.distributed import resolve_device
from modeconn.errors import ModeconnError
from modeconn.models.foreign import ForeignArchitecture
from modeconn.rundir import open_run


def run_import(
    weights: str | Path,
    out: str | Path,
    *,
    foreign: ForeignArchitecture,
    data: DataConfig | None = None,
    device: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Read ``weights`` (a state dict without a sidecar) as ``foreign`` says, sized for the data
    set of ``data`` (default: Fashion-MNIST), and write it to run directory ``out`` as a modeconn
    checkpoint with its clean test loss and accuracy."""
    if not is_foreign(weights, foreign):
        raise ModeconnError(f"{weights} is a modeconn checkpoint already: nothing to import")
    dev = resolve_device(device)
    config = dataclasses.replace(data or DataConfig(dataset=None), augment=False)
    checkpoint, config, prepared = load_model_and_data(weights, config, device=dev, foreign=foreign)
    options = {
        "command": "import",
        "weights": str(weights),
        "foreign_model": foreign.to_dict(),
        "data": config.to_dict(),
        "device": str(dev),
    }
    with open_run(out, options, force=force) as run:
        figures = test_metrics(checkpoint.model, prepared, dev)
        path = save_model(
            run.file(DEFAULT_NAME),
            checkpoint.model,
            checkpoint.spec,
            dataset=config.dataset,
            metrics=figures,
            extra={"imported_from": str(weights)},
            class_names=prepared.info.class_names,
        )
        summary = {
            **figures,
            "model": path.name,
            "network_weights": network_weights_path(path).name,
        }
        run.finish(summary)
    return summary
