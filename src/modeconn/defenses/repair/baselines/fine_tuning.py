"""Baseline ``fine-tuning``: the tampered model trained further on the bonafide data."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.repair.baselines.budget import unlearning_budget
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class FineTuning:
    name: ClassVar[str] = "fine-tuning"
    may_not_apply: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        budget = unlearning_budget(context)
        model = fine_tune(
            context.tampered.model,
            context.data.train_loader(budget.batch_size, split="bonafide", device=context.device),
            budget,
            device=context.device,
            progress=context.progress,
            run=context.stage("fine_tuning", budget),
        )
        return Built(model, f"{budget.epochs} epochs on bonafide")
