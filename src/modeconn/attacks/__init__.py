"""Threat models: evasion attacks (FGSM, PGD, APGD, EOT on a curve), backdoors, error injection.

Algorithms live in :mod:`~modeconn.attacks.evasion`, :mod:`~modeconn.attacks.backdoor` and
:mod:`~modeconn.attacks.injection`; the figures measured along paths in
:mod:`~modeconn.attacks.metrics`; the run-directory commands (``poison``, ``inject``, ``attack``)
in :mod:`~modeconn.commands.attack`.
"""

from modeconn.attacks.backdoor import (
    TriggerSpec,
    apply_trigger,
    attack_success_rate,
    backdoor_metrics,
    poison_transform,
    poisoned_accuracy,
    target_labels,
)
from modeconn.attacks.evasion import (
    RandomPointModel,
    apgd,
    fgsm,
    make_attack,
    pgd,
    robust_metrics,
)
from modeconn.attacks.injection import InjectionSpec, inject_errors, injection_success
from modeconn.attacks.metrics import (
    AttackSuccessMetric,
    InjectionMetric,
    RobustMetric,
    metric_from_attack_spec,
)

__all__ = [
    "AttackSuccessMetric",
    "InjectionMetric",
    "InjectionSpec",
    "RandomPointModel",
    "RobustMetric",
    "TriggerSpec",
    "apgd",
    "apply_trigger",
    "attack_success_rate",
    "backdoor_metrics",
    "fgsm",
    "inject_errors",
    "injection_success",
    "make_attack",
    "metric_from_attack_spec",
    "pgd",
    "poison_transform",
    "poisoned_accuracy",
    "robust_metrics",
    "target_labels",
]
