"""Metrics measured at each point of a path, as extra columns of ``path.csv``.

A :class:`PathMetric` receives the ordinary model at one point (weights φ(t) loaded, BatchNorm
statistics already recomputed, eval mode) together with the prepared data, and returns named
figures. The attacks issue plugs in ASR, injection success and robust loss/accuracy, the
landscape issue the input-Hessian eigenvalue; :class:`SplitLossAccuracy` is the simplest one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from modeconn.data.prepare import PreparedData
from modeconn.training import evaluate_model


@runtime_checkable
class PathMetric(Protocol):
    """One or more columns of a path table, measured on the model at one point."""

    name: str

    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device
    ) -> dict[str, float]: ...


class SplitLossAccuracy:
    """Loss and accuracy on another split, as ``<split>_loss`` and ``<split>_acc``.

    E.g. ``SplitLossAccuracy("bonafide_holdout")`` gives the figures a repair uses to choose t
    without looking at the test set.
    """

    def __init__(self, split: str, batch_size: int = 512) -> None:
        self.split = split
        self.name = split
        self.batch_size = batch_size

    def __call__(
        self, model: nn.Module, data: PreparedData, device: torch.device
    ) -> dict[str, float]:
        res = evaluate_model(model, data.eval_loader(self.split, self.batch_size, device), device)
        return {f"{self.split}_loss": res["loss"], f"{self.split}_acc": res["acc"]}
