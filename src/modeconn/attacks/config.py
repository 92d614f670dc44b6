"""One object for the settings of an evasion attack: :class:`AttackConfig`.

Robust evaluation along a path, adversarial training, ``modeconn attack`` and the landscape scans
all take an :class:`AttackConfig`; ``config.json`` records it whole (:meth:`AttackConfig.to_dict`)
and a sidecar's ``evasion`` entry reads back through :meth:`AttackConfig.from_dict`. The attack
kernels (:func:`~modeconn.attacks.evasion.pgd`, :func:`~modeconn.attacks.evasion.apgd`, …) stay
plain functions; :meth:`AttackConfig.build` binds the settings to one of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from modeconn.attacks.evasion import (
    ATTACKS,
    NORMS,
    AttackFn,
    LossFn,
    apgd,
    check_budget,
    check_norm,
    fgsm,
    pgd,
)
from modeconn.errors import InvalidArgument

#: The usual budgets per data set and norm (images in [0, 1]); anything else: :data:`DEFAULT_EPS`.
#: CIFAR and SVHN 8/255 (Madry et al. 2018) and 0.5 (L2, RobustBench); MNIST 0.3 and 2.0
#: (Madry et al.; Croce & Hein 2020); Fashion-MNIST and the 8×8 digits 0.1 and 1.5.
DATASET_EPS: dict[str, dict[str, float]] = {
    "cifar10": {"linf": 8 / 255, "l2": 0.5},
    "cifar100": {"linf": 8 / 255, "l2": 0.5},
    "svhn": {"linf": 8 / 255, "l2": 0.5},
    "mnist": {"linf": 0.3, "l2": 2.0},
    "fashion-mnist": {"linf": 0.1, "l2": 1.5},
    "digits": {"linf": 0.1, "l2": 1.5},
}
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}


def default_steps(name: str) -> int:
    """Iterations of an attack when none are given: 1 (FGSM), 10 (PGD) or 100 (APGD).

    >>> default_steps("fgsm"), default_steps("pgd"), default_steps("apgd-ce")
    (1, 10, 100)
    """
    return {"fgsm": 1, "pgd": 10}.get(name, 100)


def default_eps(norm: str, dataset: str | None = None) -> float:
    """The usual budget for ``norm`` on ``dataset`` (8/255 under L∞, 0.5 under L2 by default).

    >>> round(default_eps("linf") * 255, 6), default_eps("l2"), default_eps("linf", "mnist")
    (8.0, 0.5, 0.3)
    """
    check_norm(norm)
    return DATASET_EPS.get(dataset or "", DEFAULT_EPS)[norm]


@dataclass(frozen=True)
class AttackConfig:
    """An untargeted evasion attack and its budget.

    ``name`` is one of :data:`~modeconn.attacks.evasion.ATTACKS`; ``alpha`` is PGD's step size
    (APGD chooses its own); ``n_target_classes`` is the number of target classes APGD-T tries;
    ``seed`` seeds the random starts once per :meth:`build`, so robust figures at different
    points of a path are measured from the same starts on the same batches.
    """

    name: str = "pgd"
    norm: str = "linf"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    restarts: int = 1
    random_start: bool = True
    eot_samples: int = 1
    n_target_classes: int = 9
    seed: int = 0

    @classmethod
    def for_dataset(
        cls,
        dataset: str | None = None,
        *,
        name: str = "pgd",
        norm: str = "linf",
        eps: float | None = None,
        alpha: float | None = None,
        steps: int | None = None,
        **settings: Any,
    ) -> AttackConfig:
        """Settings with the usual defaults filled in: ``eps`` by data set and norm
        (:data:`DATASET_EPS`), ``alpha`` = ``eps``/4, ``steps`` by attack (:func:`default_steps`).

        >>> AttackConfig.for_dataset("mnist").eps, AttackConfig.for_dataset("mnist").alpha
        (0.3, 0.075)
        """
        eps = default_eps(norm, dataset) if eps is None else eps
        return cls(
            name=name,
            norm=norm,
            eps=eps,
            alpha=eps / 4 if alpha is None else alpha,
            steps=default_steps(name) if steps is None else steps,
            **settings,
        ).validate()

    def validate(self) -> AttackConfig:
        """Raise :class:`~modeconn.errors.InvalidArgument` for settings no attack accepts;
        return ``self`` so that construction and validation chain."""
        if self.name not in ATTACKS:
            raise InvalidArgument(
                "name", f"unknown attack '{self.name}' (use {', '.join(ATTACKS)})"
            )
        check_norm(self.norm)
        check_budget(self.eps, self.steps, self.restarts, self.eot_samples)
        if self.name == "pgd" and self.steps > 0 and not self.alpha > 0:
            raise InvalidArgument("alpha", f"alpha must be positive, got {self.alpha}")
        if self.n_target_classes < 1:
            raise InvalidArgument(
                "n_target_classes",
                f"n_target_classes must be at least 1, got {self.n_target_classes}",
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AttackConfig:
        """The settings written by :meth:`to_dict` (unknown keys are an error, missing ones
        take their defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgument(
                "attack", f"unknown attack settings {unknown} (known: {', '.join(sorted(known))})"
            )
        return cls(**values).validate()

    def replace(self, **changes: Any) -> AttackConfig:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes).validate()

    def build(self) -> AttackFn:
        """The attack with these settings bound: ``attack(model, x, y) -> x_adv``.

        PGD draws its random starts from a generator seeded here once with ``seed``.
        """
        self.validate()
        if self.name == "fgsm":
            return lambda model, x, y: fgsm(model, x, y, self.eps, norm=self.norm)
        if self.name == "pgd":
            generator = torch.Generator().manual_seed(self.seed)
            return lambda model, x, y: self.perturb(model, x, y, generator=generator)
        return lambda model, x, y: apgd(
            model,
            x,
            y,
            eps=self.eps,
            norm=self.norm,
            steps=self.steps,
            loss="ce" if self.name == "apgd-ce" else "dlr",
            targeted=self.name == "apgd-t",
            n_target_classes=self.n_target_classes,
            restarts=self.restarts,
            eot_samples=self.eot_samples,
            seed=self.seed,
        )

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: LossFn | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """PGD with these settings against ``model`` as it is (the caller sets eval mode),
        ascending ``loss_fn`` (cross-entropy by default) — the inner maximisation of adversarial
        training. Random starts come from ``generator`` (the global generator when None)."""
        return pgd(
            model,
            x,
            y,
            eps=self.eps,
            alpha=self.alpha,
            steps=self.steps,
            norm=self.norm,
            random_start=self.random_start,
            restarts=self.restarts,
            eot_samples=self.eot_samples,
            loss_fn=loss_fn,
            generator=generator,
        )


__all__ = [
    "ATTACKS",
    "DATASET_EPS",
    "DEFAULT_EPS",
    "NORMS",
    "AttackConfig",
    "default_eps",
    "default_steps",
]
