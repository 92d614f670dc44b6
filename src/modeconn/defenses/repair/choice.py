"""The trigger-free choice rules: which t of a path, and which candidate the repair returns.

Both rules read held-out bonafide data and the scan's verdicts only — never the test set or the
attack's trigger.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from modeconn.connectivity import SplitLossAccuracy
from modeconn.defenses.repair.results import Candidate
from modeconn.defenses.scan import ScanResult
from modeconn.errors import InvalidArgument

HOLDOUT = "bonafide_holdout_acc"
HOLDOUT_LOSS = "bonafide_holdout_loss"
HOLDOUT_METRIC = SplitLossAccuracy("bonafide_holdout")
T_RULE = (
    "the best held-out bonafide accuracy ({acc:.4f}) among the points at least {margin:.2f} "
    "from both endpoints; chosen from held-out bonafide data only"
)


def choose_t(rows: Sequence[dict[str, float]], margin: float) -> tuple[float, str]:
    """Apply the repair rule to path rows (needs ``t`` and the held-out accuracy); (t, why).

    The point with the best held-out bonafide accuracy among those at least ``margin`` from both
    ends (ties: the one nearer the middle):

    >>> rows = [{"t": t, HOLDOUT: acc} for t, acc in [(0, .9), (.25, .8), (.5, .8), (.75, .7)]]
    >>> choose_t(rows, 0.25)[0]
    0.5
    """
    if not 0.0 < margin <= 0.5:
        raise InvalidArgument("margin", f"margin must be in (0, 0.5], got {margin}")
    inside = [r for r in rows if min(r["t"], 1.0 - r["t"]) >= margin - 1e-9]
    if not inside:
        raise InvalidArgument(
            None,
            f"no evaluated point lies at least {margin} from both endpoints; use more points",
        )
    best = max(inside, key=lambda r: (r[HOLDOUT], min(r["t"], 1.0 - r["t"])))
    return float(best["t"]), T_RULE.format(acc=best[HOLDOUT], margin=margin)


def holdout_resolution(best: float, images: int | None) -> float:
    """How far below the best held-out accuracy a candidate still ties with it: one binomial
    standard error of the best, and at least one image (the one-standard-error rule of model
    selection); 0 when the number of held-out images is not known.

    >>> holdout_resolution(0.9, 10), round(holdout_resolution(0.9, 500), 4)
    (0.1, 0.0134)
    """
    if not images:
        return 0.0
    return max(math.sqrt(best * (1.0 - best) / images), 1.0 / images)


def choose_candidate(
    candidates: Sequence[Candidate],
    verdicts: Mapping[str, ScanResult],
    holdout_images: int | None = None,
    preferred: Collection[str] = (),
) -> tuple[Candidate, str]:
    """The trigger-free choice among the candidates in which the scan finds no backdoor (no
    flagged class, no universal label flipper): those whose held-out bonafide accuracy is within
    :func:`holdout_resolution` of the best tie, and the tie goes to a ``preferred`` candidate
    (one whose builder says it is the better bet when the data cannot tell), then to the lower
    held-out loss, then to the earlier candidate. When every candidate is flagged, the least
    suspicious one, and the reason says so.

    Why the resolution: ten held-out images (a 50-image budget) resolve accuracy to 10 points,
    and one image made path repair win at 0.856 and 0.829 against distillation's 0.872 and
    0.865 (held-out all-to-all and blend pairs); its held-out loss and its divergence from the
    tampered models' answers on those ten images favoured it too. 500 images resolve accuracy
    to about 1.3 points, within which the demo's path repair and NC-unlearning tied in two of
    three scenarios."""
    if not candidates:
        raise RuntimeError("no repair candidate was built")
    clean = [c for c in candidates if not verdicts[c.name].backdoor_found]
    if clean:
        top = max(c.metrics[HOLDOUT] for c in clean)
        within = holdout_resolution(top, holdout_images)
        tied = [c for c in clean if c.metrics[HOLDOUT] >= top - within - 1e-9]
        best = min(
            tied,
            key=lambda c: (
                c.name not in preferred,
                c.metrics.get(HOLDOUT_LOSS, 0.0),
                candidates.index(c),
            ),
        )
        reason = _clean_reason(best, len(clean), len(candidates), tied, within, preferred)
        return best, reason
    best = min(candidates, key=lambda c: verdicts[c.name].suspicion)
    return best, (
        f"{best.name}: every candidate is flagged by the scan; this one is the least suspicious "
        f"({verdicts[best.name].verdict()}) — the repair may not have worked"
    )


def _clean_reason(
    best: Candidate,
    clean: int,
    total: int,
    tied: Sequence[Candidate],
    within: float,
    preferred: Collection[str],
) -> str:
    """The choice's reason when some candidate passes the scan."""
    reason = (
        f"{best.name}: held-out bonafide accuracy {best.metrics[HOLDOUT]:.4f}, among the "
        f"{clean} of {total} candidates the scan does not flag"
    )
    if len(tied) == 1:
        return reason + (", the best" if clean > 1 else "")
    why = (
        "preferred when the held-out data cannot tell"
        if best.name in preferred and any(c.name not in preferred for c in tied)
        else "the lowest held-out loss"
    )
    return reason + (
        f"; {len(tied)} lie within the held-out accuracy's resolution ({within:.3f}) of the "
        f"best, and this one is {why}"
    )
