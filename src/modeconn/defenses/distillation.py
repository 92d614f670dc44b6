"""Unlearning by distillation from the tampered model itself: keep what it knows, drop the trigger.

NC-unlearning fine-tunes on bonafide images with their hard labels, a share of them stamped with
the scan's synthesized triggers. With a few hundred images or fewer, the hard labels are all the
model is told, and it forgets much of what it learnt from the attacker's far larger training set
(patch pair of the demo, 50 bonafide images: 0.763 against 0.907 tampered). Here the tampered
model is the teacher instead: on a clean image its answer is still good (the backdoor only fires
on the trigger), so every image — clean or stamped — is taught the teacher's softened answer on
the *clean* version of that image:

    loss = T² · KL(softmax(f_θ(stamp(x))/T) ‖ softmax(f_bd(x)/T)) + ce · CE(f_θ(stamp(x)), y)

The stamped share follows the unlearning rule (:func:`modeconn.defenses.unlearning.
unlearning_transform`), and every batch is first mixed (CutMix by default): the teacher labels
every mixed image, so a few dozen images give a new set of targets at every step (probe:
``benchmarks/probes/small_data.py``); the hard-label term is weighted by each label's share.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.data.mixing import MIXES, mix_batch
from modeconn.defenses.scan import ScanResult
from modeconn.defenses.unlearning import UnlearningConfig, unlearning_classes, unlearning_transform
from modeconn.layout import wants_channels_last
from modeconn.training import Objective

#: Who teaches: the tampered model A alone, or A and B (their answers averaged) when two are given.
TEACHERS = ("tampered", "both")


@dataclass(frozen=True)
class DistillationConfig:
    """The distillation loss (``temperature``, ``ce``), the fewest optimiser steps it takes, how
    batches are mixed (``mix``, ``mix_alpha``; :mod:`modeconn.data.mixing`) and how strongly the
    scan's triggers are stamped (``strength``; NC-unlearning stamps at
    ``UnlearningConfig.strength``).

    Chosen on the demo's patch model A, seed 0 (probe ``benchmarks/probes/small_data.py``, test
    accuracy with tampered 0.907): 20 epochs are 20 steps at 50 images, too few to move the
    model, so at least ``min_steps`` = 1,000; CutMix lets the teacher label a new image at every
    step (250 images: 0.852 unmixed at 300 steps, 0.864 mixup, 0.873 CutMix, 0.885 CutMix at
    1,000 steps); triggers at their found strength (1.0) cost less accuracy than doubled masks
    (0.892 against 0.885) and kept ASR at 0.020. ``method="auto"`` builds it at every budget
    (``auto_below``: only below that many bonafide images; None: always). Unguarded, at 2,500
    images it came back under the retuning attack (ASR 0.107); with the guard of
    :class:`DistillationUnlearning` it kept 0.903 / ASR 0.010 / retuning 0.029 on the patch model
    (one-model) and 0.903 / 0.006 / 0.015 and 0.900 / 0.039 / 0.061 on the held-out all-to-all
    and blend pairs, against 0.884–0.899 for path repair and NC-unlearning.

    ``students``: below ``students_below`` bonafide images, that many students are distilled
    with consecutive seeds and their weights averaged (:mod:`modeconn.connectivity.averaging`:
    all start from A, so they share its basin). On the held-out all-to-all pair at 250 images
    (tampered 0.907) one student gave 0.886 / ASR 0.010 / retuning 0.044 with either seed, their
    average 0.888 / 0.010 / 0.046; no single-student setting reached that without a retuning
    ASR above the clean lenet's by more than 0.05 (half the learning rate 0.891 / 0.017 /
    0.138, no hard-label term 0.887 / 0.010 / 0.058, twice the steps 0.884, T = 2 0.886, A and
    B as teachers — ``teachers="both"`` — 0.885 / 0.008 / 0.034). On the patch and blend pairs
    at 250 the average matched one student (0.898 / 0.015 / 0.039 against 0.897 / 0.017 /
    0.039; 0.898 / 0.010 / 0.026 against 0.898 / 0.010 / 0.025). At 2,500 images one student is
    within a point already and a second would double the repair's longest stage.
    """

    temperature: float = 4.0
    ce: float = 0.2
    min_steps: int = 1000
    mix: str = "cutmix"
    mix_alpha: float = 1.0
    strength: float = 1.0
    auto_below: int | None = None
    teachers: str = "tampered"
    students: int = 2
    students_below: int | None = 1000

    def student_count(self, images: int) -> int:
        """How many students are distilled (seeds ``seed``, ``seed + 1``, …) and averaged in
        weight space: ``students`` below ``students_below`` bonafide images (None: at every
        budget), else one.

        >>> DistillationConfig().student_count(250), DistillationConfig().student_count(2000)
        (2, 1)
        """
        below = self.students_below
        return self.students if below is None or images < below else 1

    def passes(self, epochs: int, images: int, batch_size: int) -> int:
        """How many passes over ``images`` one epoch makes so that ``epochs`` epochs take at
        least ``min_steps`` steps in batches of ``min(batch_size, images)``: 1,000 steps over
        50 images as 1,000 one-step epochs spent a third of their time on per-epoch work (the
        resumable state written after each). The passes are shuffled together and the last
        batch may be partial, so ``p`` passes make ``ceil(p·images/batch)`` steps: the fewest
        ``p`` that reach the steps an epoch needs.

        >>> cfg = DistillationConfig()
        >>> cfg.passes(20, 50, 128), cfg.passes(20, 250, 128), cfg.passes(20, 2000, 128)
        (50, 26, 4)
        >>> DistillationConfig(min_steps=320).passes(20, 2000, 128)  # 16 batches of 2,000
        1
        """
        batch = max(1, min(batch_size, images))
        steps_per_epoch = math.ceil(self.min_steps / max(epochs, 1))
        if steps_per_epoch <= 1:
            return 1
        return (steps_per_epoch - 1) * batch // max(images, 1) + 1

    def validate(self) -> None:
        if self.mix not in MIXES or self.mix_alpha <= 0:
            raise ValueError(f"distillation mix must be one of {MIXES} with alpha > 0")
        if self.students < 1 or (self.students_below is not None and self.students_below < 0):
            raise ValueError(
                f"distillation needs students ≥ 1 and students_below ≥ 0, got {self.students} "
                f"and {self.students_below}"
            )
        if self.teachers not in TEACHERS:
            raise ValueError(f"distillation teachers must be one of {TEACHERS}")
        if self.auto_below is not None and self.auto_below < 0:
            raise ValueError(f"distillation auto_below must be ≥ 0, got {self.auto_below}")
        if self.strength <= 0:
            raise ValueError(f"distillation needs trigger strength > 0, got {self.strength}")
        if self.temperature <= 0 or self.ce < 0 or self.min_steps < 0:
            raise ValueError(
                "distillation needs temperature > 0, ce ≥ 0 and min_steps ≥ 0, got "
                f"{self.temperature}, {self.ce} and {self.min_steps}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DistillationUnlearning(Objective):
    """The loss above; ``stamp(x, y) -> (x', y)`` stamps part of a batch (the unlearning
    transform), ``teacher`` is a frozen copy of the tampered model."""

    def __init__(
        self,
        teacher: nn.Module | Sequence[nn.Module],
        stamp,
        temperature: float = 4.0,
        ce: float = 0.2,
        mix: str = "none",
        mix_alpha: float = 1.0,
        seed: int = 0,
        guarded: Sequence[int] = (),
    ) -> None:
        if temperature <= 0 or ce < 0:
            raise ValueError(f"need temperature > 0 and ce ≥ 0, got {temperature} and {ce}")
        self.teachers = [teacher] if isinstance(teacher, nn.Module) else list(teacher)
        for model in self.teachers:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            if wants_channels_last(model, next(model.parameters(), torch.empty(0)).device):
                # a frozen private copy, never saved: its answers run in the faster layout
                model.to(memory_format=torch.channels_last)
        self.stamp = stamp
        self.temperature = temperature
        self.ce = ce
        self.mix, self.mix_alpha, self.seed = mix, mix_alpha, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.guarded = torch.tensor(sorted(guarded), dtype=torch.long)

    def start_epoch(self, epoch: int, model: nn.Module) -> None:
        """Mixing draws are a function of (seed, epoch), so a resumed run mixes the same."""
        self.generator.manual_seed(self.seed * 100_003 + epoch)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix the clean batch, stamp part of it, then match :meth:`targets` on the mixed
        images; the hard-label term is weighted by each label's share of the mix."""
        t = self.temperature
        with torch.no_grad():
            clean = self.answer(x)
        x, partner, lam = mix_batch(x, self.mix, self.mix_alpha, self.generator)
        soft = self.targets(x, lam * clean + (1 - lam) * clean[partner])
        stamped, _ = self.stamp(x.clone(), y)
        logits = model(stamped)
        kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean")
        hard = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[partner])
        return kd * t * t + self.ce * hard, logits

    @torch.no_grad()
    def answer(self, x: torch.Tensor) -> torch.Tensor:
        """The teachers' softened answer on ``x``: their probabilities at temperature T,
        averaged (one teacher: its own)."""
        probs = [F.softmax(teacher(x) / self.temperature, dim=1) for teacher in self.teachers]
        return torch.stack(probs).mean(0)

    @torch.no_grad()
    def targets(self, mixed: torch.Tensor, label_mix: torch.Tensor) -> torch.Tensor:
        """The teacher's softened answer on each mixed image, unless it names a ``guarded``
        class (every class when none is) other than ``label_mix``'s (the mix of its answers on
        the two clean images): then ``label_mix``.

        A mixed image is new to the teacher, and a backdoored model tends to send unfamiliar
        inputs — a CutMix box's hard edge in a corner — to its target: on the tests' 8×8 digits
        model, distilling on the teacher's answers kept ASR at 0.65 (0.04 with every class
        guarded, 0.04 unmixed). Guarding every class costs accuracy on the demo's patch model
        (0.874 against 0.892 at 250 images, 0.829 against 0.879 at 50), so the repair guards the
        scan's flagged classes, the suspected targets, when it has any.
        """
        if self.mix == "none":
            return label_mix
        answer = self.answer(mixed)
        named = answer.argmax(1)
        odd = named != label_mix.argmax(1)
        if self.guarded.numel():
            odd &= torch.isin(named, self.guarded.to(named.device))
        return torch.where(odd[:, None], label_mix, answer)


def distillation_objective(
    teacher: nn.Module | Sequence[nn.Module],
    scans: Sequence[ScanResult],
    unlearning: UnlearningConfig,
    config: DistillationConfig,
    seed: int,
) -> DistillationUnlearning:
    """The objective of :class:`DistillationConfig` ``config`` for frozen copies of ``teacher``
    (one model, or several whose answers are averaged): the scans' triggers stamped by the
    unlearning rule at ``config.strength``, the classes that rule stamps guarded on mixed
    images."""
    stamping = replace(unlearning, strength=config.strength)
    teachers = [teacher] if isinstance(teacher, nn.Module) else list(teacher)
    return DistillationUnlearning(
        [copy.deepcopy(t) for t in teachers],
        unlearning_transform(scans, stamping),
        config.temperature,
        config.ce,
        config.mix,
        config.mix_alpha,
        seed,
        guarded=unlearning_classes(scans, unlearning) or (),
    )


__all__ = ["DistillationConfig", "DistillationUnlearning", "distillation_objective"]
