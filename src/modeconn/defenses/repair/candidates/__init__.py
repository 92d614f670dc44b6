"""The repair candidates, one module each, in a registry.

A candidate is a :class:`~modeconn.defenses.repair.context.Builder` with a ``method`` name (the
``--method`` that returns it alone) and ``in_auto`` (whether ``method="auto"`` builds it too;
a candidate may narrow that with ``auto_applies(config, images)``, e.g. to small budgets).
The registry's order is the order candidates are built, listed and preferred on ties. Adding a
candidate: one module here and one entry in :data:`CANDIDATES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeconn.defenses.repair.candidates.distillation import DistillationCandidate
from modeconn.defenses.repair.candidates.nc_unlearning import NCUnlearning
from modeconn.defenses.repair.candidates.pam_unlearning import PAMUnlearning
from modeconn.defenses.repair.candidates.path_repair import PathRepair
from modeconn.defenses.repair.candidates.scan_free_path import ScanFreePath
from modeconn.defenses.repair.candidates.tsc import TSC

if TYPE_CHECKING:
    from modeconn.defenses.repair.config import RepairConfig

CANDIDATES = {
    b.name: b
    for b in (
        PathRepair(),
        NCUnlearning(),
        PAMUnlearning(),
        DistillationCandidate(),
        ScanFreePath(),
        TSC(),
    )
}

#: Every ``method``: ``auto`` (the candidates marked ``in_auto``) and one per candidate.
METHODS = ("auto", *(b.method for b in CANDIDATES.values()))


def candidates_for(
    method: str, config: RepairConfig | None = None, images: int | None = None
) -> list:
    """The builders a method runs, in the registry's order; for ``auto``, those marked
    ``in_auto`` — and, given a ``config`` and a bonafide budget of ``images``, only those whose
    ``auto_applies(config, images)`` (when they have one) holds."""
    if method != "auto":
        return [b for b in CANDIDATES.values() if b.method == method]
    auto = [b for b in CANDIDATES.values() if b.in_auto]
    if config is None or images is None:
        return auto
    return [b for b in auto if not hasattr(b, "auto_applies") or b.auto_applies(config, images)]


__all__ = ["CANDIDATES", "METHODS", "candidates_for"]
