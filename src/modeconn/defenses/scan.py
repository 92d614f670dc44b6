"""Backdoor scan from bonafide data only: trigger synthesis per class and an anomaly index.

For every class k the scan looks for the smallest input change that sends bonafide images of the
*other* classes to k. A backdoor is such a change by construction — the attacker's trigger — so
the target class of a backdoored model needs a much smaller one than the other classes.

Two kinds of synthesized trigger, optimised for all classes at once (one batched forward pass of
``classes × batch`` images per step):

- ``mask`` (Neural Cleanse, Wang et al. S&P 2019): x' = (1 − m)·x + m·p with a mask
  m ∈ [0, 1]^{H×W} and a pattern p ∈ [0, 1]^{C×H×W}; size = ‖m‖₁. Finds patch-like triggers.
- ``perturbation``: a universal additive change x' = clip(x + δ) with size ‖δ‖₂. Finds dense
  triggers (blended patterns, warps), whose masks would cover the whole image.

Both minimise CE(f(x'), k) + λ_k·size with a per-class weight λ_k tuned as in Neural Cleanse: it
grows while the trigger reaches the success target and shrinks while it does not, and the smallest
trigger that reached the target is kept.

**Untargeted index.** A backdoor whose target depends on the label (all-to-all: y → y+1)
gives no class a small trigger, but its trigger moves images of every class off their label.
Per kind the scan also synthesizes one universal *untargeted* trigger (the smallest that moves
``untargeted_success`` of all images anywhere but their own label) and reports
log(median class size / untargeted size), averaged over the kinds; a model is flagged when it
exceeds ``untargeted_threshold`` (1.0: clean Fashion-MNIST lenets −0.3, all-to-all ones 1.6–1.8,
README). :attr:`ScanResult.backdoor_found` is either finding.

**Anomaly index.** Per kind, the sizes are compared across classes on a log scale (a trigger
half the usual size is as suspicious on a large class as on a small one) by the median absolute
deviation: index_k = (median(r) − r_k) / (1.4826·MAD(r)) with r_k = log size_k. Only small
triggers are suspicious, so only the low side counts. A class's anomaly index is the mean of its
indices over the kinds, and a class is flagged when that exceeds ``threshold`` (default 3).

Calibration (Fashion-MNIST lenets, 512 bonafide images, 150 steps; README): classes have natural
trigger sizes — "bag" needs a small mask in every model, which is what flags clean models under
plain Neural Cleanse (linear sizes, mask only, threshold 2). On the log scale, averaged over both
kinds, three clean models stayed at or below 2.6 while the targets of three patch and two blend
backdoors scored 3.4 to 9.2 (the README's calibration table; a warp target scored 2.4 and was
missed). A *reference* model that cannot carry the backdoor (e.g. one trained from scratch on the
bonafide data) can be given instead: each class is then compared with itself first,
r_k = log(size_k / size_k(reference)). It cancels natural sizes in principle, but on Fashion-MNIST
its own noise made it flag clean models more often than the log scale alone, so it is an option,
not the default.

Everything here works on tensors and modules in memory; :mod:`modeconn.commands` (``modeconn
scan``) owns the run directory, the reference training and the PNG images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.experiment import PreparedData
from modeconn.modes import eval_mode

TRIGGER_KINDS = ("mask", "perturbation")
MAD_SCALE = 1.4826  # makes the MAD a consistent estimate of the standard deviation


@dataclass
class ScanConfig:
    """Settings of the trigger synthesis and the anomaly test."""

    images: int = 512
    steps: int = 150
    batch_size: int = 24
    kinds: tuple[str, ...] = TRIGGER_KINDS
    mask_lr: float = 0.1
    perturbation_lr: float = 0.02
    mask_cost: float = 1e-3
    perturbation_cost: float = 1e-2
    success_target: float = 0.95
    patience: int = 5
    cost_factor: float = 1.5
    threshold: float = 3.0
    untargeted: bool = True
    untargeted_batch: int = 96
    untargeted_success: float = 0.9
    untargeted_threshold: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.images < 2 or self.steps < 1 or self.batch_size < 1:
            raise ModeconnError(
                "scan needs images ≥ 2, steps ≥ 1 and batch_size ≥ 1, got "
                f"{self.images}, {self.steps}, {self.batch_size}"
            )
        unknown = [k for k in self.kinds if k not in TRIGGER_KINDS]
        if unknown or not self.kinds:
            raise InvalidArgument(
                None,
                f"unknown trigger kind {unknown or self.kinds} (use {', '.join(TRIGGER_KINDS)})",
            )
        if not 0.0 < self.success_target <= 1.0:
            raise InvalidArgument(
                None, f"success target must lie in (0, 1], got {self.success_target}"
            )
        if not self.threshold > 0:
            raise InvalidArgument(None, f"anomaly threshold must be positive, got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TriggerSet:
    """One synthesized trigger per class.

    ``kind == "mask"``: ``mask`` (K×1×H×W) and ``pattern`` (K×C×H×W) in [0, 1];
    ``kind == "perturbation"``: ``delta`` (K×C×H×W). ``size`` is ‖m‖₁ or ‖δ‖₂ per class and
    ``success`` the fraction of other-class images the trigger sent to its class.
    ``untargeted``: one universal trigger (K = 1) that moves images of every class away from their
    label; :meth:`apply` stamps it whatever class it is given.
    """

    kind: str
    size: torch.Tensor
    success: torch.Tensor
    mask: torch.Tensor | None = None
    pattern: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    untargeted: bool = False

    @property
    def num_classes(self) -> int:
        return int(self.size.numel())

    def apply(self, x: torch.Tensor, classes: torch.Tensor | int) -> torch.Tensor:
        """Stamp images ``x`` (N×C×H×W in [0, 1]) with the trigger of ``classes`` (N or one)."""
        k = torch.as_tensor(classes, device=x.device).long().expand(x.shape[0])
        if self.untargeted:
            k = torch.zeros_like(k)
        if self.kind == "mask":
            m = self.mask.to(x.device)[k]
            return (1 - m) * x + m * self.pattern.to(x.device)[k]
        return (x + self.delta.to(x.device)[k]).clamp(0, 1)

    def scaled(self, factor: float) -> TriggerSet:
        """The same triggers ``factor`` times stronger (mask clipped to [0, 1], δ scaled).

        Synthesis keeps the *smallest* trigger that works, which is often only part of the real
        one; unlearning a stronger version covers more of it.
        """
        if self.kind == "mask":
            return TriggerSet(
                self.kind,
                self.size,
                self.success,
                mask=(self.mask * factor).clamp(0, 1),
                pattern=self.pattern,
                untargeted=self.untargeted,
            )
        return TriggerSet(
            self.kind,
            self.size,
            self.success,
            delta=self.delta * factor,
            untargeted=self.untargeted,
        )

    def image(self, k: int) -> torch.Tensor:
        """What the trigger of class ``k`` looks like (C×H×W in [0, 1]), for figures."""
        if self.kind == "mask":
            return self.mask[k] * self.pattern[k]
        d = self.delta[k]
        scale = d.abs().max().clamp_min(1e-12)
        return 0.5 + 0.5 * d / scale


@dataclass
class ScanResult:
    """What the scan found: per kind the triggers, sizes and indices; the flagged classes."""

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
        the largest anomaly index over ``threshold`` or the untargeted index over its own."""
        value = max(self.anomaly_index) / self.threshold
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
        out[f"{prefix}backdoor_found"] = self.backdoor_found
        return out

    def verdict(self) -> str:
        """One sentence a user can act on."""
        parts = []
        if self.flagged_classes:
            classes = ", ".join(
                f"{k} (index {self.anomaly_index[k]:.2f})" for k in self.flagged_classes
            )
            parts.append(f"class {classes} above {self.threshold:g}")
        if self.untargeted_flagged:
            parts.append(
                f"a universal label-flipping trigger (untargeted index "
                f"{self.untargeted_index:.2f} above {self.untargeted_threshold:g}: a "
                "label-dependent backdoor such as all-to-all)"
            )
        if parts:
            return "backdoor suspected: " + "; ".join(parts)
        text = (
            f"no class flagged (largest anomaly index {max(self.anomaly_index):.2f} "
            f"≤ {self.threshold:g})"
        )
        if self.untargeted_index is not None:
            text += (
                f" and no universal label flipper (untargeted index {self.untargeted_index:.2f} "
                f"≤ {self.untargeted_threshold:g})"
            )
        return text


def _class_eligibility(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K×N: True where image n is not of class k (only those count for class k's trigger)."""
    return y.unsqueeze(0) != torch.arange(num_classes, device=y.device).unsqueeze(1)


def check_scan_data(y: torch.Tensor, num_classes: int) -> None:
    """Every class needs other-class images to push and the data needs at least two classes."""
    present = torch.unique(y)
    if present.numel() < 2:
        raise InvalidArgument(
            None, f"the scan needs bonafide images of at least two classes, got {present.numel()}"
        )
    if int(present.max()) >= num_classes:
        raise ModeconnError(
            f"bonafide labels go up to {int(present.max())} but the model has {num_classes} classes"
        )


def synthesize_triggers(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    kind: str = "mask",
    config: ScanConfig | None = None,
    *,
    untargeted: bool = False,
) -> TriggerSet:
    """Optimise one trigger of ``kind`` per class on images ``x`` (labels ``y``), all classes in
    one batched pass per step. ``model`` is used in eval mode and left unchanged.

    ``untargeted``: a single universal trigger instead, the smallest that moves
    ``config.untargeted_success`` of *all* images away from their own label, wherever they go
    (loss −log(1 − p_y)). A backdoor whose target depends on the label (all-to-all) gives no
    class a small targeted trigger, but its trigger is exactly such a universal label flipper.
    """
    config = config or ScanConfig()
    if kind not in TRIGGER_KINDS:
        raise InvalidArgument(
            None, f"unknown trigger kind '{kind}' (use {', '.join(TRIGGER_KINDS)})"
        )
    check_scan_data(y, num_classes)
    device = x.device
    n, c, h, w = x.shape
    gen = torch.Generator().manual_seed(config.seed)
    K = 1 if untargeted else num_classes  # triggers optimised side by side
    batch = config.untargeted_batch if untargeted else config.batch_size
    target_rate = config.untargeted_success if untargeted else config.success_target
    if kind == "mask":
        mask_logit = torch.full((K, 1, h, w), -2.0, device=device)
        pattern_logit = (torch.rand((K, c, h, w), generator=gen) * 2 - 1).to(device)
        params = [mask_logit.requires_grad_(), pattern_logit.requires_grad_()]
        lr, cost0 = config.mask_lr, config.mask_cost
    else:
        delta = torch.zeros((K, c, h, w), device=device, requires_grad=True)
        params = [delta]
        lr, cost0 = config.perturbation_lr, config.perturbation_cost
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))
    cost = torch.full((K,), cost0, device=device)
    targets = torch.arange(K, device=device)
    best_size = torch.full((K,), math.inf, device=device)
    best_success = torch.zeros(K, device=device)
    best = [p.detach().clone() for p in params]
    window_success = torch.zeros(K, device=device)
    grad_state = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with eval_mode(model):
            for step in range(config.steps):
                pick = torch.randint(0, n, (min(batch, n),), generator=gen).to(device)
                xb, yb = x[pick], y[pick]
                if kind == "mask":
                    m = torch.sigmoid(mask_logit)
                    p = torch.sigmoid(pattern_logit)
                    xs = (1 - m.unsqueeze(1)) * xb.unsqueeze(0) + (m * p).unsqueeze(1)
                    size = m.flatten(1).sum(1)
                else:
                    xs = (xb.unsqueeze(0) + delta.unsqueeze(1)).clamp(0, 1)
                    size = delta.flatten(1).norm(dim=1)
                logits = model(xs.reshape(-1, c, h, w))
                if untargeted:
                    p_true = logits.softmax(1).gather(1, yb.unsqueeze(1)).view(1, -1)
                    loss_per = -torch.log((1 - p_true).clamp_min(1e-6))
                    hits = (logits.argmax(1) != yb).float().view(1, -1)
                    eligible = torch.ones_like(hits)
                else:
                    goal = targets.repeat_interleave(xb.shape[0])
                    loss_per = F.cross_entropy(logits, goal, reduction="none").view(K, -1)
                    hits = (logits.argmax(1) == goal).float().view(K, -1)
                    eligible = _class_eligibility(yb, K).float()  # K×B
                count = eligible.sum(1).clamp_min(1)
                loss_k = (loss_per * eligible).sum(1) / count
                success = (hits * eligible).sum(1) / count
                loss = (loss_k + cost * size).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    improved = (success >= target_rate) & (size < best_size)
                    best_size = torch.where(improved, size.detach(), best_size)
                    best_success = torch.where(improved, success, best_success)
                    for keep, cur in zip(best, params, strict=True):
                        keep[improved] = cur.detach()[improved]
                    window_success += success
                    if (step + 1) % config.patience == 0:
                        reached = window_success / config.patience >= target_rate
                        cost = torch.where(
                            reached, cost * config.cost_factor, cost / config.cost_factor
                        )
                        window_success.zero_()
            with torch.no_grad():
                never = torch.isinf(best_size)
                # A class whose trigger never reached the target keeps its last trigger and size:
                # a large one, which is what "no small trigger found" means for the index.
                for keep, cur in zip(best, params, strict=True):
                    keep[never] = cur.detach()[never]
                if kind == "mask":
                    final = torch.sigmoid(best[0]).flatten(1).sum(1)
                else:
                    final = best[0].flatten(1).norm(dim=1)
                best_size = torch.where(never, final, best_size)
                best_success = torch.where(never, success, best_success)
    finally:
        for p, g in zip(model.parameters(), grad_state, strict=True):
            p.requires_grad_(g)
    if kind == "mask":
        return TriggerSet(
            kind,
            best_size.cpu(),
            best_success.cpu(),
            mask=torch.sigmoid(best[0]).cpu(),
            pattern=torch.sigmoid(best[1]).cpu(),
            untargeted=untargeted,
        )
    return TriggerSet(
        kind, best_size.cpu(), best_success.cpu(), delta=best[0].cpu(), untargeted=untargeted
    )


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


def scan_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    config: ScanConfig | None = None,
    *,
    reference: nn.Module | ScanResult | None = None,
) -> ScanResult:
    """Synthesize every kind of trigger for every class of ``model`` and test for anomalies.

    ``x``, ``y``: bonafide images in [0, 1] and labels (never the test set). ``reference``: a
    model that cannot carry the backdoor (scanned here with the same settings), or a previous
    :class:`ScanResult` of one; without it the index compares raw sizes across classes.
    """
    config = config or ScanConfig()
    config.validate()
    ref_result = reference
    if isinstance(reference, nn.Module):
        ref_result = scan_model(reference, x, y, num_classes, config)
    triggers: dict[str, TriggerSet] = {}
    index: dict[str, list[float]] = {}
    ref_sizes: dict[str, list[float]] | None = {} if ref_result is not None else None
    for kind in config.kinds:
        trig = synthesize_triggers(model, x, y, num_classes, kind, config)
        triggers[kind] = trig
        ref = None
        if ref_result is not None:
            if kind not in ref_result.triggers:
                raise ModeconnError(f"the reference scan has no '{kind}' triggers")
            ref = ref_result.triggers[kind].size
            ref_sizes[kind] = [float(v) for v in ref]
        index[kind] = anomaly_index(trig.size, ref)
    combined = [
        sum(index[kind][k] for kind in config.kinds) / len(config.kinds) for k in range(num_classes)
    ]
    flagged = [k for k, v in enumerate(combined) if v > config.threshold]
    untargeted: dict[str, TriggerSet] = {}
    if config.untargeted:
        for kind in config.kinds:
            untargeted[kind] = synthesize_triggers(
                model, x, y, num_classes, kind, config, untargeted=True
            )
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
    )


def untargeted_index(targeted: dict[str, TriggerSet], untargeted: dict[str, TriggerSet]) -> float:
    """How much smaller the universal label flipper is than a typical class's trigger: per kind
    log(median_k size_k / size_untargeted), averaged over the kinds.

    Moving every image off its label is never much easier than moving the other classes' images
    to one class, so on a clean model the two sizes are alike; a backdoor whose target depends
    on the label (all-to-all) is a universal label flipper far smaller than any class's trigger.

    >>> t = {"mask": TriggerSet("mask", torch.tensor([20.0, 30.0, 40.0]), torch.ones(3))}
    >>> u = {"mask": TriggerSet("mask", torch.tensor([3.0]), torch.ones(1), untargeted=True)}
    >>> round(untargeted_index(t, u), 3)
    2.303
    """
    logs = [
        math.log(float(targeted[kind].size.median()) / max(float(trig.size[0]), 1e-12))
        for kind, trig in untargeted.items()
    ]
    return sum(logs) / len(logs)


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


class UnlearningTransform:
    """A loader transform for trigger unlearning: stamps synthesized triggers on part of each
    batch and keeps the true labels, so training teaches the model to ignore them.

    Each image draws one of three disjoint shares:

    - ``rate``: the trigger of one of ``classes`` (the flagged ones; every class when None);
    - ``uniform_rate``: the trigger of a random class other than the image's own (stamping an
      image with its own class's trigger teaches nothing);
    - ``untargeted_rate``: one of the ``untargeted`` universal label flippers (see
      :func:`synthesize_triggers`), which need no verdict about a class and cover backdoors whose
      target depends on the label (all-to-all).

    ``triggers`` may be replaced between epochs. Draws use the global RNG, which the training loop
    re-seeds every epoch.
    """

    def __init__(
        self,
        triggers: Sequence[TriggerSet],
        rate: float = 0.3,
        classes: Sequence[int] | None = None,
        uniform_rate: float = 0.0,
        untargeted: Sequence[TriggerSet] = (),
        untargeted_rate: float = 0.0,
    ) -> None:
        shares = (rate, uniform_rate, untargeted_rate)
        if min(shares) < 0.0 or not 0.0 < sum(shares) <= 1.0:
            raise InvalidArgument(
                None,
                "unlearning shares must be non-negative and add up to a value in (0, 1], got "
                f"rate {rate}, uniform_rate {uniform_rate}, untargeted_rate {untargeted_rate}",
            )
        if not triggers:
            raise InvalidArgument(None, "unlearning needs at least one set of synthesized triggers")
        if untargeted_rate > 0 and not untargeted:
            raise InvalidArgument(None, "an untargeted share needs untargeted triggers")
        self.triggers = list(triggers)
        self.untargeted = list(untargeted)
        self.rate = rate
        self.uniform_rate = uniform_rate
        self.untargeted_rate = untargeted_rate
        self.classes = list(classes) if classes else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        draw = torch.rand(x.shape[0])
        per_class = draw < self.rate + self.uniform_rate
        universal = (~per_class) & (draw < self.rate + self.uniform_rate + self.untargeted_rate)
        if not bool(per_class.any() or universal.any()):
            return x, y
        x = x.clone()
        if bool(per_class.any()):
            idx = per_class.nonzero().squeeze(1)
            num_classes = self.triggers[0].num_classes
            # any class but the image's own: draw from the other K−1
            k = (y[idx].cpu() + torch.randint(1, num_classes, (idx.numel(),))) % num_classes
            if self.classes:  # the first ``rate`` of the draw goes to the flagged classes
                pool = torch.tensor(self.classes)
                chosen = pool[torch.randint(0, len(pool), (idx.numel(),))]
                k = torch.where(draw[idx] < self.rate, chosen, k)
            self._stamp(x, idx, k, self.triggers)
        if bool(universal.any()):
            idx = universal.nonzero().squeeze(1)
            self._stamp(x, idx, torch.zeros(idx.numel(), dtype=torch.long), self.untargeted)
        return x, y

    @staticmethod
    def _stamp(
        x: torch.Tensor, idx: torch.Tensor, k: torch.Tensor, triggers: Sequence[TriggerSet]
    ) -> None:
        """Stamp rows ``idx`` of ``x`` in place, each with class ``k``'s trigger of a random set."""
        which = torch.randint(0, len(triggers), (idx.numel(),))
        for j, trig in enumerate(triggers):
            sel = which == j
            if bool(sel.any()):
                rows = idx[sel].to(x.device)
                x[rows] = trig.apply(x[rows], k[sel].to(x.device))


__all__ = [
    "TRIGGER_KINDS",
    "ScanConfig",
    "ScanResult",
    "TriggerSet",
    "UnlearningTransform",
    "anomaly_index",
    "scan_images",
    "scan_model",
    "synthesize_triggers",
    "untargeted_index",
]
