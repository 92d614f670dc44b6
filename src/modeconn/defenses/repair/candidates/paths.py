"""What the path candidates share: the point a path gives back, chosen by the held-out rule."""

from __future__ import annotations

from modeconn.connectivity import Curve
from modeconn.defenses.repair.choice import choose_t
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built, PathOutcome


def point_of_path(
    context: RepairContext, curve: Curve, rows: list[dict[str, float]], note: str = ""
) -> Built:
    """The model at the t the rule picks from the path table (or the t given in the settings).

    The rule keeps ``margin`` from both endpoints and, inside that stretch, takes the point with
    the best held-out bonafide accuracy (:func:`~modeconn.defenses.repair.choice.choose_t`).
    """
    cfg = context.config
    t, rule = (cfg.t, "given") if cfg.t is not None else choose_t(rows, cfg.margin)
    detail = f"t={t:.2f}" + (f"; {note}" if note else "")
    return Built(context.point(curve, t), detail, path=PathOutcome(curve, rows, t, rule))
