"""Trigger unlearning (NC-unlearning, Wang et al. 2019): train on bonafide images of which a
fraction carries a synthesized trigger, with their true labels.

The triggers come from a backdoor scan (:mod:`modeconn.defenses.scan`) of the model being
repaired, stamped ``strength`` times stronger than synthesized (see :meth:`TriggerSet.scaled`).
Which classes' triggers are stamped follows the scan's verdict:

- a *confident* verdict (a flagged class with anomaly index ≥ ``confident_index``, 4, and at
  least ``confident_ratio``, 2, times the scan's next-highest index): only the confidently
  flagged classes' triggers, on ``rate`` of each batch. Unlearning every class's
  trigger as well is universal adversarial training, which costs clean accuracy (Fashion-MNIST
  patch backdoor: 0.879 against 0.896, README); weakly flagged classes next to a confident one
  are classes with naturally small triggers (Fashion-MNIST's "bag"), and stamping them too
  dilutes the target's share (a patch model flagging 0 at 15 and two classes near 3: ASR 0.069
  with all three, see :func:`unlearning_classes`);
- a weak verdict (flags below 4) or none: the scans' *untargeted* triggers (one universal label
  flipper per kind and scan, see :func:`modeconn.defenses.scan.synthesize_triggers`) on
  ``untargeted_rate`` of each batch, and the flagged classes' triggers (if any) on ``rate``. An
  all-to-all backdoor flags no single class, and no class's targeted trigger resembles it (each
  class is the target of one other class only), but its trigger is exactly a small universal
  label flipper: on the demo's all-to-all pair (Fashion-MNIST) the untargeted masks were 3.9 and
  4.1 pixels against a median class trigger of 46–51, and unlearning them gave 0.895 / ASR 0.005
  against 0.908 tampered. The previous rule stamped every class's targeted trigger on a
  ``uniform_rate`` share instead — universal adversarial training, which removed the backdoor
  too but cost 4.4 points (0.865 / 0.032); adding that share to the flippers still cost 2.2
  (0.872 / 0.004), and on a warp model (whose target the scan misses) 1.2 for little gain
  (0.865 / 0.032 against 0.877 / 0.042). ``uniform_rate`` is used only for scans made without
  untargeted triggers (``ScanConfig(untargeted=False)``);
- nothing found (no class flagged, no label flipper): the *precaution* classes
  (:func:`precaution_classes`), whose evidence came within ``precaution_evidence`` (0.7) of the
  threshold, take the flagged classes' place. A class just under the threshold is the usual way a
  real target is missed: two held-out zoo backdoors sat at 0.99 of it (patch-lenet-23 on class 8,
  blend-lenet-22 on class 0, both the true target) and their repairs, unlearning the flippers
  alone, kept ASR 0.180 and 0.087; with the precaution 0.004 and 0.027. No clean zoo model came
  above 0.89, so on a clean model this stamps at most one class that carries no backdoor; the
  repair still says it could not verify the result. Once a label flipper is found the flippers
  are the finding, and a near class there is mostly "bag": on the all-to-all pair at 2,500
  images stamping class 8 as well took the returned model's retuning ASR from 0.025 to 0.080.
  Such a near class is not stamped but it is reported (:func:`near_classes_beside_flipper`):
  a held-out warp ResNet gave a label flipper and its true target at 0.83, and its repair kept
  ASR 0.098; the repair then says it could not verify the result.

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
from modeconn.data.prepare import PreparedData
from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.scan import ScanResult, UnlearningTransform
from modeconn.errors import InvalidArgument
from modeconn.training import Objective, TrainConfig, TrainingRun


@dataclass(frozen=True)
class UnlearningConfig:
    """How much of each batch is stamped, how strongly, and the optimisation.

    ``classes``: classes whose targeted triggers are stamped whatever the scans say (the user's
    choice, e.g. a near class the repair named beside a found label flipper), on top of the
    classes the rule picks.
    """

    rate: float = 0.3
    uniform_rate: float = 0.2
    untargeted_rate: float = 0.3
    confident_index: float = 4.0
    confident_ratio: float = 2.0
    precaution_evidence: float = 0.7
    classes: tuple[int, ...] = ()
    strength: float = 2.0
    epochs: int = 20
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 1e-4

    def validate(self, num_classes: int) -> None:
        """``classes`` must name classes of the model.

        >>> UnlearningConfig(classes=(10,)).validate(10)
        Traceback (most recent call last):
        ...
        modeconn.errors.InvalidArgument: class 10 to unlearn is not a class of the model (0–9)
        """
        for k in self.classes:
            if not 0 <= k < num_classes:
                raise InvalidArgument(
                    None,
                    f"class {k} to unlearn is not a class of the model (0–{num_classes - 1})",
                )

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


def confident_classes(scans: Sequence[ScanResult], config: UnlearningConfig) -> list[int]:
    """Flagged classes that stand out clearly enough to explain the backdoor alone: in some scan,
    the top class with index ≥ ``confident_index`` and at least ``confident_ratio`` times the
    next-highest index of that scan.

    The ratio is what tells an all-to-one target from an all-to-all backdoor's noise. Fashion-MNIST
    lenets: all-to-one targets 7.26 / 1.99, 3.98 / 0.55, 4.42 / 1.33, 6.54 / 1.58, 4.48 / 1.22
    (ratios 3.3–7.3); an all-to-all model flagged classes 8 and 6 at 4.43 / 3.61 (ratio 1.23),
    and unlearning class 8 alone left ASR 0.74 where the uniform part gives 0.034.
    """
    found: set[int] = set()
    for scan in scans:
        order = sorted(range(len(scan.anomaly_index)), key=lambda k: -scan.anomaly_index[k])
        top = order[0]
        second = scan.anomaly_index[order[1]] if len(order) > 1 else 0.0
        index = scan.anomaly_index[top]
        if (
            top in scan.flagged_classes
            and index >= config.confident_index
            and index >= config.confident_ratio * max(second, 0.0)
        ):
            found.add(top)
    return sorted(found)


def confident(scans: Sequence[ScanResult], config: UnlearningConfig) -> bool:
    """True when some flagged class is confident (see :func:`confident_classes`)."""
    return bool(confident_classes(scans, config))


def near_classes(scans: Sequence[ScanResult], config: UnlearningConfig) -> list[int]:
    """The classes no scan flags whose evidence reached ``precaution_evidence`` of the threshold
    in some scan (where they were not discounted as natural).

    >>> from modeconn.defenses.scan import ScanResult
    >>> near_classes([ScanResult({}, {}, [2.97, 0.5, 2.0], [], 3.0)], UnlearningConfig())
    [0]
    """
    flagged = {k for scan in scans for k in scan.flagged_classes}
    return sorted(
        {
            k
            for scan in scans
            for k, evidence in enumerate(scan.class_evidence)
            if evidence >= config.precaution_evidence
            and k not in scan.natural_classes
            and k not in flagged
        }
    )


def near_classes_beside_flipper(scans: Sequence[ScanResult], config: UnlearningConfig) -> list[int]:
    """When the scans found a label flipper and flagged no class: the :func:`near_classes`,
    which are not unlearnt (see the module doc) and may be a missed all-to-one target; else
    none."""
    if any(scan.flagged_classes for scan in scans):
        return []
    if not any(scan.untargeted_flagged for scan in scans):
        return []
    return [k for k in near_classes(scans, config) if k not in config.classes]


def precaution_classes(scans: Sequence[ScanResult], config: UnlearningConfig) -> list[int]:
    """When no scan finds a backdoor (no flagged class, no label flipper): the classes whose
    evidence (relative to the threshold, see :attr:`ScanResult.class_evidence`) reached
    ``precaution_evidence`` in some scan, skipping classes discounted as natural; else none.
    See the module doc for why.

    >>> from modeconn.defenses.scan import ScanResult
    >>> near = ScanResult({}, {}, [2.97, 0.5, 2.0], [], 3.0)
    >>> precaution_classes([near], UnlearningConfig())
    [0]
    """
    if any(scan.backdoor_found for scan in scans):
        return []
    return near_classes(scans, config)


def unlearning_classes(scans: Sequence[ScanResult], config: UnlearningConfig) -> list[int] | None:
    """The classes whose triggers are stamped on the ``rate`` share: the confident classes when
    there are any, else the union of the flagged ones, else the precaution classes, else None
    (every class); ``config.classes`` join whichever set the rule picks.

    >>> from modeconn.defenses.scan import ScanResult
    >>> near = ScanResult({}, {}, [2.5, 0.5, 1.0], [], 3.0)
    >>> unlearning_classes([near], UnlearningConfig(classes=(2,)))
    [0, 2]
    """
    flagged = confident_classes(scans, config) or sorted(
        {k for scan in scans for k in scan.flagged_classes}
    )
    found = flagged or precaution_classes(scans, config)
    return sorted({*found, *config.classes}) or None


def unlearning_transform(
    scans: Sequence[ScanResult], config: UnlearningConfig
) -> UnlearningTransform:
    """The batch transform stamping the scans' triggers (every kind, strengthened); see the
    module doc for which classes."""
    triggers = [t.scaled(config.strength) for scan in scans for t in scan.triggers.values()]
    untargeted = [t.scaled(config.strength) for scan in scans for t in scan.untargeted.values()]
    if confident(scans, config):
        return UnlearningTransform(triggers, config.rate, unlearning_classes(scans, config))
    if not untargeted:
        return UnlearningTransform(
            triggers, config.rate, unlearning_classes(scans, config), config.uniform_rate
        )
    flagged = unlearning_classes(scans, config)
    return UnlearningTransform(
        triggers,
        config.rate if flagged else 0.0,
        flagged,
        0.0,
        untargeted,
        config.untargeted_rate,
    )


def unlearning_loader(
    data: PreparedData,
    scans: Sequence[ScanResult],
    config: UnlearningConfig,
    seed: int,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> TensorLoader:
    """Shuffled bonafide batches with the scans' triggers stamped on a ``rate`` fraction
    (``batch_size``: the config's unless given, e.g. by a curve's own training settings)."""
    return data.train_loader(
        batch_size or config.batch_size,
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
    run: TrainingRun | None = None,
    description: str = "unlearning",
    objective: Objective | None = None,
) -> nn.Module:
    """NC-unlearning: a copy of ``model`` fine-tuned on stamped bonafide batches (cross-entropy,
    or ``objective``'s loss, e.g. path-aware: :mod:`modeconn.defenses.pam`)."""
    loader = unlearning_loader(data, scans, config, seed, device)
    return fine_tune(
        model,
        loader,
        config.train_config(seed),
        device=device,
        progress=progress,
        description=description,
        run=run,
        objective=objective,
    )


__all__ = [
    "UnlearningConfig",
    "confident",
    "confident_classes",
    "near_classes",
    "near_classes_beside_flipper",
    "precaution_classes",
    "unlearn",
    "unlearning_classes",
    "unlearning_loader",
    "unlearning_transform",
]
