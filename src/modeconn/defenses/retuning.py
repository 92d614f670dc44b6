"""Post-purification robustness: the retuning attack (Min et al., NeurIPS 2024).

A defence that only *suppresses* a backdoor leaves it one short fine-tuning away: fine-tune the
repaired model for a few epochs on a small set that carries a few poisoned samples, and a
suppressed backdoor comes back where a removed one has to be learnt anew. The same attack on a
model trained on clean data shows how much of the ASR the small set alone teaches — the figure
to compare with.

The default is the anchor's setting (Min et al.'s ``fine_tune/ft_poison.py``): ``size`` = 1,000
clean training images of which ``poisoned`` = 5 are replaced by triggered ones carrying the
attacker's label, 5 epochs of SGD at lr 0.01, momentum 0.9, no weight decay, batch 128.
``sweep`` adds stronger (or weaker) attacks, each reported under its own key
(:func:`retuning_key`). A stronger attack re-teaches the backdoor to any model, clean or not,
and then measures nothing: compare with a clean model under the same attack. The figure is
evaluation only: it needs the true trigger and is never used to choose a repair.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from modeconn.attacks.backdoor import (
    PoisonTransform,
    TriggerSpec,
    backdoor_metrics,
    poison_transform,
    target_labels,
)
from modeconn.data import TensorLoader
from modeconn.data.prepare import PreparedData
from modeconn.defenses.baselines import fine_tune
from modeconn.errors import InvalidArgument
from modeconn.training import TrainConfig

#: The summary key of the default strength's ASR after the attack.
RETUNING_ASR = "retuning_asr"


@dataclass(frozen=True)
class RetuningConfig:
    """The retuning attack's set and optimisation (the anchor's defaults; see the module doc).

    ``poisoned`` of the ``size`` images carry the trigger (the default strength, reported as
    ``retuning_asr``); each count in ``sweep`` is a further attack of its own, reported as
    ``retuning_asr@N``.
    """

    size: int = 1000
    poisoned: int = 5
    sweep: tuple[int, ...] = ()
    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 128
    seed: int = 0

    @property
    def strengths(self) -> tuple[int, ...]:
        """Every poisoned count to measure, the default first, each once."""
        return tuple(dict.fromkeys((self.poisoned, *self.sweep)))

    def validate(self) -> None:
        if self.size < 1:
            raise InvalidArgument("size", f"the retuning set needs images, got size {self.size}")
        for count in self.strengths:
            if not 1 <= count <= self.size:
                raise InvalidArgument(
                    "poisoned",
                    f"poisoned retuning images must lie in [1, {self.size}], got {count}",
                )

    def train_config(self) -> TrainConfig:
        """The anchor's optimisation: SGD with momentum 0.9, no weight decay, constant lr."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=0.9,
            weight_decay=0.0,
            schedule="constant",
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retuning_key(poisoned: int, config: RetuningConfig) -> str:
    """The figure's key: ``retuning_asr`` for the default strength, else ``retuning_asr@N``."""
    return RETUNING_ASR if poisoned == config.poisoned else f"{RETUNING_ASR}@{poisoned}"


def retuning_indices(data: PreparedData, size: int, seed: int) -> torch.Tensor:
    """The attacker's ``size`` clean images: a seeded subset of the *train* split.

    The attacker fine-tunes on data of their own, not on the defender's bonafide budget (which
    may be 50 images). The train split holds the bonafide images too, so it is never the smaller
    of the two; a train split of fewer than ``size`` images is used whole.
    """
    pool = data.indices("train")
    gen = torch.Generator().manual_seed(seed + 104_729)
    return pool[torch.randperm(len(pool), generator=gen)[: min(size, len(pool))]]


def retuning_transform(
    data: PreparedData, subset: torch.Tensor, spec: TriggerSpec, poisoned: int, seed: int
) -> PoisonTransform:
    """The batch transform that stamps exactly ``poisoned`` images of ``subset`` (seeded) with
    the trigger and the attacker's label.

    Only images the backdoor relabels are eligible (all-to-one: not the target class), as in the
    anchor, whose triggered images come from the poisoned training set: a target-class image
    with the trigger teaches nothing. The draws are nested: the 5 poisoned of one seed are among
    its 20.
    """
    _, labels = data.tensors("train")
    own = labels[subset]
    eligible = subset[target_labels(own, spec, data.info.num_classes) != own]
    if not 1 <= poisoned <= len(eligible):
        raise InvalidArgument(
            "poisoned",
            f"{poisoned} poisoned retuning images asked for, {len(eligible)} can carry the trigger",
        )
    rate = replace(spec, rate=poisoned / len(eligible))  # round(rate·|eligible|) = poisoned
    return poison_transform(rate, data.info.num_classes, seed=seed, pool=eligible)


def retuning_attack_asr(
    model: nn.Module,
    data: PreparedData,
    spec: TriggerSpec,
    config: RetuningConfig | None = None,
    device: torch.device | str = "cpu",
    poisoned: int | None = None,
) -> float:
    """ASR on the test split of ``model`` after the retuning attack with ``poisoned`` triggered
    images (default: ``config.poisoned``); ``model`` is not changed."""
    config = config or RetuningConfig()
    count = config.poisoned if poisoned is None else poisoned
    subset = retuning_indices(data, config.size, config.seed)
    images, labels = data.tensors("train")
    loader = TensorLoader(
        images,
        labels,
        indices=subset,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        device=device,
        transform=retuning_transform(data, subset, spec, count, config.seed),
    )
    cfg = config.train_config()
    retuned = fine_tune(copy.deepcopy(model), loader, cfg, device=device, description="retune")
    return backdoor_metrics(retuned, data.eval_loader("test", device=device), spec, device)["asr"]


def retuning_figures(
    model: nn.Module,
    data: PreparedData,
    spec: TriggerSpec,
    config: RetuningConfig | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """The ASR after the attack at every strength of ``config``, under :func:`retuning_key`."""
    config = config or RetuningConfig()
    return {
        retuning_key(n, config): retuning_attack_asr(model, data, spec, config, device, n)
        for n in config.strengths
    }


__all__ = [
    "RETUNING_ASR",
    "RetuningConfig",
    "retuning_attack_asr",
    "retuning_figures",
    "retuning_indices",
    "retuning_key",
    "retuning_transform",
]
