"""What every repair step sees: the inputs, the shared steps (scan, unlearnt endpoints, path
evaluation) computed once, the stage directories and the lap clock; and the builder interface.

A candidate or baseline is an object with a ``name`` and ``build(context) -> Built``
(:class:`Builder`); it takes what it needs from the context. Steps that several builders share —
the endpoints' scans, the unlearnt endpoints — are computed on first use and remembered, so a
builder never needs to know which others ran.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch
from torch import nn

from modeconn.attacks.metrics import AttackSuccessMetric
from modeconn.checkpoints import Checkpoint
from modeconn.connectivity import Curve, evaluate_path
from modeconn.data.prepare import PreparedData
from modeconn.defenses.repair.choice import HOLDOUT_METRIC
from modeconn.defenses.repair.evaluation import AttackUnderTest, evaluate_candidate
from modeconn.defenses.repair.results import ENDPOINT_B, TAMPERED, Built, Candidate
from modeconn.defenses.retuning import retuning_figures
from modeconn.defenses.scan import ScanResult, scan_images, scan_model
from modeconn.defenses.scan.natural import discount_natural
from modeconn.defenses.unlearning import unlearn
from modeconn.training import Objective, TrainConfig, TrainingRun

if TYPE_CHECKING:
    from modeconn.defenses.repair.config import RepairConfig

#: Gives a training stage (name, its settings) somewhere to keep its resumable state, or None.
StageFn = Callable[[str, TrainConfig], "TrainingRun | None"]


class Builder(Protocol):
    """A repair candidate or baseline: one name, one way to build it from the context."""

    name: ClassVar[str]

    def build(self, context: RepairContext) -> Built: ...


class RepairContext:
    """The inputs of one repair and the steps its builders share.

    Works in memory (models, loaders, scans); ``stages`` (optional) gives each training stage a
    run directory for its resumable state, which is all it knows of run directories. ``attack``
    is a spec, or one parsed already (:meth:`AttackUnderTest.parse`, e.g. with triggered images
    read once for several repairs). ``clean`` (optional) is a model the user trained on clean
    data: a reference row, evaluated and attacked like every other.
    """

    def __init__(
        self,
        tampered: Checkpoint,
        second: Checkpoint | None,
        data: PreparedData,
        config: RepairConfig,
        attack: dict | AttackUnderTest | None,
        device: torch.device,
        *,
        progress: bool = True,
        stages: StageFn | None = None,
        clean: Checkpoint | None = None,
    ) -> None:
        config.validate()
        config.unlearning.validate(data.info.num_classes)
        self.tampered = tampered
        self.second = second
        self.clean = clean
        self.data = data
        self.config = config
        self.attack = (
            attack if isinstance(attack, AttackUnderTest) else AttackUnderTest.parse(attack)
        )
        self.device = device
        self.progress = progress
        self.stages = stages
        self.scans: dict[str, ScanResult] = {}
        self.timings: dict[str, float] = {}
        self.depth: dict[str, list[dict[str, float]]] = {}
        self._clock = time.perf_counter()
        self._scan_x, self._scan_y = scan_images(data, config.scan.images, device)
        self._endpoint_scans: list[ScanResult] | None = None
        self._unlearnt: tuple[nn.Module, nn.Module] | None = None

    @property
    def metric(self):
        return self.attack.metric

    @property
    def key(self) -> str | None:
        """The attack's summary key (``asr``, ``injection_success``) or None."""
        return self.attack.key

    # --- bookkeeping -----------------------------------------------------------------------

    def lap(self, name: str) -> None:
        """Record the wall time since the previous lap under ``seconds_<name>``."""
        now = time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self._clock, 1)
        self._clock = now

    def stage(self, name: str, config: TrainConfig) -> TrainingRun | None:
        return self.stages(name, config) if self.stages is not None else None

    # --- shared steps ----------------------------------------------------------------------

    def scan(self, name: str, model: nn.Module) -> ScanResult:
        """Scan ``model`` on the bonafide scan images; remembered under ``name``."""
        result = scan_model(
            model, self._scan_x, self._scan_y, self.data.info.num_classes, self.config.scan
        )
        self.scans[name] = result
        return result

    def scan_candidate(self, name: str, model: nn.Module) -> ScanResult:
        """Scan a repaired model, its flags judged against the tampered models' scans: a class
        no smaller than there, where it was not suspected, is discounted as natural
        (:func:`~modeconn.defenses.scan.natural.discount_natural`)."""
        result = self.scan(name, model)
        corrected = discount_natural(result, self.endpoint_scans(), self.config.natural)
        self.scans[name] = corrected
        return corrected

    def endpoint_scans(self) -> list[ScanResult]:
        """Scan A (and B) once: the verdicts behind every stamped batch."""
        if self._endpoint_scans is None:
            scans = [self.scan(TAMPERED, self.tampered.model)]
            if self.second is not None:
                scans.append(self.scan(ENDPOINT_B, self.second.model))
            self.lap("scan")
            self._endpoint_scans = scans
        return self._endpoint_scans

    def unlearn(
        self,
        model: nn.Module,
        scans: Sequence[ScanResult],
        name: str,
        seed: int,
        objective: Objective | None = None,
    ):
        """NC-unlearning of ``model`` on bonafide batches stamped with the scans' triggers
        (cross-entropy, or ``objective``'s loss)."""
        cfg = self.config.unlearning
        return unlearn(
            model,
            self.data,
            scans,
            cfg,
            seed=seed,
            device=self.device,
            progress=self.progress,
            run=self.stage(name, cfg.train_config(seed)),
            description=name.replace("_", " "),
            objective=objective,
        )

    def unlearnt_endpoints(self) -> tuple[nn.Module, nn.Module]:
        """Unlearn A (and B) once, with the triggers of both endpoints' scans; the one-model
        set-up unlearns A again with another seed.

        The two tampered models of the paper's set-up carry the same attack, and one scan may
        see it more clearly than the other: on a blend pair, A's scan gave the target only a weak
        index (3.4) while B's gave it 4.6; A unlearnt with its own weak verdict (every class's
        triggers too) reached 0.871 / ASR 0.023, with both scans (the target's triggers only)
        0.894 / ASR 0.015 against 0.909 tampered. On a patch pair both scans were confident and
        the union changed nothing (0.895 / 0.016 either way).
        """
        if self._unlearnt is None:
            scans, seed = self.endpoint_scans(), self.config.seed
            a = self.unlearn(self.tampered.model, scans, "unlearn_a", seed)
            if self.second is not None:
                b = self.unlearn(self.second.model, scans, "unlearn_b", seed)
            else:
                b = self.unlearn(self.tampered.model, scans, "unlearn_b", seed + 1)
            self.lap("unlearning")
            self._unlearnt = (a, b)
        return self._unlearnt

    # --- evaluation ------------------------------------------------------------------------

    def evaluate_path(self, curve: Curve, points: int | None = None) -> list[dict[str, float]]:
        """The path table: held-out bonafide columns (the choice of t) and the test columns and
        attack figures, on ``path_test_limit`` stratified test images when set (the chosen
        point is evaluated on the whole test split afterwards, as every candidate is)."""
        n = points or self.config.points
        limit = self.config.path_test_limit
        metric = self.metric
        if limit is not None and isinstance(metric, AttackSuccessMetric):
            metric = copy.copy(metric)
            metric.limit = limit
        return evaluate_path(
            curve,
            self.data,
            [i / (n - 1) for i in range(n)],
            bn_split="bonafide",
            metrics=[HOLDOUT_METRIC] + ([metric] if metric is not None else []),
            device=self.device,
            test_limit=limit,
        )

    def point(self, curve: Curve, t: float) -> nn.Module:
        """The model at ``t`` with BatchNorm statistics recomputed on the bonafide data."""
        bn = self.data.eval_loader("bonafide", device=self.device)
        return curve.model_at(t, bn_loader=bn).to(self.device).eval()

    def evaluate(self, name: str, model: nn.Module, detail: str = "") -> Candidate:
        return evaluate_candidate(name, model, self.data, self.metric, self.device, detail)

    def retuning(self, model: nn.Module) -> dict[str, float]:
        """ASR after the retuning attack at each strength (backdoors only, else empty;
        evaluation only)."""
        if self.attack.trigger is None:
            return {}
        cfg = dataclasses.replace(self.config.retuning, seed=self.config.seed)
        return retuning_figures(model, self.data, self.attack.trigger, cfg, self.device)
