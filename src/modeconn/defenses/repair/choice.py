"""The trigger-free choice rules: which t of a path, and which candidate the repair returns.

Both rules read held-out bonafide data and the scan's verdicts only — never the test set or the
attack's trigger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def choose_candidate(
    candidates: Sequence[Candidate], verdicts: Mapping[str, ScanResult]
) -> tuple[Candidate, str]:
    """The trigger-free choice: the best held-out bonafide accuracy among the candidates in which
    the scan finds no backdoor (no flagged class, no universal label flipper); when every
    candidate is flagged, the least suspicious one, and the reason says so.

    Ties on accuracy go to the lower held-out loss (then the earlier candidate): 500 held-out
    images resolve accuracy to 0.2 points, and the demo's path repair and NC-unlearning tied on
    it in two of three scenarios (blend: 0.914 both; held-out loss 0.269 against 0.262, test
    accuracy 0.889 against 0.896)."""
    if not candidates:
        raise RuntimeError("no repair candidate was built")
    clean = [c for c in candidates if not verdicts[c.name].backdoor_found]
    if clean:
        best = max(
            clean,
            key=lambda c: (
                c.metrics[HOLDOUT],
                -c.metrics.get(HOLDOUT_LOSS, 0.0),
                -candidates.index(c),
            ),
        )
        return best, (
            f"{best.name}: the best held-out bonafide accuracy ({best.metrics[HOLDOUT]:.4f}) among "
            f"the {len(clean)} of {len(candidates)} candidates the scan does not flag"
        )
    best = min(candidates, key=lambda c: verdicts[c.name].suspicion)
    return best, (
        f"{best.name}: every candidate is flagged by the scan; this one is the least suspicious "
        f"({verdicts[best.name].verdict()}) — the repair may not have worked"
    )
