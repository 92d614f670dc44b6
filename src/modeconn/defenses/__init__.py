"""Defences: adversarial training (PGD-AT, TRADES, AWP) and path-connection repair.

:mod:`modeconn.defenses.adversarial` holds the adversarial-training objectives of the one training
loop; :mod:`modeconn.defenses.repair` and :mod:`modeconn.defenses.baselines` the repair of tampered
models and the baselines it is compared with.
"""

from modeconn.defenses.adversarial import (
    TRADES,
    AdversarialConfig,
    AdversarialObjective,
    AdversarialWeightPerturbation,
    PGDAdversarialTraining,
    RobustEvaluation,
)

__all__ = [
    "TRADES",
    "AdversarialConfig",
    "AdversarialObjective",
    "AdversarialWeightPerturbation",
    "PGDAdversarialTraining",
    "RobustEvaluation",
]
