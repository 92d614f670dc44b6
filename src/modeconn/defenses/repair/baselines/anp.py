"""Baseline ``ANP`` (adversarial neuron pruning): masks on neurons optimised against adversarial
neuron perturbation, the pruned count chosen on held-out bonafide data (``config.anp``). Not
applicable to a model with nothing to mask."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.anp import adversarial_neuron_pruning
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class ANP:
    name: ClassVar[str] = "ANP"
    may_not_apply: ClassVar[bool] = True

    def build(self, context: RepairContext) -> Built:
        cfg, data, device = context.config.anp, context.data, context.device
        model, info = adversarial_neuron_pruning(
            context.tampered.model,
            data.train_loader(cfg.batch_size, split="bonafide", device=device),
            data.eval_loader("bonafide_holdout", device=device),
            cfg,
            seed=context.config.seed,
            device=device,
            progress=context.progress,
        )
        detail = (
            f"{info['pruned']} of {info['neurons']} neurons pruned (held-out bonafide "
            f"within {cfg.tolerance:.0%})"
        )
        return Built(model, detail)
