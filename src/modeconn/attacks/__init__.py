"""Threat models: evasion attacks (FGSM, PGD, APGD, EOT on a curve), backdoors, error injection.

Attack settings are one object, :class:`~modeconn.attacks.config.AttackConfig`. Algorithms live in
:mod:`~modeconn.attacks.evasion`, :mod:`~modeconn.attacks.backdoor` and
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
from modeconn.attacks.config import AttackConfig, default_eps, default_steps
from modeconn.attacks.evasion import RandomPointModel, apgd, fgsm, pgd
from modeconn.attacks.injection import InjectionSpec, inject_errors, injection_success
from modeconn.attacks.metrics import (
    AttackSuccessMetric,
    InjectionMetric,
    RobustMetric,
    metric_from_attack_spec,
    robust_metrics,
)

__all__ = [
    "AttackConfig",
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
    "default_eps",
    "default_steps",
    "fgsm",
    "inject_errors",
    "injection_success",
    "metric_from_attack_spec",
    "pgd",
    "poison_transform",
    "poisoned_accuracy",
    "robust_metrics",
    "target_labels",
]
