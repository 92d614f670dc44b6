"""Synthesized triggers: one object per kind of trigger and the set of triggers a scan found.

A :class:`TriggerKind` says everything that differs between kinds: which tensors are optimised
and how they start, which trigger tensors (in [0, 1] image space) they stand for, how a trigger
is stamped on images, its size, and how it is scaled or drawn. The optimisation loop
(:func:`modeconn.defenses.scan.synthesis.synthesize_triggers`) is the same for every kind; a new
kind is a subclass added to :data:`KINDS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

#: Trigger tensors by name (``mask``, ``pattern``, ``delta``), K×… each.
Tensors = dict[str, torch.Tensor]


class TriggerKind(ABC):
    """The parametrisation of one kind of trigger, for K triggers side by side.

    ``params`` are the tensors the optimiser changes; :meth:`tensors` maps them to the trigger
    tensors a :class:`TriggerSet` keeps. Stamping and size work on trigger tensors, so the same
    code serves the optimisation (K×B images at once) and a finished trigger set.
    """

    #: The kind's name in :class:`ScanConfig.kinds <modeconn.defenses.scan.ScanConfig>`.
    name: ClassVar[str]
    #: What a figure of this kind shows and how its size is measured.
    description: ClassVar[str]
    #: Kinds of one group change the same thing (pixel values, or geometry): their indices are
    #: averaged, and the groups' averages are maxed (see ``combine_kinds``).
    group: ClassVar[str] = "pixels"

    @abstractmethod
    def settings(self, config: Any) -> tuple[float, float]:
        """The Adam learning rate and the starting size weight λ of this kind in ``config``."""

    def threshold(self, config: Any) -> float:
        """The anomaly index above which this kind alone flags a class (``config.threshold``
        unless the kind's indices run higher on clean models)."""
        return config.threshold

    @abstractmethod
    def init_params(
        self, count: int, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> list[torch.Tensor]:
        """The starting values of ``count`` triggers for images of ``shape`` (C×H×W), leaves
        that require gradients. Random draws come from ``generator`` only."""

    @abstractmethod
    def tensors(self, params: list[torch.Tensor]) -> Tensors:
        """The trigger tensors in image space that ``params`` stand for."""

    def stamp(self, x: torch.Tensor, trigger: Tensors) -> torch.Tensor:
        """Images ``x`` (N×C×H×W) stamped row by row with ``trigger`` (N triggers)."""
        return self.blend(x, trigger, lambda t: t)

    def stamp_all(self, x: torch.Tensor, trigger: Tensors) -> torch.Tensor:
        """Every one of the K triggers on every one of the images ``x`` (B×C×H×W): K×B×C×H×W."""
        return self.blend(x.unsqueeze(0), trigger, lambda t: t.unsqueeze(1))

    @abstractmethod
    def blend(
        self, x: torch.Tensor, trigger: Tensors, spread: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``x`` with ``trigger`` applied, kept in [0, 1]. Terms of the trigger alone are computed
        once per trigger and then lined up with ``x`` by ``spread`` (identity for one trigger
        per image, a new image axis for every trigger on every image)."""

    @abstractmethod
    def size(self, trigger: Tensors) -> torch.Tensor:
        """The size of each of the K triggers (the quantity the anomaly index compares)."""

    @abstractmethod
    def scaled(self, trigger: Tensors, factor: float) -> Tensors:
        """The same triggers ``factor`` times stronger, still valid triggers of this kind."""

    @abstractmethod
    def image(self, trigger: Tensors, k: int) -> torch.Tensor:
        """What trigger ``k`` looks like (C×H×W in [0, 1]), for figures."""


class MaskTrigger(TriggerKind):
    """Neural Cleanse (Wang et al. S&P 2019): x' = (1 − m)·x + m·p with a mask m ∈ [0, 1]^{H×W}
    and a pattern p ∈ [0, 1]^{C×H×W}, both through a sigmoid; size ‖m‖₁. Finds patch-like
    triggers."""

    name = "mask"
    description = "mask × pattern (size ‖m‖₁)"

    def settings(self, config: Any) -> tuple[float, float]:
        return config.mask_lr, config.mask_cost

    def mask_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The shape of one trigger's mask: one value per pixel."""
        return (1, height, width)

    def init_params(
        self, count: int, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> list[torch.Tensor]:
        c, h, w = shape
        mask_logit = torch.full((count, *self.mask_shape(h, w)), -2.0, device=device)
        pattern_logit = (torch.rand((count, c, h, w), generator=generator) * 2 - 1).to(device)
        return [mask_logit.requires_grad_(), pattern_logit.requires_grad_()]

    def tensors(self, params: list[torch.Tensor]) -> Tensors:
        mask_logit, pattern_logit = params
        return {"mask": torch.sigmoid(mask_logit), "pattern": torch.sigmoid(pattern_logit)}

    def blend(
        self, x: torch.Tensor, trigger: Tensors, spread: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        m = trigger["mask"]
        return (1 - spread(m)) * x + spread(m * trigger["pattern"])

    def size(self, trigger: Tensors) -> torch.Tensor:
        return trigger["mask"].flatten(1).sum(1)

    def scaled(self, trigger: Tensors, factor: float) -> Tensors:
        return {"mask": (trigger["mask"] * factor).clamp(0, 1), "pattern": trigger["pattern"]}

    def image(self, trigger: Tensors, k: int) -> torch.Tensor:
        return trigger["mask"][k] * trigger["pattern"][k]


class PerturbationTrigger(TriggerKind):
    """A universal additive change x' = clip(x + δ, 0, 1); size ‖δ‖₂. Finds dense triggers
    (blended patterns, warps), whose masks would cover the whole image."""

    name = "perturbation"
    description = "perturbation (size ‖δ‖₂)"

    def settings(self, config: Any) -> tuple[float, float]:
        return config.perturbation_lr, config.perturbation_cost

    def init_params(
        self, count: int, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> list[torch.Tensor]:
        return [torch.zeros((count, *shape), device=device, requires_grad=True)]

    def tensors(self, params: list[torch.Tensor]) -> Tensors:
        return {"delta": params[0]}

    def blend(
        self, x: torch.Tensor, trigger: Tensors, spread: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        return (x + spread(trigger["delta"])).clamp(0, 1)

    def size(self, trigger: Tensors) -> torch.Tensor:
        return trigger["delta"].flatten(1).norm(dim=1)

    def scaled(self, trigger: Tensors, factor: float) -> Tensors:
        return {"delta": trigger["delta"] * factor}

    def image(self, trigger: Tensors, k: int) -> torch.Tensor:
        d = trigger["delta"][k]
        scale = d.abs().max().clamp_min(1e-12)
        return 0.5 + 0.5 * d / scale


class BlendTrigger(MaskTrigger):
    """A whole image blended in: x' = (1 − α)·x + α·p with one opacity α ∈ [0, 1] per class
    (a mask that is the same at every pixel) and a pattern p ∈ [0, 1]^{C×H×W}; size α. Finds
    blended triggers (Chen et al. 2017: random noise, a natural image), which change every pixel
    a little and in proportion to the image: a mask pays for every pixel, and a universal
    additive change cannot dim the image as the blend does."""

    name = "blend"
    description = "blended image (size: opacity α)"
    group = "blend"

    def settings(self, config: Any) -> tuple[float, float]:
        return config.blend_lr, config.blend_cost

    def threshold(self, config: Any) -> float:
        return config.blend_threshold

    def mask_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """One opacity for the whole image."""
        return (1, 1, 1)

    def image(self, trigger: Tensors, k: int) -> torch.Tensor:
        """The blended pattern itself (at α of 0.1 the stamped change would be near black)."""
        return trigger["pattern"][k]


#: Every kind of trigger the scan synthesizes, by name.
class WarpTrigger(TriggerKind):
    """A smooth geometric warp x' = x sampled at (identity + flow), the flow bicubically
    upsampled from a coarse G×G grid of displacements (in pixels); size ‖flow‖₂ of the grid.
    Finds WaNet-style triggers, which move pixels instead of changing their values: a warp
    target needs a much smaller flow than the other classes, where a perturbation or a mask
    gains nothing."""

    name = "warp"
    description = "warp (flow magnitude; size ‖flow‖₂ in pixels)"
    group = "geometry"
    grid = 4

    def settings(self, config: Any) -> tuple[float, float]:
        return config.warp_lr, config.warp_cost

    def threshold(self, config: Any) -> float:
        return config.warp_threshold

    def init_params(
        self, count: int, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> list[torch.Tensor]:
        flow = torch.randn((count, 2, self.grid, self.grid), generator=generator) * 0.01
        return [flow.to(device).requires_grad_()]

    def tensors(self, params: list[torch.Tensor]) -> Tensors:
        return {"flow": params[0]}

    def blend(
        self, x: torch.Tensor, trigger: Tensors, spread: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        *_, height, width = x.shape
        grid = spread(_sampling_grid(trigger["flow"], height, width))
        lead = torch.broadcast_shapes(x.shape[:-3], grid.shape[:-3])
        images = x.expand(*lead, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
        grids = grid.expand(*lead, height, width, 2).reshape(-1, height, width, 2)
        warped = F.grid_sample(images, grids, align_corners=True, padding_mode="border")
        return warped.reshape(*lead, *x.shape[-3:])

    def size(self, trigger: Tensors) -> torch.Tensor:
        return trigger["flow"].flatten(1).norm(dim=1)

    def scaled(self, trigger: Tensors, factor: float) -> Tensors:
        return {"flow": trigger["flow"] * factor}

    def image(self, trigger: Tensors, k: int) -> torch.Tensor:
        flow = F.interpolate(trigger["flow"][k : k + 1], scale_factor=8, mode="bicubic")[0]
        magnitude = flow.norm(dim=0, keepdim=True)
        return magnitude / magnitude.max().clamp_min(1e-12)


def _sampling_grid(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """K×H×W×2 sampling grids in [−1, 1] (x, y) for K coarse flows K×2×G×G given in pixels."""
    dense = F.interpolate(flow, size=(height, width), mode="bicubic", align_corners=True)
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=flow.device)
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, height, device=flow.device),
        torch.linspace(-1, 1, width, device=flow.device),
        indexing="ij",
    )
    identity = torch.stack((xs, ys), dim=-1)
    return identity + dense.permute(0, 2, 3, 1) * scale


KINDS: dict[str, type[TriggerKind]] = {
    cls.name: cls for cls in (MaskTrigger, PerturbationTrigger, BlendTrigger, WarpTrigger)
}
TRIGGER_KINDS = tuple(KINDS)
#: The kinds a scan synthesizes unless told otherwise.
DEFAULT_KINDS = ("mask", "perturbation", "blend", "warp")
#: The names of all trigger tensors, in the order files list them.
TENSOR_NAMES = ("mask", "pattern", "delta", "flow")


def trigger_kind(name: str) -> TriggerKind:
    """The kind called ``name`` (a :data:`KINDS` key; callers check the name first)."""
    return KINDS[name]()


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
    flow: torch.Tensor | None = None
    untargeted: bool = False

    @property
    def num_classes(self) -> int:
        return int(self.size.numel())

    @property
    def tensors(self) -> Tensors:
        """The trigger tensors this set holds, by name."""
        return {n: getattr(self, n) for n in TENSOR_NAMES if getattr(self, n) is not None}

    def apply(self, x: torch.Tensor, classes: torch.Tensor | int) -> torch.Tensor:
        """Stamp images ``x`` (N×C×H×W in [0, 1]) with the trigger of ``classes`` (N or one)."""
        k = torch.as_tensor(classes, device=x.device).long().expand(x.shape[0])
        if self.untargeted:
            k = torch.zeros_like(k)
        chosen = {n: t.to(x.device)[k] for n, t in self.tensors.items()}
        return trigger_kind(self.kind).stamp(x, chosen)

    def scaled(self, factor: float) -> TriggerSet:
        """The same triggers ``factor`` times stronger (mask clipped to [0, 1], δ scaled).

        Synthesis keeps the *smallest* trigger that works, which is often only part of the real
        one; unlearning a stronger version covers more of it.
        """
        stronger = trigger_kind(self.kind).scaled(self.tensors, factor)
        return TriggerSet(
            self.kind, self.size, self.success, **stronger, untargeted=self.untargeted
        )

    def image(self, k: int) -> torch.Tensor:
        """What the trigger of class ``k`` looks like (C×H×W in [0, 1]), for figures."""
        return trigger_kind(self.kind).image(self.tensors, k)
