"""BatchNorm statistics along a path.

Running statistics are buffers, not parameters, so they are not on a curve: the statistics of
φ(t) are those of the activations that φ(t) itself produces. Before evaluating a point they are
reset and recomputed with one pass over data in train mode with cumulative averaging
(``momentum=None``), as in Garipov et al. (2018) and :func:`torch.optim.swa_utils.update_bn`.
The data is always given explicitly — the curve's own training data, never the test set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from modeconn.modes import module_mode


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm statistics that depend on the weights."""
    return bool(batchnorm_layers(model))


@torch.no_grad()
def update_bn(
    model: nn.Module, loader: Iterable[Any], device: torch.device | str | None = None
) -> None:
    """Recompute the BatchNorm running statistics of ``model`` from ``loader``.

    Resets every BatchNorm layer's statistics, sets ``momentum=None`` (cumulative average over
    the batches), runs the data through the model in train mode without gradients, then restores
    each layer's momentum and the model's train/eval mode. A model without BatchNorm is left
    untouched and no data is read. ``loader`` yields ``(x, y)`` batches or bare ``x`` tensors.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return
    momenta = {}
    for layer in layers:
        layer.reset_running_stats()
        momenta[layer] = layer.momentum
        layer.momentum = None
    try:
        with module_mode(model, True):
            for batch in loader:
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                model(x.to(device) if device is not None else x)
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
