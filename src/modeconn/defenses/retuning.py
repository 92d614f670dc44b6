"""Post-purification robustness: the retuning attack (Min et al., NeurIPS 2024).

A defence that only *suppresses* a backdoor leaves it one short fine-tuning away: fine-tune the
repaired model for a few epochs on a small set that carries some poisoned samples, and a
suppressed backdoor comes back where a removed one has to be learnt anew. A model trained from
scratch on clean data, retuned the same way, shows how much of the ASR the small set alone
teaches — the floor to compare with.

The retuning set here: ``size`` bonafide training images (default 10% of a 2,500-sample budget),
a ``rate`` fraction of them (default 10%, the poisoning rate of the demo's backdoors) stamped
with the attacker's trigger and label, ``epochs`` epochs of SGD at ``lr``. The figure is
evaluation only: it needs the true trigger and is never used to choose a repair.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from modeconn.attacks.backdoor import TriggerSpec, backdoor_metrics, poison_transform
from modeconn.data import TensorLoader
from modeconn.data.prepare import PreparedData
from modeconn.defenses.baselines import fine_tune
from modeconn.training import TrainConfig


@dataclass(frozen=True)
class RetuningConfig:
    """The retuning attack's set and optimisation (documented defaults; see the module doc)."""

    size: int = 250
    rate: float = 0.1
    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 32
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retuning_indices(data: PreparedData, size: int, seed: int) -> torch.Tensor:
    """A seeded subset of the bonafide split (the attacker's retuning images)."""
    pool = data.indices("bonafide")
    gen = torch.Generator().manual_seed(seed + 104_729)
    return pool[torch.randperm(len(pool), generator=gen)[: min(size, len(pool))]]


def retuning_attack_asr(
    model: nn.Module,
    data: PreparedData,
    spec: TriggerSpec,
    config: RetuningConfig | None = None,
    device: torch.device | str = "cpu",
) -> float:
    """ASR on the test split of ``model`` after the retuning attack (``model`` is not changed)."""
    config = config or RetuningConfig()
    subset = retuning_indices(data, config.size, config.seed)
    transform = poison_transform(
        replace(spec, rate=config.rate), data.info.num_classes, seed=config.seed, pool=subset
    )
    images, labels = data.tensors("bonafide")
    loader = TensorLoader(
        images,
        labels,
        indices=subset,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        device=device,
        transform=transform,
    )
    cfg = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        momentum=0.9,
        weight_decay=0.0,
        schedule="constant",
        seed=config.seed,
    )
    retuned = fine_tune(copy.deepcopy(model), loader, cfg, device=device, description="retune")
    return backdoor_metrics(retuned, data.eval_loader("test", device=device), spec, device)["asr"]


__all__ = ["RetuningConfig", "retuning_attack_asr"]
