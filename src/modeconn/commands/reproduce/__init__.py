"""``modeconn reproduce NAME``: one published landscape claim, end to end, with a verdict.

Each experiment trains the models it needs through the ordinary commands (every step is a run
directory below ``out`` that is reused when finished and resumed when interrupted), measures the
claim's figure of merit, and writes the paper's figure, a table (``table.csv``, ``table.md``)
and ``summary.json`` with ``claim``, ``holds`` (true/false) and the numbers behind it.

Every claim is a :class:`~modeconn.commands.reproduce.claim.Claim` (settings, one seed's steps,
outputs, verdict) in a module of its own, registered by name in :data:`CLAIMS`:

``robust-barrier`` (:mod:`~modeconn.commands.reproduce.robust_barrier`)
    Zhao et al. (ICLR 2020, §5, Fig. 4): on a curve trained with the standard loss between a
    regular and an adversarially trained model there is no barrier in the standard loss but one
    in the robust loss, and the robust loss correlates with the input-Hessian λ_max.

``awp`` (:mod:`~modeconn.commands.reproduce.awp`)
    Wu et al. (NeurIPS 2020): Adversarial Weight Perturbation narrows robust overfitting (the
    last epoch's test robust accuracy minus the best epoch's), where PGD-AT overfits.

``surface`` (:mod:`~modeconn.commands.reproduce.surface`)
    Ren et al. (ICLR 2025): a Bezier surface trained through four models is low-loss, compared
    with the best corner, the weight average, the corners' ensemble and a surface assembled from
    trained curves without training it.

:mod:`~modeconn.commands.reproduce.aggregate` holds what the claims share across seeds (means,
"holds for n of m seeds", the tables); :func:`run_reproduce` runs one claim into a run
directory.
"""

from modeconn.commands.reproduce.awp import AWPSettings, overfitting_gap
from modeconn.commands.reproduce.claim import Claim, StepOptions
from modeconn.commands.reproduce.robust_barrier import RobustBarrierSettings
from modeconn.commands.reproduce.run import CLAIMS, run_reproduce
from modeconn.commands.reproduce.settings import with_overrides
from modeconn.commands.reproduce.surface import SurfaceSettings

__all__ = [
    "CLAIMS",
    "AWPSettings",
    "Claim",
    "RobustBarrierSettings",
    "StepOptions",
    "SurfaceSettings",
    "overfitting_gap",
    "run_reproduce",
    "with_overrides",
]
