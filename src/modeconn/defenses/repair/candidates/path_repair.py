"""Candidate ``path repair``: a curve between the unlearnt endpoints, unlearning along the path.

The unlearnt endpoints (A, and B or A unlearnt with another seed) are connected by a Bezier curve
started on the straight line and trained on the same stamped batches, gently — few epochs at a
low rate — so that the interior keeps what the endpoints learnt from far more data than the
bonafide set; t comes from the held-out rule.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from modeconn.connectivity import fit_curve
from modeconn.connectivity.alignment import weight_matching
from modeconn.defenses.repair.candidates.paths import point_of_path
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built
from modeconn.defenses.unlearning import unlearning_loader
from modeconn.errors import ModeconnError
from modeconn.models.permutation import apply_permutation, permutation_spec


def aligned_endpoint(a: nn.Module, b: nn.Module, seed: int) -> tuple[dict[str, torch.Tensor], str]:
    """B's state with its hidden units permuted onto A's by weight matching (the same function),
    and a note saying how B was aligned.

    Two independently trained lenets sit in different basins and the curve between their
    unlearnt versions dipped at its middle (patch: test accuracy 0.902 / 0.854 / 0.905 at
    t = 0 / 0.5 / 1); aligned first, 0.894 / 0.888 / 0.896. A model without a permutation spec
    keeps B as it is (the note says so)."""
    state_a, state_b = a.state_dict(), b.state_dict()
    try:
        spec = permutation_spec(a)
    except ModeconnError as err:
        return state_b, f"not aligned ({err})"
    perms = weight_matching(spec, state_a, state_b, seed=seed)
    return apply_permutation(spec, state_b, perms), "B aligned to A by weight matching"


class PathRepair:
    """The unlearning path between the unlearnt endpoints (B aligned onto A first)."""

    name: ClassVar[str] = "path repair"
    method: ClassVar[str] = "unlearn-path"
    in_auto: ClassVar[bool] = True

    def build(self, context: RepairContext) -> Built:
        config = context.config
        a, b = context.unlearnt_endpoints()
        cfg = dataclasses.replace(config.curve, seed=config.seed)
        loader = unlearning_loader(
            context.data,
            context.endpoint_scans(),
            config.unlearning,
            cfg.seed,
            context.device,
            cfg.batch_size,
        )
        end, note = (
            aligned_endpoint(a, b, config.seed) if config.align_endpoints else (b.state_dict(), "")
        )
        curve = fit_curve(
            context.tampered.model,
            a.state_dict(),
            end,
            loader,
            cfg,
            kind=config.kind,
            num_bends=config.num_bends,
            init="linear",
            run=context.stage("curve", cfg),
            device=context.device,
            progress=context.progress,
        )
        rows = context.evaluate_path(curve)
        context.lap("curve_and_path")
        return point_of_path(context, curve, rows, note)
