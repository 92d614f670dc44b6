"""Candidate ``path (no scan)``: Zhao et al.'s curve between the tampered endpoints, no scan.

With one tampered model the second endpoint is the paper's one-model set-up: the tampered model
fine-tuned on the bonafide data. The curve starts from fresh interior points (``init="random"``)
or on the straight line (``init="linear"``, the reference code).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from modeconn.connectivity import Curve, fit_curve
from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.repair.candidates.paths import point_of_path
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built
from modeconn.models import build_model


def second_endpoint(context: RepairContext) -> nn.Module:
    """The paper's one-model set-up: the tampered model fine-tuned on the bonafide data."""
    config = context.config
    cfg = dataclasses.replace(config.finetune, seed=config.seed)
    return fine_tune(
        context.tampered.model,
        context.data.train_loader(cfg.batch_size, split="bonafide", device=context.device),
        cfg,
        device=context.device,
        progress=context.progress,
        description="endpoint B",
        run=context.stage("endpoint_b", config.finetune),
    )


def random_interior_points(context: RepairContext) -> list[dict[str, torch.Tensor]]:
    """Fresh, seeded initialisations of the architecture for the curve's interior points."""
    torch.manual_seed(context.config.seed + 7919)
    spec = context.tampered.spec
    return [build_model(spec).state_dict() for _ in range(context.config.num_bends - 2)]


def scan_free_curve(context: RepairContext, other: nn.Module) -> Curve:
    """Fit the curve between the tampered endpoints on the bonafide data."""
    config = context.config
    cfg = dataclasses.replace(config.path_curve, seed=config.seed)
    model = context.tampered.model
    return fit_curve(
        model,
        model.state_dict(),
        other.state_dict(),
        context.data.train_loader(cfg.batch_size, split="bonafide", device=context.device),
        cfg,
        kind=config.path_kind,
        num_bends=config.num_bends,
        init="linear",
        init_points=random_interior_points(context) if config.init == "random" else None,
        run=context.stage("curve", config.path_curve),
        device=context.device,
        progress=context.progress,
    )


class ScanFreePath:
    """The path between the tampered endpoints (``method="path"``)."""

    name: ClassVar[str] = "path (no scan)"
    method: ClassVar[str] = "path"
    in_auto: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        second = context.second
        other = second.model if second is not None else second_endpoint(context)
        context.lap("endpoint_b")
        curve = scan_free_curve(context, other)
        rows = context.evaluate_path(curve)
        context.lap("curve_and_path")
        return point_of_path(context, curve, rows)
