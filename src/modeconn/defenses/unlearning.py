"""Trigger unlearning (NC-unlearning, Wang et al. 2019): train on bonafide images of which a
fraction carries a synthesized trigger, with their true labels.

The triggers come from a backdoor scan (:mod:`modeconn.defenses.scan`) of the model being
repaired. Only the flagged classes' triggers are stamped — unlearning every class's trigger is
universal adversarial training, which costs clean accuracy for nothing when there is no backdoor
(measured on Fashion-MNIST: 0.875 against 0.903 for the flagged class only, README); when no class
is flagged, every class's trigger is used, which is the only choice that needs no verdict (an
all-to-all backdoor flags no single class). Triggers are stamped ``strength`` times stronger than
synthesized (see :meth:`TriggerSet.scaled`).

The same loader transform serves a single model (the NC-unlearning baseline) and a curve
(unlearning along the path): both go through the one training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from modeconn.data import TensorLoader
from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.scan import ScanResult, UnlearningTransform
from modeconn.experiment import PreparedData
from modeconn.rundir import RunDir
from modeconn.training import TrainConfig


@dataclass
class UnlearningConfig:
    """How much of each batch is stamped, how strongly, and the optimisation."""

    rate: float = 0.3
    strength: float = 2.0
    epochs: int = 20
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 1e-4

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=0.9,
            weight_decay=self.weight_decay,
            schedule="cosine",
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unlearning_classes(scans: Sequence[ScanResult]) -> list[int] | None:
    """The classes whose triggers are unlearnt: the union of the flagged ones, or None (all)."""
    flagged = sorted({k for scan in scans for k in scan.flagged_classes})
    return flagged or None


def unlearning_transform(
    scans: Sequence[ScanResult], config: UnlearningConfig
) -> UnlearningTransform:
    """The batch transform stamping the scans' triggers (every kind, strengthened)."""
    triggers = [t.scaled(config.strength) for scan in scans for t in scan.triggers.values()]
    return UnlearningTransform(triggers, config.rate, unlearning_classes(scans))


def unlearning_loader(
    data: PreparedData,
    scans: Sequence[ScanResult],
    config: UnlearningConfig,
    seed: int,
    device: torch.device | str = "cpu",
) -> TensorLoader:
    """Shuffled bonafide batches with the scans' triggers stamped on a ``rate`` fraction."""
    return data.train_loader(
        config.batch_size,
        split="bonafide",
        seed=seed,
        augment=False,
        transform=unlearning_transform(scans, config),
        device=device,
    )


def unlearn(
    model: nn.Module,
    data: PreparedData,
    scans: Sequence[ScanResult],
    config: UnlearningConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    run: RunDir | None = None,
    description: str = "unlearning",
) -> nn.Module:
    """NC-unlearning: a copy of ``model`` fine-tuned on stamped bonafide batches."""
    loader = unlearning_loader(data, scans, config, seed, device)
    return fine_tune(
        model,
        loader,
        config.train_config(seed),
        device=device,
        progress=progress,
        description=description,
        run=run,
    )


__all__ = ["UnlearningConfig", "unlearn", "unlearning_classes", "unlearning_loader"]
