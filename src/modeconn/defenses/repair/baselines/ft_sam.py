"""Baseline ``FT-SAM``: the tampered model fine-tuned on the bonafide data with sharpness-aware
steps (``config.ft_sam``, :mod:`modeconn.defenses.ft_sam`)."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.ft_sam import ft_sam_objective
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class FTSAM:
    name: ClassVar[str] = "FT-SAM"
    may_not_apply: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        cfg, seed = context.config.ft_sam, context.config.seed
        budget = cfg.train_config(seed)
        model = fine_tune(
            context.tampered.model,
            context.data.train_loader(cfg.batch_size, split="bonafide", device=context.device),
            budget,
            device=context.device,
            progress=context.progress,
            objective=ft_sam_objective(cfg),
            description="FT-SAM",
            run=context.stage("ft_sam", budget),
        )
        kind = "adaptive SAM" if cfg.adaptive else "SAM"
        return Built(model, f"{cfg.epochs} epochs on bonafide, {kind} ρ={cfg.rho}")
