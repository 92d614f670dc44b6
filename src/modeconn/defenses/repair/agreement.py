"""How much of the tampered model's clean behaviour a candidate keeps, on held-out bonafide data.

With a few dozen bonafide images the held-out split holds ten: its accuracy moves in steps of
10 points and one image decides between candidates (on the held-out all-to-all and blend pairs
at 50 images, path repair won the choice by one image at 0.856 and 0.829 against distillation's
0.872 and 0.865). The tampered model is the most accurate model the user has on clean inputs;
its answers on the held-out images — ten distributions over the classes, not ten bits — say
how much of that a candidate kept. The choice breaks ties within the held-out accuracy's
resolution on it (:func:`~modeconn.defenses.repair.choice.choose_candidate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.data.prepare import PreparedData
from modeconn.defenses.repair.choice import HOLDOUT_KL
from modeconn.layout import fast_layout


@torch.no_grad()
def _log_probs(model: nn.Module, data: PreparedData, device: torch.device) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with fast_layout(model, device):
        parts = [
            F.log_softmax(model(x.to(device)), dim=1).cpu()
            for x, _ in data.eval_loader("bonafide_holdout", device=device)
        ]
    model.train(was_training)
    return torch.cat(parts)


def tampered_divergence(
    model: nn.Module,
    tampered: Sequence[nn.Module],
    data: PreparedData,
    device: torch.device,
) -> dict[str, float]:
    """``{HOLDOUT_KL: KL(p̄ ‖ q)}`` averaged over the held-out bonafide images, where p̄ is the
    mean of the tampered models' softmax answers and q the candidate's; empty without held-out
    images."""
    if len(data.indices("bonafide_holdout")) == 0:
        return {}
    mean = torch.stack([_log_probs(m, data, device).exp() for m in tampered]).mean(0)
    q = _log_probs(model, data, device)
    kl = (mean * (mean.clamp_min(1e-12).log() - q)).sum(1).mean()
    return {HOLDOUT_KL: float(kl)}
