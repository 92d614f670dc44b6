"""Baseline ``FT-SAM``: the tampered model fine-tuned on the bonafide data with sharpness-aware
steps (``config.ft_sam``, :mod:`modeconn.defenses.ft_sam`)."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.ft_sam import ft_sam_objective
from modeconn.defenses.repair.baselines.budget import tune_on_bonafide
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class FTSAM:
    name: ClassVar[str] = "FT-SAM"
    may_not_apply: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        cfg, seed = context.config.ft_sam, context.config.seed
        objective = ft_sam_objective(cfg)
        model = tune_on_bonafide(context, cfg.train_config(seed), objective, "ft_sam", "FT-SAM")
        kind = "adaptive SAM" if cfg.adaptive else "SAM"
        return Built(model, f"{cfg.epochs} epochs on bonafide, {kind} ρ={cfg.rho}")
