"""Backdoor poisoning: triggers, label maps, a poisoning batch transform and the attack's metrics.

A backdoored model is trained by the ordinary training loop on data where a fixed, seeded subset
of the training *samples* — ``rate`` × the training split — carries a trigger and the attacker's
label (all-to-one: the target class; all-to-all: y → (y + 1) mod C). Triggers (all on images in
[0, 1]):

- ``patch`` (BadNets, Gu et al. 2017): a ``size``×``size`` square at ``position`` (a corner name or
  ``[row, col]`` of its top-left pixel), filled with ``value`` in a ``solid``, ``checkerboard`` or
  seeded ``random`` binary pattern. Default: a solid 3×3 square of the maximum value at the
  bottom-right corner.
- ``blend`` (Chen et al. 2017): x' = (1 − α)x + α·pattern, the pattern a seeded uniform random
  image (``pattern="random"``) or an image given as a ``.npy`` file (H×W, C×H×W or H×W×C; uint8
  or [0, 1]).
- ``warp`` (WaNet, Nguyen & Tran 2021): a fixed seeded smooth warping field — a random
  ``warp_grid``×``warp_grid`` flow upsampled to the image and scaled by ``warp_strength`` — applied
  with ``grid_sample``; invisible to the eye.

**ASR** counts only test images whose true label is not the target (all-to-one), or the fraction
of all test images sent to (y + 1) mod C (all-to-all); images of the target class would be
"successes" without any backdoor and would put a floor of about 1/C under every number.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.layout import fast_layout
from modeconn.modes import eval_mode

TRIGGERS = ("patch", "blend", "warp")
LABEL_MODES = ("all-to-one", "all-to-all")
PATCH_PATTERNS = ("solid", "checkerboard", "random")
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


@dataclass
class TriggerSpec:
    """A backdoor: its trigger, label mode, target and poisoning rate, JSON-safe for the sidecar."""

    type: str = "patch"
    size: int = 3
    position: str | list[int] = "bottom-right"
    value: float = 1.0
    pattern: str = "solid"
    alpha: float = 0.2
    warp_grid: int = 4
    warp_strength: float = 0.5
    target: int = 0
    label_mode: str = "all-to-one"
    rate: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.position, tuple):
            self.position = list(self.position)
        if self.type == "blend" and self.pattern == "solid":
            self.pattern = "random"  # the patch default means nothing for a blend
        self.validate()

    def validate(self) -> None:
        """Reject settings that cannot describe a trigger, with one line naming the field."""
        if self.type not in TRIGGERS:
            raise InvalidArgument(
                None, f"unknown trigger '{self.type}' (use {', '.join(TRIGGERS)})"
            )
        if self.label_mode not in LABEL_MODES:
            raise InvalidArgument(
                None, f"unknown label mode '{self.label_mode}' (use {', '.join(LABEL_MODES)})"
            )
        if not 0.0 <= self.rate <= 1.0:
            raise InvalidArgument(None, f"poisoning rate must lie in [0, 1], got {self.rate}")
        if not _is_int(self.target) or self.target < 0:
            raise InvalidArgument(
                "target", f"target must be a non-negative class index, got {self.target!r}"
            )
        if self.type == "patch":
            if not _is_int(self.size) or self.size < 1:
                raise InvalidArgument(
                    None, f"patch size must be a positive integer, got {self.size!r}"
                )
            if not 0.0 <= self.value <= 1.0:
                raise InvalidArgument(None, f"patch value must lie in [0, 1], got {self.value}")
            if self.pattern not in PATCH_PATTERNS:
                raise InvalidArgument(
                    None,
                    f"unknown patch pattern '{self.pattern}' (use {', '.join(PATCH_PATTERNS)})",
                )
            _check_position(self.position)
        elif self.type == "blend":
            if not 0.0 < self.alpha <= 1.0:
                raise InvalidArgument(
                    None, f"blend ratio alpha must lie in (0, 1], got {self.alpha}"
                )
            if self.pattern != "random" and not Path(self.pattern).is_file():
                raise InvalidArgument(
                    "pattern",
                    f"blend pattern must be 'random' or a .npy image file; "
                    f"{self.pattern} not found",
                )
        elif self.warp_grid < 2 or self.warp_strength <= 0:
            raise ModeconnError("warp trigger needs warp_grid ≥ 2 and warp_strength > 0")

    def check_for(self, num_classes: int, image_size: int | None = None) -> None:
        """Check that the target exists among ``num_classes`` and the patch fits ``image_size``."""
        if self.target >= num_classes:
            raise ModeconnError(
                f"target class {self.target} does not exist: the data set has {num_classes} classes"
            )
        if self.type == "patch" and image_size is not None:
            row, col = patch_origin(self, image_size, image_size)
            if row < 0 or col < 0 or row + self.size > image_size or col + self.size > image_size:
                raise ModeconnError(
                    f"a {self.size}×{self.size} patch at {self.position} does not fit "
                    f"{image_size}×{image_size} images"
                )

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's ``attack`` entry: ``{"type": "backdoor", "trigger": ..., ...}``."""
        record = asdict(self)
        return {"type": "backdoor", "trigger": record.pop("type"), **record}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TriggerSpec:
        """Inverse of :meth:`to_dict` (also accepts the bare field names)."""
        record = dict(data)
        if record.get("type") == "backdoor":
            record.pop("type")
            record["type"] = record.pop("trigger", "patch")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise InvalidArgument(None, f"unknown backdoor spec fields: {', '.join(unknown)}")
        return cls(**record)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_position(position: str | list[int]) -> None:
    if isinstance(position, str):
        if position not in CORNERS:
            raise InvalidArgument(
                None, f"unknown patch position '{position}' (use {', '.join(CORNERS)} or ROW,COL)"
            )
    elif len(position) != 2 or not all(_is_int(p) and p >= 0 for p in position):
        raise InvalidArgument(
            None, f"patch position must be a corner or [row, col], got {position!r}"
        )


def patch_origin(spec: TriggerSpec, height: int, width: int) -> tuple[int, int]:
    """Row and column of the patch's top-left pixel."""
    if isinstance(spec.position, str):
        row = height - spec.size if spec.position.startswith("bottom") else 0
        col = width - spec.size if spec.position.endswith("right") else 0
        return row, col
    return int(spec.position[0]), int(spec.position[1])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def patch_pattern(spec: TriggerSpec) -> torch.Tensor:
    """The patch's pixels, 1×size×size (broadcast over channels)."""
    s = spec.size
    if spec.pattern == "solid":
        mask = torch.ones(s, s)
    elif spec.pattern == "checkerboard":
        mask = ((torch.arange(s)[:, None] + torch.arange(s)[None, :]) % 2 == 0).float()
    else:
        mask = (torch.rand(s, s, generator=_generator(spec.seed)) < 0.5).float()
    return (mask * spec.value)[None]


@functools.lru_cache(maxsize=8)
def _load_pattern_file(path: str) -> torch.Tensor:
    """A pattern image from a ``.npy`` file as float C×H×W in [0, 1] (read once)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ModeconnError(f"cannot read blend pattern {path}: {err}") from None
    pattern = torch.from_numpy(np.asarray(array, dtype=np.float32))
    if array.dtype == np.uint8:
        pattern = pattern / 255.0
    if pattern.ndim == 2:
        pattern = pattern[None]
    elif pattern.ndim == 3 and pattern.shape[-1] in (1, 3) and pattern.shape[0] not in (1, 3):
        pattern = pattern.permute(2, 0, 1)
    if pattern.ndim != 3 or float(pattern.min()) < 0 or float(pattern.max()) > 1:
        raise InvalidArgument(None, f"blend pattern {path} must be one image with values in [0, 1]")
    return pattern


def blend_pattern(spec: TriggerSpec, shape: tuple[int, int, int]) -> torch.Tensor:
    """The blend pattern as C×H×W in [0, 1]: seeded uniform noise, or the given image resized."""
    channels, height, width = shape
    if spec.pattern == "random":
        return torch.rand(shape, generator=_generator(spec.seed))
    pattern = _load_pattern_file(spec.pattern)
    if pattern.shape[1:] != (height, width):
        pattern = F.interpolate(
            pattern[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
    if pattern.shape[0] != channels:
        pattern = pattern.mean(0, keepdim=True).expand(channels, height, width)
    return pattern.clamp(0, 1)


def warp_grid(spec: TriggerSpec, height: int, width: int) -> torch.Tensor:
    """WaNet's fixed sampling grid, 1×H×W×2 in [−1, 1]: identity plus a smooth seeded flow."""
    flow = torch.rand(1, 2, spec.warp_grid, spec.warp_grid, generator=_generator(spec.seed))
    flow = flow * 2 - 1
    flow = flow / flow.abs().mean()
    flow = F.interpolate(flow, size=(height, width), mode="bicubic", align_corners=True)
    flow = flow.permute(0, 2, 3, 1)
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij"
    )
    identity = torch.stack((xs, ys), dim=-1)[None]
    return (identity + spec.warp_strength * flow / height).clamp(-1, 1)


def apply_trigger(x: torch.Tensor, spec: TriggerSpec) -> torch.Tensor:
    """Return a copy of the batch ``x`` (N×C×H×W in [0, 1]) with the trigger applied."""
    _, channels, height, width = x.shape
    if spec.type == "patch":
        row, col = patch_origin(spec, height, width)
        out = x.clone()
        out[:, :, row : row + spec.size, col : col + spec.size] = patch_pattern(spec).to(x)
        return out
    if spec.type == "blend":
        pattern = blend_pattern(spec, (channels, height, width)).to(x)
        return torch.lerp(x, pattern.expand_as(x), spec.alpha)
    grid = warp_grid(spec, height, width).to(x).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, align_corners=True).clamp_(0.0, 1.0)


def target_labels(y: torch.Tensor, spec: TriggerSpec, num_classes: int) -> torch.Tensor:
    """The labels the backdoor maps ``y`` to: the target, or (y + 1) mod C for all-to-all."""
    if spec.label_mode == "all-to-one":
        return torch.full_like(y, spec.target)
    return (y + 1) % num_classes


def poisoned_indices(pool: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    """The seeded subset of ``pool`` (sample indices) to poison: round(rate·|pool|) of them."""
    pool = torch.as_tensor(pool, dtype=torch.long).reshape(-1)
    count = round(rate * pool.numel())
    order = torch.randperm(pool.numel(), generator=_generator(seed))[:count]
    return pool[order].sort().values


class PoisonTransform:
    """A :class:`~modeconn.data.TensorLoader` transform that poisons training batches.

    With ``poisoned`` (sample indices, from :func:`poisoned_indices`) the loader passes each
    batch's sample indices and exactly those samples carry the trigger and the attacker's label,
    in every epoch — the poisoning rate is the fraction of training samples poisoned. Without it
    (a loader that cannot tell sample indices), a ``rate`` fraction of each batch is poisoned at
    random from the global RNG, which the training loop re-seeds every epoch, so runs stay
    reproducible; the fraction is then an expectation and every sample is sometimes clean.
    """

    takes_indices = True

    def __init__(
        self, spec: TriggerSpec, num_classes: int, poisoned: torch.Tensor | None = None
    ) -> None:
        self.spec = spec
        self.num_classes = num_classes
        self.poisoned = None if poisoned is None else torch.as_tensor(poisoned, dtype=torch.long)

    def mask(self, n: int, indices: torch.Tensor | None) -> torch.Tensor:
        """Which of the batch's ``n`` samples to poison."""
        if self.poisoned is not None and indices is not None:
            return torch.isin(indices.cpu(), self.poisoned)
        return torch.rand(n) < self.spec.rate

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.mask(x.shape[0], indices).to(x.device)
        if not bool(mask.any()):
            return x, y
        x, y = x.clone(), y.clone()
        x[mask] = apply_trigger(x[mask], self.spec)
        y[mask] = target_labels(y[mask], self.spec, self.num_classes)
        return x, y


def poison_transform(
    spec: TriggerSpec,
    num_classes: int,
    seed: int | None = None,
    *,
    pool: torch.Tensor | None = None,
) -> PoisonTransform:
    """The training-batch transform of ``spec``.

    ``pool`` — the training split's sample indices (``data.indices("train")``) — selects the
    fixed poisoned subset (seeded by ``seed``, default ``spec.seed``); without it, batches are
    poisoned at rate ``spec.rate`` at random (see :class:`PoisonTransform`).
    """
    spec.check_for(num_classes)
    chosen = None
    if pool is not None:
        chosen = poisoned_indices(pool, spec.rate, spec.seed if seed is None else seed)
    return PoisonTransform(spec, num_classes, chosen)


@torch.no_grad()
def backdoor_metrics(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    spec: TriggerSpec,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """ASR and poisoned accuracy of ``model`` (eval mode) on the triggered images of ``loader``.

    Both are fractions of the same images: those whose true label is not the target (all-to-one),
    or all of them (all-to-all). ``asr``: classified as the attacker's label; ``poisoned_acc``:
    still classified as their true label.
    """
    hits, correct, count = 0, 0, 0
    with eval_mode(model), fast_layout(model, device):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(apply_trigger(x, spec))
            pred = logits.argmax(1)
            eligible = (
                y != spec.target
                if spec.label_mode == "all-to-one"
                else torch.ones_like(y, dtype=bool)
            )
            hits += (eligible & (pred == target_labels(y, spec, logits.shape[1]))).sum().item()
            correct += (eligible & (pred == y)).sum().item()
            count += eligible.sum().item()
    if count == 0:
        raise ModeconnError("no test image outside the target class: cannot measure the ASR")
    return {"asr": hits / count, "poisoned_acc": correct / count}


def attack_success_rate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    spec: TriggerSpec,
    device: torch.device | str = "cpu",
) -> float:
    """ASR: the fraction of triggered non-target images classified as the attacker's label."""
    return backdoor_metrics(model, loader, spec, device)["asr"]


def poisoned_accuracy(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    spec: TriggerSpec,
    device: torch.device | str = "cpu",
) -> float:
    """The fraction of the same triggered images still classified as their true label."""
    return backdoor_metrics(model, loader, spec, device)["poisoned_acc"]


__all__ = [
    "LABEL_MODES",
    "TRIGGERS",
    "PoisonTransform",
    "TriggerSpec",
    "apply_trigger",
    "attack_success_rate",
    "backdoor_metrics",
    "blend_pattern",
    "patch_origin",
    "poison_transform",
    "poisoned_accuracy",
    "poisoned_indices",
    "target_labels",
    "warp_grid",
]
