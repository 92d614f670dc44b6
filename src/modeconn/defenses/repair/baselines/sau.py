"""Baseline ``SAU`` (shared adversarial unlearning): the tampered model trained on the bonafide
data to give up the wrong answers it shares with itself under small perturbations
(``config.sau``, :mod:`modeconn.defenses.sau`)."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built
from modeconn.defenses.sau import SharedAdversarialObjective


class SAU:
    name: ClassVar[str] = "SAU"
    may_not_apply: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        cfg, seed = context.config.sau, context.config.seed
        budget = cfg.train_config(seed)
        model = fine_tune(
            context.tampered.model,
            context.data.train_loader(cfg.batch_size, split="bonafide", device=context.device),
            budget,
            device=context.device,
            progress=context.progress,
            objective=SharedAdversarialObjective(context.tampered.model, cfg),
            description="SAU",
            run=context.stage("sau", budget),
        )
        detail = f"{cfg.epochs} epochs on bonafide, shared PGD L∞ {cfg.eps} × {cfg.pgd_steps}"
        return Built(model, detail)
