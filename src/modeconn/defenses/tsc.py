"""TSC, Two-stage Symmetry Connectivity (Peng et al., ICML 2025), for any model with a
permutation spec.

A backdoored model θ and a copy of it with its hidden units permuted, π(θ), compute the same
function but sit in different places of weight space. TSC exploits that the backdoor is a
narrow feature of θ's basin:

1. **Stage 1 (away).** Permute θ to be *maximally misaligned* with itself (the permutation
   farthest from the identity by weight matching), train a quadratic Bezier curve θ → π(θ) on
   bonafide data with both endpoints fixed, and take θ₁ = the curve at ``t``. The curve keeps
   the bonafide loss low but has no reason to keep the backdoor, which lives in directions the
   bonafide data never constrains.
2. **Stage 2 (back).** Permute θ to be *aligned* with θ₁, train a curve from that to θ₁,
   and take θ₂ = the curve at ``t``: back near the original basin (accuracy recovers) with the
   backdoor's directions still scrambled.

``rounds`` repeats both stages from θ₂ (the reference code's default is 3 rounds of 200 epochs
at lr 0.02 on 5% of CIFAR-10; ``t`` = 0.4). The curves train through the one curve trainer, so
``loader`` may be plain bonafide batches (the paper) or the unlearning batches stamped with a
scan's triggers (:mod:`modeconn.defenses.unlearning`) — the combination this module was built
to measure. Permutations come from Git Re-Basin weight matching
(:func:`~modeconn.connectivity.alignment.weight_matching`); the paper matches activations, which
our alignment measurements found less exact for aligning (see ``modeconn align``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from modeconn.connectivity.alignment import weight_distance, weight_matching
from modeconn.connectivity.train import fit_curve
from modeconn.errors import InvalidArgument
from modeconn.models.permutation import apply_permutation, permutation_spec
from modeconn.training import BatchSource, TrainConfig, TrainingRun


def _tsc_curve() -> TrainConfig:
    return TrainConfig(
        epochs=40, batch_size=128, lr=0.02, momentum=0.9, weight_decay=5e-4, schedule="cosine"
    )


@dataclass(frozen=True)
class TSCConfig:
    """TSC's settings: the reference code's t = 0.4 and lr 0.02, one round of 40 epochs per
    stage (the reference: three rounds of 200 on CIFAR-10, too long for 2,000 images on a CPU)."""

    t: float = 0.4
    rounds: int = 1
    curve: TrainConfig = field(default_factory=_tsc_curve)
    #: In a repair: train the curves on the unlearning batches (stamped with the scan's
    #: triggers) instead of plain bonafide batches (the paper).
    stamped: bool = True

    def validate(self) -> None:
        """Reject settings that cannot work, with one clear line."""
        if not 0.0 < self.t < 1.0:
            raise InvalidArgument(None, f"TSC's t must be strictly between 0 and 1, got {self.t}")
        if self.rounds < 1:
            raise InvalidArgument(None, f"TSC needs at least one round, got {self.rounds}")
        self.curve.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


StageFn = Callable[[str, TrainConfig], "TrainingRun | None"]


def symmetry_connectivity(
    model: nn.Module,
    loader: BatchSource,
    bn_loader: Iterable[Any],
    config: TSCConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    stage: StageFn | None = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """TSC on ``model`` (left untouched): the purified model θ₂ of the last round and, per stage,
    the weight distances that show where it went (``distance_from_start``: ‖θ_stage − θ‖ over
    ‖θ‖; ``misalignment``: ‖π(θ) − θ‖ over ‖θ‖ for the stage-1 permutation).

    ``loader`` trains every curve; ``bn_loader`` recomputes BatchNorm statistics at the chosen
    points; ``stage(name, config)`` (optional) gives each curve a run directory for resumable
    state. Raises :class:`ModeconnError` for a model without a permutation spec.
    """
    config.validate()
    spec = permutation_spec(model)
    cfg = dataclasses.replace(config.curve, seed=seed)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    norm = weight_distance(start, {k: torch.zeros_like(v) for k, v in start.items()})
    current = model
    log: list[dict[str, float]] = []

    def point(base: nn.Module, state_a: dict, state_b: dict, name: str) -> nn.Module:
        return _point(
            base, state_a, state_b, loader, bn_loader, cfg, config.t, device, progress, stage, name
        )

    for r in range(config.rounds):
        theta = {k: v.detach().clone() for k, v in current.state_dict().items()}
        away = weight_matching(spec, theta, theta, misalign=True, seed=seed + r)
        far = apply_permutation(spec, theta, away)
        first = point(current, theta, far, f"tsc_r{r}_away")
        s1 = first.state_dict()
        back = apply_permutation(spec, theta, weight_matching(spec, s1, theta, seed=seed + r))
        second = point(current, back, s1, f"tsc_r{r}_back")
        log.append(
            {
                "round": float(r),
                "misalignment": weight_distance(far, theta) / norm,
                "stage1_distance_from_start": weight_distance(s1, start) / norm,
                "stage2_distance_from_start": weight_distance(second.state_dict(), start) / norm,
            }
        )
        current = second
    return current.eval(), log


def _point(
    base: nn.Module,
    state_a: dict[str, torch.Tensor],
    state_b: dict[str, torch.Tensor],
    loader: BatchSource,
    bn_loader: Iterable[Any],
    cfg: TrainConfig,
    t: float,
    device: torch.device | str,
    progress: bool,
    stage: StageFn | None,
    name: str,
) -> nn.Module:
    """Train a quadratic Bezier curve from ``state_a`` to ``state_b`` and return its point at t."""
    curve = fit_curve(
        base,
        state_a,
        state_b,
        loader,
        cfg,
        kind="bezier",
        num_bends=3,
        init="linear",
        run=stage(name, cfg) if stage is not None else None,
        device=device,
        progress=progress,
    )
    return curve.model_at(t, bn_loader=bn_loader, device=device).eval()
