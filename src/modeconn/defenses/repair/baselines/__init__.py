"""The baselines a repair is compared with, one module each, in a registry.

Each is a :class:`~modeconn.defenses.repair.context.Builder` on the same bonafide data as the
candidates; ``may_not_apply`` marks those that some architectures cannot take (their
:class:`~modeconn.errors.ModeconnError` becomes a "not applicable" row). The registry's order is
the order they run and are listed in. Adding a baseline: one module here and one entry in
:data:`BASELINES`.
"""

from __future__ import annotations

from modeconn.defenses.repair.baselines.anp import ANP
from modeconn.defenses.repair.baselines.fine_pruning import FinePruning
from modeconn.defenses.repair.baselines.fine_tuning import FineTuning
from modeconn.defenses.repair.baselines.from_scratch import FromScratch
from modeconn.defenses.repair.baselines.fst import FST
from modeconn.defenses.repair.baselines.ft_sam import FTSAM
from modeconn.defenses.repair.baselines.noisy import NoisyModel
from modeconn.defenses.repair.baselines.sau import SAU

BASELINES = {
    b.name: b
    for b in (
        FineTuning(),
        FromScratch(),
        NoisyModel(),
        FinePruning(),
        FST(),
        ANP(),
        FTSAM(),
        SAU(),
    )
}

__all__ = ["BASELINES"]
