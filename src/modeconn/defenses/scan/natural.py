"""Natural-feature correction: a flag on a model derived from a tampered one, judged against
the tampered model's own scan.

Some classes need a naturally small trigger ("bag" on Fashion-MNIST: a dark rectangle turns
many garments into bags). The anomaly index compares classes *within* one model, so when a
repair removes the real target's outlier and evens out the other classes, such a class can rise
over the threshold in the repaired model while its trigger is no smaller than it was in the
tampered model. Training on bonafide data cannot implant a backdoor, so a flag on a class counts
as a residual backdoor only when the repaired model reaches that class more easily than the
tampered model did, or when the tampered model was already suspected there. This is the
comparison EX-RAY (Liu et al., CVPR 2021) and CSO make to tell an injected trigger from the
features that naturally separate classes, with the tampered model as the reference each class is
compared against.

A flag is discounted as natural when both hold:

- no tampered model's scan flagged the class, and its evidence there stayed under ``quiet_below``
  of the threshold, below the band where the scan takes a second look (a class the tampered
  scan nearly flagged might be a missed backdoor);
- the repaired model's triggers for the class, averaged over the kinds on a log scale, are at
  least ``ratio`` times the smallest tampered model's (no new shortcut to it); when the margin
  statistic flagged it, its margin is at most the tampered models' largest over ``ratio``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from modeconn.defenses.scan.anomaly import ScanResult


@dataclass(frozen=True)
class NaturalFeatureRule:
    """When a repaired model's flag is discounted as a naturally small class (module doc).

    ``ratio`` 0.8: on the patch and blend pairs at 50 images, the distilled models' class-8
    ("bag") triggers were 1.24× the tampered models' (flagged at index 3.5–4.4, ASR 0.016 and
    0.056); a residual backdoor's trigger is several times smaller than the class's natural one
    (the demo's target: 7 against 30–70).

    ``quiet_below`` 0.7, the lower edge of the scan's second-look band (``ScanConfig.
    confirm_band``): evidence the scan would not even look at twice. It was 0.5 until the
    all-to-all pair at 50 images showed "bag" at 0.60 and 0.50 of the threshold in the two
    tampered models (their top classes, both under it) and at 1.09 on the distilled candidate with
    triggers 1.2× the tampered ones; the flag sent the choice to NC-unlearning, whose retuning ASR
    was 0.59 against distillation's 0.03. A target the tampered scan nearly missed (the held-out
    blend pair's at 0.90) stays above it."""

    ratio: float = 0.8
    quiet_below: float = 0.7
    enabled: bool = True

    def validate(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"natural ratio must be in (0, 1], got {self.ratio}")
        if not 0.0 < self.quiet_below <= 1.0:
            raise ValueError(f"natural quiet_below must be in (0, 1], got {self.quiet_below}")


def size_ratio(result: ScanResult, references: Sequence[ScanResult], k: int) -> float:
    """Class ``k``'s trigger size in ``result`` over the smallest reference's, per kind, as a
    geometric mean over the kinds both scans synthesised (1.0 when they share none).

    >>> from modeconn.defenses.scan.kinds import TriggerSet
    >>> import torch
    >>> def scan(sizes):
    ...     trig = TriggerSet("mask", torch.tensor(sizes), torch.ones(2))
    ...     return ScanResult({"mask": trig}, {}, [0.0, 0.0], [], 3.0)
    >>> round(size_ratio(scan([30.0, 40.0]), [scan([10.0, 50.0]), scan([8.0, 32.0])], 1), 3)
    1.25
    """
    logs = []
    for kind, trig in result.triggers.items():
        sizes = [float(r.triggers[kind].size[k]) for r in references if kind in r.triggers]
        if sizes:
            logs.append(math.log(max(float(trig.size[k]), 1e-12) / max(min(sizes), 1e-12)))
    return math.exp(sum(logs) / len(logs)) if logs else 1.0


def _margin_not_larger(
    result: ScanResult, references: Sequence[ScanResult], k: int, ratio: float
) -> bool:
    """True when the margin statistic did not flag ``k``, or its margin is no larger than the
    references' largest over ``ratio``."""
    if result.margin_index is None or result.margins is None:
        return True
    if result.margin_index[k] <= result.margin_threshold:
        return True
    theirs = [r.margins[k] for r in references if r.margins is not None]
    return bool(theirs) and result.margins[k] <= max(theirs) / ratio


def natural_reason(
    result: ScanResult, references: Sequence[ScanResult], k: int, rule: NaturalFeatureRule
) -> str | None:
    """Why flagged class ``k`` of ``result`` is a natural feature (one sentence), or None when
    the flag must count."""
    if any(k in r.flagged_classes for r in references):
        return None
    quiet = max(r.class_evidence[k] for r in references)
    if quiet >= rule.quiet_below:
        return None
    ratio = size_ratio(result, references, k)
    if ratio < rule.ratio or not _margin_not_larger(result, references, k, rule.ratio):
        return None
    return (
        f"class {k} is over the threshold but its trigger is {ratio:.2f}× the tampered model's, "
        f"where the class was not suspected (evidence {quiet:.2f} of the threshold): a naturally "
        "small class, not a backdoor"
    )


def discount_natural(
    result: ScanResult, references: Sequence[ScanResult], rule: NaturalFeatureRule
) -> ScanResult:
    """``result`` with the flags that :func:`natural_reason` explains moved from
    ``flagged_classes`` to ``natural_classes`` (each with a note); unchanged without references
    or when the rule is off."""
    if not rule.enabled or not references or not result.flagged_classes:
        return result
    reasons = {k: natural_reason(result, references, k, rule) for k in result.flagged_classes}
    natural = [k for k, why in reasons.items() if why is not None]
    if not natural:
        return result
    return dataclasses.replace(
        result,
        flagged_classes=[k for k in result.flagged_classes if k not in natural],
        natural_classes=natural,
        notes=[*result.notes, *(reasons[k] for k in natural)],
    )
