"""Baseline ``fine-pruning`` (Liu et al. 2018): prune the last convolution's channels least
active on clean data (the fraction chosen on held-out bonafide data), then fine-tune. Not
applicable to a model without a convolution."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.baselines import fine_prune
from modeconn.defenses.repair.baselines.budget import unlearning_budget
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class FinePruning:
    name: ClassVar[str] = "fine-pruning"
    may_not_apply: ClassVar[bool] = True

    def build(self, context: RepairContext) -> Built:
        data, device = context.data, context.device
        budget = unlearning_budget(context)
        pruned, fraction = fine_prune(
            context.tampered.model,
            data.eval_loader("bonafide", device=device),
            data.eval_loader("bonafide_holdout", device=device),
            data.train_loader(budget.batch_size, split="bonafide", device=device),
            budget,
            device=device,
            progress=context.progress,
            run=context.stage("fine_pruning", budget),
        )
        return Built(pruned, f"{fraction:.0%} of last-conv channels pruned")
