"""Candidate ``distillation unlearning``: the tampered model taught, on augmented bonafide
batches of which a share carries the scan's triggers, its own answer on the clean images
(:mod:`modeconn.defenses.distillation`) — what it knows is kept, the trigger's shortcut is not."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from modeconn.connectivity.averaging import average_models
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
        config, epochs = context.config.distill, context.config.unlearning.epochs
        images = len(context.data.indices("bonafide"))
        count, seed = config.student_count(images), context.config.seed
        passes = config.passes(epochs, images, self.batch(context))
        students = [self.student(context, seed + j, j, passes) for j in range(count)]
        teacher = "itself and B" if len(self.teachers(context)) > 1 else "itself"
        detail = (
            f"A distilled from {teacher}, T = {config.temperature:g}, {config.mix}, "
            f"{epochs} epochs of {passes} passes"
        )
        if count == 1:
            return Built(students[0], detail)
        bn = context.data.eval_loader("bonafide", device=context.device)
        average = average_models(students, bn, context.device)
        return Built(average, f"{detail}; the weight average of {count} students")

    @staticmethod
    def batch(context: RepairContext) -> int:
        images = len(context.data.indices("bonafide"))
        return max(1, min(context.config.unlearning.batch_size, images))

    @staticmethod
    def teachers(context: RepairContext) -> list[nn.Module]:
        """A, and B too when ``teachers`` is "both" and a second model was given."""
        teachers = [context.tampered.model]
        if context.config.distill.teachers == "both" and context.second is not None:
            teachers.append(context.second.model)
        return teachers

    def student(self, context: RepairContext, seed: int, index: int, passes: int) -> nn.Module:
        """One student: A fine-tuned on the distillation objective with ``seed`` (its batches,
        mixes and stamps), ``passes`` passes over the bonafide images an epoch; the first
        student's stage is ``unlearn_distill``, the others'
        ``unlearn_distill_2``, …"""
        config, unlearning = context.config.distill, context.config.unlearning
        train = dataclasses.replace(unlearning.train_config(seed), batch_size=self.batch(context))
        loader = context.data.train_loader(
            train.batch_size,
            split="bonafide",
            seed=train.seed,
            augment=True,
            device=context.device,
            passes=passes,
        )
        objective = distillation_objective(
            self.teachers(context), context.endpoint_scans(), unlearning, config, train.seed
        )
        stage = "unlearn_distill" if index == 0 else f"unlearn_distill_{index + 1}"
        return fine_tune(
            context.tampered.model,
            loader,
            train,
            device=context.device,
            progress=context.progress,
            objective=objective,
            description="distillation unlearning",
            run=context.stage(stage, train),
        )
