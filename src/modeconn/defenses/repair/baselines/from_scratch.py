"""Baseline ``from scratch``: a fresh model of the architecture trained on the bonafide data."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.baselines import train_from_scratch
from modeconn.defenses.repair.baselines.budget import scratch_budget, unlearning_budget
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class FromScratch:
    name: ClassVar[str] = "from scratch"
    may_not_apply: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        budget = scratch_budget(context)
        batch = unlearning_budget(context).batch_size
        model = train_from_scratch(
            context.tampered.spec,
            context.data.train_loader(batch, split="bonafide", device=context.device),
            budget,
            device=context.device,
            progress=context.progress,
            run=context.stage("from_scratch", budget),
        )
        return Built(model, f"{budget.epochs} epochs on bonafide")
