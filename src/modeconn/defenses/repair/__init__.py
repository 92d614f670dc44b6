"""Repair of tampered models with a little clean data: scan, unlearn, connect, choose, verify.

A user holds a model that may carry a backdoor or injected errors, and a small clean ("bonafide")
data set. :class:`Repair` builds several repaired candidates from the bonafide data only and
returns the one a trigger-free rule picks, with the evidence:

1. **Scan** each tampered model for a backdoor (:mod:`modeconn.defenses.scan`): a synthesized
   trigger per class, an anomaly index, the flagged classes.
2. **Unlearn** each tampered model: fine-tune it on bonafide batches stamped with the flagged
   classes' synthesized triggers, true labels kept (NC-unlearning; candidate ``NC-unlearning``).
3. **Connect** the unlearnt endpoints (the second tampered model, or in the one-model set-up the
   model unlearnt with another seed) by a Bezier curve started on the straight line and trained
   on the same stamped batches (candidate ``path repair``, t by the held-out rule).
4. **Choose** (``method="auto"``): scan every candidate again and take the one with the best
   held-out bonafide accuracy among those the scan does not flag. The rule sees neither the test
   set nor the trigger.

``method="path"`` is the previous design (Zhao et al., ICLR 2020): a curve between the tampered
endpoints with no scan; ``method="unlearn-path"``, ``"unlearn"`` and ``"tsc"`` return one
candidate each.

The package, one purpose a module: :mod:`.candidates` and :mod:`.baselines` (registries of
builders behind one interface, :class:`~.context.Builder`), :mod:`.context` (the inputs and the
steps builders share), :mod:`.choice` (the rules for t and the candidate), :mod:`.evaluation`
(figures, EOT), :mod:`.repair` (the loops), :mod:`.sweep`, :mod:`.config` and :mod:`.results`.
"""

from modeconn.defenses.repair.baselines import BASELINES
from modeconn.defenses.repair.candidates import CANDIDATES, METHODS, candidates_for
from modeconn.defenses.repair.candidates.path_repair import aligned_endpoint
from modeconn.defenses.repair.choice import HOLDOUT, HOLDOUT_LOSS, choose_candidate, choose_t
from modeconn.defenses.repair.config import RepairConfig, with_budget
from modeconn.defenses.repair.context import Builder, RepairContext, StageFn
from modeconn.defenses.repair.evaluation import evaluate_candidate, scan_figures
from modeconn.defenses.repair.repair import Repair, check_registered
from modeconn.defenses.repair.results import (
    ENDPOINT_B,
    TAMPERED,
    Built,
    Candidate,
    PathOutcome,
    RepairResult,
    slug,
)
from modeconn.defenses.repair.sweep import sweep_repairs
from modeconn.defenses.repair.verdict import ATTACK_NOT_MEASURED, repair_warnings

__all__ = [
    "ATTACK_NOT_MEASURED",
    "BASELINES",
    "CANDIDATES",
    "ENDPOINT_B",
    "HOLDOUT",
    "HOLDOUT_LOSS",
    "METHODS",
    "TAMPERED",
    "Builder",
    "Built",
    "Candidate",
    "PathOutcome",
    "Repair",
    "RepairConfig",
    "RepairContext",
    "RepairResult",
    "StageFn",
    "aligned_endpoint",
    "candidates_for",
    "check_registered",
    "choose_candidate",
    "choose_t",
    "evaluate_candidate",
    "repair_warnings",
    "scan_figures",
    "slug",
    "sweep_repairs",
    "with_budget",
]
