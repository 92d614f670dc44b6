"""Candidate ``distillation unlearning``: the tampered model taught, on augmented bonafide
batches of which a share carries the scan's triggers, its own answer on the clean images
(:mod:`modeconn.defenses.distillation`) — what it knows is kept, the trigger's shortcut is not."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.distillation import distillation_objective
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built

if TYPE_CHECKING:
    from modeconn.defenses.repair.config import RepairConfig


class DistillationCandidate:
    """A distilled from itself with the trigger stamped on (``config.distill``)."""

    name: ClassVar[str] = "distillation unlearning"
    method: ClassVar[str] = "distill"
    in_auto: ClassVar[bool] = True
    #: Distillation was the most accurate candidate, and as deep under the anchor's retuning
    #: attack, at every budget and on every pair measured (patch, blend, all-to-all; 50, 250 and
    #: 2,500 images; README), so it takes the ties of a held-out split too small to tell.
    preferred_on_ties: ClassVar[bool] = True

    def auto_applies(self, config: RepairConfig, images: int) -> bool:
        """Built by ``auto`` at every budget, or below ``config.distill.auto_below`` bonafide
        images when that is set."""
        below = config.distill.auto_below
        return below is None or images < below

    def build(self, context: RepairContext) -> Built:
        config, unlearning = context.config.distill, context.config.unlearning
        tampered = context.tampered.model
        images = len(context.data.indices("bonafide"))
        passes = config.passes(unlearning.epochs, images, unlearning.batch_size)
        train = dataclasses.replace(
            unlearning.train_config(context.config.seed),
            batch_size=max(1, min(unlearning.batch_size, images)),
        )
        loader = context.data.train_loader(
            train.batch_size,
            split="bonafide",
            seed=train.seed,
            augment=True,
            device=context.device,
            passes=passes,
        )
        teachers = [tampered]
        if config.teachers == "both" and context.second is not None:
            teachers.append(context.second.model)
        objective = distillation_objective(
            teachers, context.endpoint_scans(), unlearning, config, train.seed
        )
        model = fine_tune(
            tampered,
            loader,
            train,
            device=context.device,
            progress=context.progress,
            objective=objective,
            description="distillation unlearning",
            run=context.stage("unlearn_distill", train),
        )
        detail = f"A distilled from itself, T = {config.temperature:g}, {config.mix}"
        return Built(model, f"{detail}, {train.epochs} epochs of {passes} passes")
