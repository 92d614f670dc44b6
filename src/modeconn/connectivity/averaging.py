"""The weight average of models that share a start: a "soup" of fine-tuned copies of one model.

Copies of one model fine-tuned with different seeds (different batch orders and mixes) stay in
its basin, so the straight line between them stays low and their average is a point of that
basin, often better than either (Wortsman et al., ICML 2022, "model soups"). Models trained
from different starts need aligning first (:mod:`modeconn.connectivity.alignment`); this module
does not align.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from modeconn.connectivity.bn import update_bn


@torch.no_grad()
def average_models(
    models: Sequence[nn.Module],
    bn_loader: Iterable[Any] | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """A new model whose floating-point parameters and buffers are the mean of ``models``'
    (which must share one architecture); integer buffers (BatchNorm's batch counts) are the first
    model's. With ``bn_loader``, BatchNorm statistics are then recomputed on its data (the
    average of running statistics is not the statistics of the averaged weights).

    >>> a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    >>> m = average_models([a, b])
    >>> torch.allclose(m.weight, (a.weight + b.weight) / 2), m is not a
    (True, True)
    """
    if not models:
        raise ValueError("averaging needs at least one model")
    states = [m.state_dict() for m in models]
    keys = list(states[0])
    if any(list(s) != keys for s in states[1:]):
        raise ValueError("the models to average have different parameters")
    merged = {
        k: torch.stack([s[k] for s in states]).mean(0)
        if states[0][k].is_floating_point()
        else states[0][k].clone()
        for k in keys
    }
    average = copy.deepcopy(models[0])
    average.load_state_dict(merged)
    if bn_loader is not None:
        update_bn(average, bn_loader, device)
    return average.eval()


__all__ = ["average_models"]
