"""The training budgets the trained baselines share, derived from the repair's settings."""

from __future__ import annotations

import dataclasses

from modeconn.defenses.repair.context import RepairContext
from modeconn.training import TrainConfig

#: Learning rate of training from scratch (a fresh model needs a higher one than fine-tuning).
SCRATCH_LR = 0.05


def unlearning_budget(context: RepairContext) -> TrainConfig:
    """Fine-tuning and fine-pruning get NC-unlearning's budget (fine-tuning is NC-unlearning
    without the stamps: the ablation of the scan)."""
    return context.config.unlearning.train_config(context.config.seed)


def scratch_budget(context: RepairContext) -> TrainConfig:
    """Training from scratch gets ``scratch_epochs`` (at the unlearning budget it would be a straw
    man) at a higher learning rate."""
    return dataclasses.replace(
        unlearning_budget(context), epochs=context.config.scratch_epochs, lr=SCRATCH_LR
    )
