"""The training budgets the trained baselines share, derived from the repair's settings."""

from __future__ import annotations

import dataclasses

from torch import nn

from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.repair.context import RepairContext
from modeconn.training import Objective, TrainConfig

#: Learning rate of training from scratch (a fresh model needs a higher one than fine-tuning).
SCRATCH_LR = 0.05


def tune_on_bonafide(
    context: RepairContext,
    budget: TrainConfig,
    objective: Objective,
    stage: str,
    description: str,
) -> nn.Module:
    """The tampered model trained on the bonafide batches under ``objective`` within ``budget``,
    resumable in stage ``stage`` (the shape of every objective-only baseline: FT-SAM, SAU)."""
    return fine_tune(
        context.tampered.model,
        context.data.train_loader(budget.batch_size, split="bonafide", device=context.device),
        budget,
        device=context.device,
        progress=context.progress,
        objective=objective,
        description=description,
        run=context.stage(stage, budget),
    )


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
