"""Baseline ``SAU`` (shared adversarial unlearning): the tampered model trained on the bonafide
data to give up the wrong answers it shares with itself under small perturbations
(``config.sau``, :mod:`modeconn.defenses.sau`)."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.repair.baselines.budget import tune_on_bonafide
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built
from modeconn.defenses.sau import SharedAdversarialObjective


class SAU:
    name: ClassVar[str] = "SAU"
    may_not_apply: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        cfg, seed = context.config.sau, context.config.seed
        objective = SharedAdversarialObjective(context.tampered.model, cfg)
        model = tune_on_bonafide(context, cfg.train_config(seed), objective, "sau", "SAU")
        detail = f"{cfg.epochs} epochs on bonafide, shared PGD L∞ {cfg.eps} × {cfg.pgd_steps}"
        return Built(model, detail)
