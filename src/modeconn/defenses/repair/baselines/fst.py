"""Baseline ``FST`` (feature shift tuning): the head re-initialised and the model tuned so that
its features move away from the tampered ones (``config.fst``). Not applicable to a model
without a linear head."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.fst import feature_shift_tuning
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class FST:
    name: ClassVar[str] = "FST"
    may_not_apply: ClassVar[bool] = True

    def build(self, context: RepairContext) -> Built:
        cfg, seed = context.config.fst, context.config.seed
        model = feature_shift_tuning(
            context.tampered.model,
            context.data.train_loader(cfg.batch_size, split="bonafide", device=context.device),
            cfg,
            seed=seed,
            device=context.device,
            progress=context.progress,
            run=context.stage("fst", cfg.train_config(seed)),
        )
        return Built(model, f"head re-initialised, {cfg.epochs} epochs, α={cfg.alpha}")
