"""FST, Feature Shift Tuning (Min et al., NeurIPS 2023): a fine-tuning baseline that moves the
features away from the backdoored ones.

Plain fine-tuning on clean data barely changes a backdoored model's features when the poisoning
rate is low: the clean and the poisoned features stay entangled and the backdoor survives. FST
re-initialises the linear head and fine-tunes the whole network on bonafide data with an extra
term that pushes the new head away from the original one,

    CE(f(x), y) + α·⟨w, w_ori⟩,

while keeping the head bounded, ‖w‖ ≤ ‖w_ori‖ (after every optimiser step a head longer than the
original is scaled back onto that sphere; without the bound the inner product would be minimised
by an ever longer head). To lower the penalty the head must turn away from w_ori, and the
features follow it away from the directions the backdoor used.

The training goes through the one training loop: the penalty is an :class:`Objective`'s loss and
the projection its ``after_step`` hook.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.defenses.baselines import fine_tune
from modeconn.distributed import unwrap
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models import last_linear_name
from modeconn.training import BatchSource, Objective, TrainConfig, TrainingRun, cosine_sgd


@dataclass(frozen=True)
class FSTConfig:
    """FST's optimisation, scaled to small bonafide sets.

    The paper fine-tunes CIFAR-10 models for 10–20 epochs at lr 0.01 with α around 0.1–0.2; the
    defaults give FST the repair's fine-tuning budget (20 epochs, lr 0.01, cosine) and α = 0.2.
    """

    epochs: int = 20
    lr: float = 0.01
    alpha: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128

    def validate(self) -> None:
        """Reject settings that cannot work, with one clear line."""
        if self.alpha < 0:
            raise InvalidArgument(None, f"FST's alpha must be non-negative, got {self.alpha}")

    def train_config(self, seed: int) -> TrainConfig:
        """The training-loop settings of one FST run."""
        return cosine_sgd(self, seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeatureShiftObjective(Objective):
    """Cross-entropy plus ``alpha·⟨w_head, w_original⟩``; the head's norm is projected back to at
    most ``‖w_original‖`` after every step."""

    def __init__(self, head_weight: str, original: torch.Tensor, alpha: float) -> None:
        self.head_weight = head_weight
        self.original = original.detach().clone()
        self.max_norm = self.original.norm()
        self.alpha = alpha

    def _head(self, model: nn.Module) -> nn.Parameter:
        return unwrap(model).get_parameter(self.head_weight)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the batch plus the feature-shift penalty."""
        logits = model(x)
        head = self._head(model)
        penalty = (head * self.original.to(head.device)).sum()
        return F.cross_entropy(logits, y) + self.alpha * penalty, logits

    def after_step(self, model: nn.Module) -> None:
        """Scale the head back onto the ball ‖w‖ ≤ ‖w_original‖."""
        head = self._head(model)
        with torch.no_grad():
            norm = head.norm()
            bound = self.max_norm.to(head.device)
            if norm > bound:
                head.mul_(bound / norm)


def reinitialise_head(model: nn.Module, seed: int) -> str:
    """Re-initialise ``model``'s last ``nn.Linear`` in place (seeded); return its weight's name."""
    try:
        weight_name = last_linear_name(model)
    except ModeconnError:
        raise ModeconnError(
            "FST needs a linear output layer (nn.Linear) to re-initialise; the model has none"
        ) from None
    head = model.get_submodule(weight_name.rpartition(".")[0])
    torch.manual_seed(seed)
    head.reset_parameters()
    return weight_name


def feature_shift_tuning(
    model: nn.Module,
    loader: BatchSource,
    config: FSTConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    run: TrainingRun | None = None,
) -> nn.Module:
    """FST: a copy of ``model`` with a re-initialised head, fine-tuned on ``loader`` (bonafide
    data) with the feature-shift penalty; ``model`` itself is left untouched.

    Raises :class:`ModeconnError` when the model has no ``nn.Linear`` head.
    """
    config.validate()
    start = copy.deepcopy(model)
    head_weight = reinitialise_head(start, seed)
    original = model.get_parameter(head_weight)
    objective = FeatureShiftObjective(head_weight, original, config.alpha)
    return fine_tune(
        start,
        loader,
        config.train_config(seed),
        device=device,
        progress=progress,
        objective=objective,
        description="FST",
        run=run,
    )
