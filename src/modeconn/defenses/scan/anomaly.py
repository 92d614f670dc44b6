"""The anomaly test of a scan: trigger sizes compared across classes, the scan of a model and
what it found."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modeconn.data.prepare import PreparedData
from modeconn.defenses.scan.kinds import KINDS, TriggerSet
from modeconn.defenses.scan.margin import class_margins
from modeconn.defenses.scan.synthesis import ScanConfig, synthesize_triggers
from modeconn.errors import ModeconnError

MAD_SCALE = 1.4826  # makes the MAD a consistent estimate of the standard deviation
#: How close to the threshold a suspicion must lie for the verdict to say that another draw may
#: decide otherwise. On the scan zoo, single draws of one model on the same images spread by
#: 0.3-0.4, and every held-out model whose verdict changed with the seed had its pooled
#: suspicions within 0.93-1.17 (benchmarks/bench_scan_zoo.py, tenth session's fresh zoo).
NEAR_THRESHOLD = 0.2


@dataclass
class ScanResult:
    """What the scan found: per kind the triggers, sizes and indices; the flagged classes.

    ``natural_classes``: classes over the threshold that a comparison with the tampered model
    discounted as naturally small (:mod:`~modeconn.defenses.scan.natural`; repaired models only).
    """

    triggers: dict[str, TriggerSet]
    index: dict[str, list[float]]
    anomaly_index: list[float]
    flagged_classes: list[int]
    threshold: float
    reference_sizes: dict[str, list[float]] | None = None
    notes: list[str] = field(default_factory=list)
    untargeted: dict[str, TriggerSet] = field(default_factory=dict)
    untargeted_index: float | None = None
    untargeted_threshold: float = 1.0
    margins: list[float] | None = None
    margin_index: list[float] | None = None
    margin_threshold: float = 3.0
    draw_suspicions: list[float] = field(default_factory=list)
    natural_classes: list[int] = field(default_factory=list)

    @property
    def class_evidence(self) -> list[float]:
        """Per class, the strongest evidence over its threshold: the trigger-size anomaly index
        over ``threshold`` or the margin index over ``margin_threshold`` (above 1: flagged)."""
        evidence = [v / self.threshold for v in self.anomaly_index]
        if self.margin_index is not None:
            evidence = [
                max(e, m / self.margin_threshold)
                for e, m in zip(evidence, self.margin_index, strict=True)
            ]
        return evidence

    @property
    def top_class(self) -> int:
        """The class with the strongest evidence (the suspected target when one is flagged)."""
        evidence = self.class_evidence
        return max(range(len(evidence)), key=evidence.__getitem__)

    @property
    def untargeted_flagged(self) -> bool:
        """The universal label flipper is suspiciously small (a label-dependent backdoor)."""
        return (
            self.untargeted_index is not None and self.untargeted_index > self.untargeted_threshold
        )

    @property
    def backdoor_found(self) -> bool:
        return bool(self.flagged_classes) or self.untargeted_flagged

    @property
    def suspicion(self) -> float:
        """The strongest evidence relative to its threshold (above 1: a backdoor is suspected):
        the largest :attr:`class_evidence` of a class not discounted as natural, or the
        untargeted index over its own threshold."""
        return self._strongest(skip=self.natural_classes)

    def _strongest(self, skip: Sequence[int] = ()) -> float:
        """The largest class evidence outside ``skip``, or the untargeted index over its
        threshold when larger."""
        counted = [e for k, e in enumerate(self.class_evidence) if k not in skip]
        value = max(counted, default=0.0)
        if self.untargeted_index is not None:
            value = max(value, self.untargeted_index / self.untargeted_threshold)
        return value

    def summary(self, prefix: str = "") -> dict[str, Any]:
        """Flat summary keys (``flagged_classes``, ``anomaly_index``, ``max_anomaly_index``, and
        per kind ``{kind}_size``/``{kind}_index``), each optionally prefixed."""
        out: dict[str, Any] = {
            f"{prefix}flagged_classes": list(self.flagged_classes),
            f"{prefix}anomaly_index": [round(v, 4) for v in self.anomaly_index],
            f"{prefix}max_anomaly_index": round(max(self.anomaly_index), 4),
        }
        for kind, trig in self.triggers.items():
            out[f"{prefix}{kind}_size"] = [round(float(v), 4) for v in trig.size]
            out[f"{prefix}{kind}_index"] = [round(v, 4) for v in self.index[kind]]
        if self.untargeted_index is not None:
            out[f"{prefix}untargeted_index"] = round(self.untargeted_index, 4)
            out[f"{prefix}untargeted_flagged"] = self.untargeted_flagged
            for kind, trig in self.untargeted.items():
                out[f"{prefix}untargeted_{kind}_size"] = round(float(trig.size[0]), 4)
        if self.margin_index is not None and self.margins is not None:
            out[f"{prefix}margins"] = [round(v, 4) for v in self.margins]
            out[f"{prefix}margin_index"] = [round(v, 4) for v in self.margin_index]
            out[f"{prefix}max_margin_index"] = round(max(self.margin_index), 4)
        out[f"{prefix}suspicion"] = round(self.suspicion, 4)
        if self.natural_classes:
            out[f"{prefix}natural_classes"] = list(self.natural_classes)
        if self.draw_suspicions:
            out[f"{prefix}draw_suspicions"] = [round(v, 4) for v in self.draw_suspicions]
        out[f"{prefix}near_threshold"] = self.near_threshold
        out[f"{prefix}backdoor_found"] = self.backdoor_found
        return out

    def _class_reason(self, k: int) -> str:
        """Why class ``k`` is flagged: the signals over their thresholds."""
        reasons = []
        if self.anomaly_index[k] > self.threshold:
            reasons.append(f"anomaly index {self.anomaly_index[k]:.2f} > {self.threshold:g}")
        if self.margin_index is not None and self.margin_index[k] > self.margin_threshold:
            reasons.append(f"margin index {self.margin_index[k]:.2f} > {self.margin_threshold:g}")
        return f"{k} ({', '.join(reasons)})"

    @property
    def near_threshold(self) -> bool:
        """The suspicion lies within :data:`NEAR_THRESHOLD` of the threshold: a scan with
        another seed (another draw of images) may well give the other verdict."""
        return abs(self.suspicion - 1.0) <= NEAR_THRESHOLD

    def verdict(self) -> str:
        """One sentence a user can act on (with the draws' spread after a second look, and a
        warning when the evidence sits so near the threshold that another draw may flip it)."""
        return self._finding() + self._natural_note() + self._draws_note() + self._near_note()

    def _near_note(self) -> str:
        if not self.near_threshold:
            return ""
        return (
            f"; at {self.suspicion:.2f} of the threshold, a scan with another seed may decide "
            "the other way: treat a backdoor as possible"
        )

    def _natural_note(self) -> str:
        if not self.natural_classes:
            return ""
        classes = ", ".join(str(k) for k in self.natural_classes)
        return (
            f"; class {classes} over the threshold but discounted as naturally small (its "
            "trigger is no smaller than in the tampered model, where it was not suspected)"
        )

    def _draws_note(self) -> str:
        if not self.draw_suspicions:
            return ""
        values = ", ".join(f"{v:.2f}" for v in self.draw_suspicions)
        pooled = self._strongest()  # before any natural-feature correction, as the draws were
        return (
            f"; decided on {len(self.draw_suspicions)} draws, as the first lay near the "
            f"threshold (suspicion per draw {values}; pooled {pooled:.2f}, above 1 is flagged)"
        )

    def _finding(self) -> str:
        parts = []
        if self.flagged_classes:
            classes = ", ".join(self._class_reason(k) for k in self.flagged_classes)
            parts.append(f"class {classes}")
        if self.untargeted_flagged:
            parts.append(
                f"a universal label-flipping trigger (untargeted index "
                f"{self.untargeted_index:.2f} above {self.untargeted_threshold:g}: a "
                "label-dependent backdoor such as all-to-all)"
            )
        if parts:
            return "backdoor suspected: " + "; ".join(parts)
        counted = [k for k in range(len(self.anomaly_index)) if k not in self.natural_classes]
        largest = max((self.anomaly_index[k] for k in counted), default=0.0)
        text = f"no class flagged (largest anomaly index {largest:.2f} ≤ {self.threshold:g}"
        if self.margin_index is not None:
            margin = max((self.margin_index[k] for k in counted), default=0.0)
            text += f", largest margin index {margin:.2f} ≤ {self.margin_threshold:g}"
        text += ")"
        if self.untargeted_index is not None:
            text += (
                f" and no universal label flipper (untargeted index {self.untargeted_index:.2f} "
                f"≤ {self.untargeted_threshold:g})"
            )
        return text


def anomaly_index(
    sizes: Sequence[float] | torch.Tensor,
    reference: Sequence[float] | torch.Tensor | None = None,
) -> list[float]:
    """Low-side MAD anomaly index of each class's trigger size (log scale).

    With ``reference`` (the same classes' sizes in a model that cannot carry the backdoor) each
    class is compared with itself first: r_k = log(size_k / reference_k).

    The class whose trigger is ten times smaller than the others' stands out:

    >>> [round(v, 2) for v in anomaly_index([10.0, 12.0, 8.0, 11.0, 9.0, 1.0])]
    [-0.6, -1.65, 0.67, -1.15, 0.0, 12.58]
    >>> anomaly_index([1.0, 2.0, 4.0], reference=[1.0, 2.0, 4.0])
    [0.0, 0.0, 0.0]
    """
    s = torch.as_tensor(sizes, dtype=torch.float64).clamp_min(1e-12).log()
    if reference is not None:
        ref = torch.as_tensor(reference, dtype=torch.float64).clamp_min(1e-12).log()
        if ref.shape != s.shape:
            raise ModeconnError(
                f"reference has {ref.numel()} class sizes, the model {s.numel()}: "
                "they must have the same classes"
            )
        s = s - ref
    med = s.median()
    mad = (s - med).abs().median() * MAD_SCALE
    # A floor keeps near-identical sizes from turning noise into huge indices: deviations under
    # 5% of a size (0.05 in log units) never count as anomalous.
    mad = max(float(mad), 0.05)
    return [float(v) for v in (med - s) / mad]


def margin_index(margins: Sequence[float] | torch.Tensor) -> list[float]:
    """High-side MAD index of each class's largest logit margin (log scale): how far above the
    other classes' margins a class can be pushed, the MM-BD statistic.

    >>> [round(v, 2) for v in margin_index([10.0, 12.0, 8.0, 11.0, 9.0, 100.0])]
    [-0.0, 1.17, -1.43, 0.61, -0.67, 14.74]
    """
    values = torch.as_tensor(margins, dtype=torch.float64).clamp_min(1e-3)
    return [-v for v in anomaly_index(values)]


def scan_draw(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    config: ScanConfig,
    reference: ScanResult | None = None,
) -> ScanResult:
    """One draw of the scan (:func:`~modeconn.defenses.scan.draws.scan_model` is the whole
    scan): synthesize every kind of trigger for every class of ``model`` with ``config.seed``
    and test for anomalies, against ``reference``'s trigger sizes when given."""
    triggers = {
        kind: synthesize_triggers(model, x, y, num_classes, kind, config) for kind in config.kinds
    }
    ref_sizes = _reference_sizes(reference, config.kinds)
    index = {
        kind: anomaly_index(trig.size, None if ref_sizes is None else ref_sizes[kind])
        for kind, trig in triggers.items()
    }
    combined = combine_kinds(index, config)
    margins = margin_idx = None
    if config.margin:
        margins = class_margins(
            model,
            x.shape[1:],
            num_classes,
            starts=config.margin_starts,
            steps=config.margin_steps,
            lr=config.margin_lr,
            seed=config.seed,
            device=x.device,
        ).tolist()
        margin_idx = margin_index(margins)
    flagged = flag_classes(combined, config, margin_idx)
    untargeted = {
        kind: synthesize_triggers(model, x, y, num_classes, kind, config, untargeted=True)
        for kind in (config.untargeted_kinds if config.untargeted else ())
        if kind in triggers
    }
    return ScanResult(
        triggers,
        index,
        combined,
        flagged,
        config.threshold,
        ref_sizes,
        untargeted=untargeted,
        untargeted_index=untargeted_index(triggers, untargeted) if untargeted else None,
        untargeted_threshold=config.untargeted_threshold,
        margins=margins,
        margin_index=margin_idx,
        margin_threshold=config.margin_threshold,
    )


def flag_classes(
    combined: Sequence[float], config: ScanConfig, margin_idx: Sequence[float] | None = None
) -> list[int]:
    """The classes whose combined anomaly index exceeds ``config.threshold`` or whose margin
    index (when measured) exceeds ``config.margin_threshold``.

    >>> flag_classes([3.5, 1.0, 2.0], ScanConfig(), margin_idx=[0.0, 0.0, 4.0])
    [0, 2]
    """
    return [
        k
        for k, v in enumerate(combined)
        if v > config.threshold
        or (margin_idx is not None and margin_idx[k] > config.margin_threshold)
    ]


def _reference_sizes(
    reference: ScanResult | None, kinds: Sequence[str]
) -> dict[str, list[float]] | None:
    """The reference scan's trigger sizes of every kind scanned (None without a reference)."""
    if reference is None:
        return None
    missing = [kind for kind in kinds if kind not in reference.triggers]
    if missing:
        raise ModeconnError(f"the reference scan has no '{missing[0]}' triggers")
    return {kind: [float(v) for v in reference.triggers[kind].size] for kind in kinds}


def combine_kinds(index: dict[str, list[float]], config: ScanConfig | None = None) -> list[float]:
    """One anomaly index per class, in units of ``config.threshold``, from the kinds' indices.

    Each kind's index is first scaled to the common threshold (a warp index of 8 on the warp
    threshold of 8 counts as 3 on the threshold of 3: the geometric kind runs higher on clean
    models, up to 5.3 on the zoo's calibration part, and warp targets there reach 20–23; the
    blend kind's threshold is 4.5, its clean models reaching 2.4 there and 3.9 on a held-out
    ResNet). Kinds of one group (the pixel kinds: mask and perturbation) are then averaged,
    since a patch or blend target stands out in both; the groups (pixels, blend, geometry) are
    maxed, since a warp target stands out in the geometric kind alone and averaging it with the
    pixel kinds would hide it.

    >>> combine_kinds({"mask": [4.0, 0.0], "perturbation": [2.0, 1.0], "warp": [0.0, 16.0]})
    [3.0, 6.0]
    """
    config = config or ScanConfig()
    groups: dict[str, list[list[float]]] = {}
    for kind, values in index.items():
        spec = KINDS[kind]()
        scale = config.threshold / spec.threshold(config)
        groups.setdefault(spec.group, []).append([v * scale for v in values])
    means = [[sum(col) / len(col) for col in zip(*rows, strict=True)] for rows in groups.values()]
    return [max(col) for col in zip(*means, strict=True)]


def untargeted_index(targeted: dict[str, TriggerSet], untargeted: dict[str, TriggerSet]) -> float:
    """How much smaller the universal label flipper is than a typical class's trigger: per kind
    log(median_k size_k / size_untargeted), averaged over the kinds of a group and maxed over
    the groups, as the classes' indices are (:func:`combine_kinds`).

    Moving every image off its label is never much easier than moving the other classes' images
    to one class, so on a clean model the two sizes are alike; a backdoor whose target depends
    on the label (all-to-all) is a universal label flipper far smaller than any class's trigger.
    The blend kind is a group of its own: a blended trigger is a small flipper in that kind
    alone (on the zoo's held-out part it lifted a sine-blend all-to-all lenet from 0.96 to 1.21
    and a warp ResNet from 0.89 to 1.42, clean models stayed at or below 0.92).

    >>> t = {"mask": TriggerSet("mask", torch.tensor([20.0, 30.0, 40.0]), torch.ones(3))}
    >>> u = {"mask": TriggerSet("mask", torch.tensor([3.0]), torch.ones(1), untargeted=True)}
    >>> round(untargeted_index(t, u), 3)
    2.303
    """
    return max(untargeted_groups(targeted, untargeted).values())


def untargeted_groups(
    targeted: dict[str, TriggerSet], untargeted: dict[str, TriggerSet]
) -> dict[str, float]:
    """The untargeted index of each group of kinds (see :func:`untargeted_index`)."""
    groups: dict[str, list[float]] = {}
    for kind, trig in untargeted.items():
        typical = max(float(targeted[kind].size.median()), 1e-12)
        ratio = math.log(typical / max(float(trig.size[0]), 1e-12))
        groups.setdefault(KINDS[kind].group, []).append(ratio)
    return {group: sum(logs) / len(logs) for group, logs in groups.items()}


def scan_images(
    data: PreparedData, count: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-stratified, seeded sample of ``count`` bonafide training images and labels.

    Every class must be present: a class without images could not be pushed away from.
    """
    loader = data.eval_loader("bonafide", device=device, limit=count)
    xs, ys = zip(*loader, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    counts = torch.bincount(y.cpu(), minlength=data.info.num_classes)
    missing = [k for k, c in enumerate(counts.tolist()) if c < 2]
    if missing:
        raise ModeconnError(
            f"the bonafide data has fewer than 2 images of class {missing[0]} "
            f"({len(y)} images drawn): use more bonafide samples"
        )
    return x, y
