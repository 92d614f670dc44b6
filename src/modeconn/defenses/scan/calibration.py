"""How a detector is judged on a zoo of models: ROC-AUC, true positives at a false-positive rate,
false flags at its threshold, and the share of detected all-to-one models whose target it named.

Pure functions on plain numbers (a score per model, higher = more suspicious), so the same code
scores the scan benchmark, the calibration probes and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """The probability that a random positive scores above a random negative (ties count half):
    the area under the ROC curve.

    >>> auroc([3.0, 4.0], [1.0, 2.0])
    1.0
    >>> auroc([1.0, 3.0], [2.0, 2.0])
    0.5
    """
    if not positives or not negatives:
        return math.nan
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


def threshold_at_fpr(negatives: Sequence[float], fpr: float) -> float:
    """The smallest threshold (score > threshold is flagged) that flags at most ``fpr`` of the
    negatives.

    >>> threshold_at_fpr([1.0, 2.0, 3.0, 4.0], 0.25)
    3.0
    >>> threshold_at_fpr([1.0, 2.0], 0.0)
    2.0
    """
    ranked = sorted(negatives, reverse=True)
    allowed = math.floor(fpr * len(ranked) + 1e-9)
    return ranked[min(allowed, len(ranked) - 1)]


def tpr_at_fpr(positives: Sequence[float], negatives: Sequence[float], fpr: float = 0.05) -> float:
    """The share of positives flagged at the threshold that flags at most ``fpr`` of negatives.

    >>> tpr_at_fpr([5.0, 2.5, 1.0], [1.0, 2.0, 3.0], fpr=0.0)
    0.3333333333333333
    """
    if not positives or not negatives:
        return math.nan
    cut = threshold_at_fpr(negatives, fpr)
    return sum(p > cut for p in positives) / len(positives)


@dataclass(frozen=True)
class ZooScore:
    """One model's scan outcome: its family ("clean" for a clean model), its true target (None
    for clean or all-to-all models), the score, whether the default threshold flagged it, the
    top flagged class, and the seconds the scan took."""

    name: str
    family: str
    score: float
    flagged: bool
    true_target: int | None = None
    top_class: int | None = None
    seconds: float = 0.0


def family_figures(scores: Sequence[ZooScore], family: str | None = None) -> dict[str, Any]:
    """Detector figures for the backdoored models of ``family`` (all families when None) against
    every clean model: AUROC, TPR at 5% FPR, detection at the default threshold, false flags,
    target named, seconds per model."""
    clean = [s for s in scores if s.family == "clean"]
    bad = [s for s in scores if s.family != "clean" and (family is None or s.family == family)]
    pos, neg = [s.score for s in bad], [s.score for s in clean]
    detected = [s for s in bad if s.flagged]
    targeted = [s for s in detected if s.true_target is not None]
    everyone = [*bad, *clean]
    return {
        "backdoored": len(bad),
        "clean": len(clean),
        "auroc": auroc(pos, neg),
        "tpr_at_5pct_fpr": tpr_at_fpr(pos, neg, 0.05),
        "detected": sum(s.flagged for s in bad),
        "false_flags": sum(s.flagged for s in clean),
        "target_right": (
            sum(s.top_class == s.true_target for s in targeted) / len(targeted)
            if targeted
            else math.nan
        ),
        "seconds_per_model": (
            sum(s.seconds for s in everyone) / len(everyone) if everyone else math.nan
        ),
    }


def zoo_table(scores: Sequence[ZooScore]) -> dict[str, dict[str, Any]]:
    """:func:`family_figures` for every family present and ``overall``."""
    families = sorted({s.family for s in scores if s.family != "clean"})
    table = {f: family_figures(scores, f) for f in families}
    table["overall"] = family_figures(scores)
    return table
