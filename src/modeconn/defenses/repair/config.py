"""The settings of a repair, and the one function that applies a training budget to them."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from modeconn.defenses.anp import ANPConfig
from modeconn.defenses.distillation import DistillationConfig
from modeconn.defenses.fst import FSTConfig
from modeconn.defenses.ft_sam import FTSAMConfig
from modeconn.defenses.repair.evaluation import EOTSettings
from modeconn.defenses.retuning import RetuningConfig
from modeconn.defenses.sau import SAUConfig
from modeconn.defenses.scan import ScanConfig
from modeconn.defenses.scan.natural import NaturalFeatureRule
from modeconn.defenses.tsc import TSCConfig
from modeconn.defenses.unlearning import UnlearningConfig
from modeconn.errors import InvalidArgument
from modeconn.training import TrainConfig


def _gentle_curve() -> TrainConfig:
    return TrainConfig(
        epochs=20, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="mc"
    )


def _path_curve() -> TrainConfig:
    return TrainConfig(
        epochs=100, batch_size=128, lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="mc"
    )


def _finetune() -> TrainConfig:
    return TrainConfig(
        epochs=20, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="cosine"
    )


@dataclass(frozen=True)
class RepairConfig:
    """Settings of a repair. ``curve`` trains the unlearning path (gentle by default);
    ``path_curve`` the scan-free path of ``method="path"`` (Zhao et al. scaled to small data).
    The bonafide data (its size, its held-out fraction) is the data configuration's."""

    method: str = "auto"
    curve: TrainConfig = field(default_factory=_gentle_curve)
    path_curve: TrainConfig = field(default_factory=_path_curve)
    finetune: TrainConfig = field(default_factory=_finetune)
    scratch_epochs: int = 100
    scan: ScanConfig = field(default_factory=ScanConfig)
    natural: NaturalFeatureRule = field(default_factory=NaturalFeatureRule)
    unlearning: UnlearningConfig = field(default_factory=UnlearningConfig)
    retuning: RetuningConfig = field(default_factory=RetuningConfig)
    fst: FSTConfig = field(default_factory=FSTConfig)
    anp: ANPConfig = field(default_factory=ANPConfig)
    ft_sam: FTSAMConfig = field(default_factory=FTSAMConfig)
    sau: SAUConfig = field(default_factory=SAUConfig)
    tsc: TSCConfig = field(default_factory=TSCConfig)
    distill: DistillationConfig = field(default_factory=DistillationConfig)
    pam_rho: float = 0.5  # PAM unlearning: how far towards the tampered model each gradient is
    align_endpoints: bool = True  # permute B onto A before the unlearning path
    kind: str = "bezier"
    path_kind: str = "polychain"
    num_bends: int = 3
    init: str = "random"
    points: int = 11
    path_test_limit: int | None = None  # test images behind path.csv's columns (None: all)
    depth_limit: int | None = 1000  # test images behind depth.csv, the backdoor-connected path
    margin: float = 0.25
    tolerance: float = 0.02
    t: float | None = None
    baselines: bool = False
    baseline_names: tuple[str, ...] | None = None  # which baselines (None: every registered one)
    noise_sigmas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
    noise_draws: int = 3
    sweep: tuple[int, ...] = ()
    eot: bool = True
    eot_eps: float = 0.1
    eot_steps: int = 10
    eot_samples: int = 4
    eot_limit: int = 500
    seed: int = 0

    def validate(self) -> None:
        """The settings on their own; the method's and baselines' names are checked against
        their registries by :func:`modeconn.defenses.repair.repair.check_registered` (the
        registries' builders read this config, so it does not import them)."""
        if self.pam_rho < 0:
            raise InvalidArgument("pam_rho", f"pam_rho must be non-negative, got {self.pam_rho}")
        if self.init not in ("random", "linear"):
            raise InvalidArgument("init", f"init must be random or linear, got '{self.init}'")
        if self.t is not None and not 0.0 <= self.t <= 1.0:
            raise InvalidArgument("t", f"t must be in [0, 1], got {self.t}")
        if self.path_test_limit is not None and self.path_test_limit < 1:
            raise InvalidArgument(
                "path_test_limit", f"path_test_limit must be at least 1, got {self.path_test_limit}"
            )
        if self.depth_limit is not None and self.depth_limit < 1:
            raise InvalidArgument(
                "depth_limit", f"depth_limit must be at least 1, got {self.depth_limit}"
            )
        self.scan.validate()
        self.retuning.validate()
        self.fst.validate()
        try:
            self.distill.validate()
            self.natural.validate()
        except ValueError as err:
            raise InvalidArgument(None, str(err)) from None
        self.anp.validate()
        self.tsc.validate()
        self.ft_sam.validate()
        self.sau.validate()

    def eot_settings(self) -> EOTSettings:
        return EOTSettings(
            self.eot_eps, self.eot_steps, self.eot_samples, self.eot_limit, seed=self.seed
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def with_budget(
    config: RepairConfig,
    *,
    batch_size: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    unlearn_epochs: int | None = None,
    finetune_epochs: int | None = None,
    scan_steps: int | None = None,
) -> RepairConfig:
    """A copy of ``config`` with a training budget applied where it belongs (None: keep).

    ``batch_size`` is every stage's batch; ``epochs`` and ``lr`` the curves' (the unlearning
    path, the scan-free path, each TSC stage); ``unlearn_epochs`` NC-unlearning's, FST's,
    FT-SAM's and SAU's (compared on the fine-tuning baseline's budget); ``finetune_epochs``
    endpoint B's of the one-model set-up; ``scan_steps`` the steps per synthesized trigger.
    """
    replace = dataclasses.replace
    curve = _given(epochs=epochs, lr=lr, batch_size=batch_size)
    batch = _given(batch_size=batch_size)
    return replace(
        config,
        curve=replace(config.curve, **curve),
        path_curve=replace(config.path_curve, **curve),
        tsc=replace(config.tsc, curve=replace(config.tsc.curve, **curve)),
        finetune=replace(config.finetune, **_given(epochs=finetune_epochs), **batch),
        unlearning=replace(config.unlearning, **_given(epochs=unlearn_epochs), **batch),
        fst=replace(config.fst, **_given(epochs=unlearn_epochs), **batch),
        anp=replace(config.anp, **batch),
        ft_sam=replace(config.ft_sam, **_given(epochs=unlearn_epochs), **batch),
        sau=replace(config.sau, **_given(epochs=unlearn_epochs), **batch),
        scan=replace(config.scan, **_given(steps=scan_steps)),
    )
