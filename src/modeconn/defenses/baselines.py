"""Repair baselines that use the same bonafide data as path repair (Zhao et al. 2020, Sec. 4).

* fine-tuning the tampered model on the bonafide data;
* training from scratch on the bonafide data;
* noisy models: random perturbations of the tampered weights (each tensor moved by σ times its
  own norm in a random direction), averaged over draws — the "path" of growing σ is the baseline
  path of the paper;
* fine-pruning (Liu et al. 2018): prune the last convolution's channels that are least active on
  clean data, then fine-tune.

All training goes through the one training loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from modeconn.errors import ModeconnError
from modeconn.models import ModelSpec, build_model, last_conv_name
from modeconn.modes import eval_mode
from modeconn.training import (
    BatchSource,
    Objective,
    TrainConfig,
    TrainingRun,
    evaluate_model,
    train,
)


def fine_tune(
    model: nn.Module,
    loader: BatchSource,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    objective: Objective | None = None,
    description: str = "fine-tune",
    run: TrainingRun | None = None,
) -> nn.Module:
    """A copy of ``model`` trained further on ``loader`` (resumable state in ``run``)."""
    tuned = copy.deepcopy(model)
    for p in tuned.parameters():
        p.requires_grad_(True)
    train(
        tuned,
        loader,
        config,
        objective=objective,
        run=run,
        device=device,
        progress=progress,
        description=description,
    )
    return tuned.eval()


def train_from_scratch(
    spec: ModelSpec,
    loader: BatchSource,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    run: TrainingRun | None = None,
) -> nn.Module:
    """A freshly initialised model of the same architecture trained on ``loader`` only."""
    torch.manual_seed(config.seed)
    model = build_model(spec).to(device)
    train(
        model, loader, config, run=run, device=device, progress=progress, description="from scratch"
    )
    return model.eval()


def perturbed_model(model: nn.Module, sigma: float, generator: torch.Generator) -> nn.Module:
    """``model`` with every parameter tensor moved by ``sigma·‖w‖`` along a random direction."""
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for p in noisy.parameters():
            direction = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
            norm = direction.norm()
            if norm > 0:
                p.add_(direction * (sigma * p.norm() / norm))
    return noisy.eval()


def noisy_models(
    model: nn.Module,
    sigma: float,
    draws: int,
    seed: int,
    prepare: Callable[[nn.Module], nn.Module] | None = None,
) -> list[nn.Module]:
    """``draws`` seeded perturbations of ``model`` at scale ``sigma``; ``prepare`` may fix BN."""
    generator = torch.Generator().manual_seed(seed)
    models = [perturbed_model(model, sigma, generator) for _ in range(draws)]
    return [prepare(m) if prepare else m for m in models]


@torch.no_grad()
def channel_activity(
    model: nn.Module, conv_name: str, loader: Iterable, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Mean ReLU activation of each output channel of convolution ``conv_name`` on ``loader``."""
    conv = model.get_submodule(conv_name)
    total: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        total.append(output.relu().mean(dim=(0, 2, 3)) * output.shape[0])

    handle = conv.register_forward_hook(hook)
    count = 0
    try:
        with eval_mode(model):
            for x, _ in loader:
                model(x.to(device))
                count += x.shape[0]
    finally:
        handle.remove()
    return torch.stack(total).sum(0) / max(count, 1)


class MaskedObjective(Objective):
    """Cross-entropy training that keeps pruned weights at zero after every step."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def after_step(self, model: nn.Module) -> None:
        apply_masks(model, self.masks)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device))


def prune_channels(
    model: nn.Module, conv_name: str, channels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Zero the given output channels of ``conv_name`` (weight and bias); return the masks."""
    conv = model.get_submodule(conv_name)
    if not isinstance(conv, nn.Conv2d):
        raise ModeconnError(f"{conv_name} is not a convolution")
    masks: dict[str, torch.Tensor] = {}
    keep = torch.ones(conv.out_channels)
    keep[channels] = 0
    masks[f"{conv_name}.weight"] = keep.view(-1, 1, 1, 1).expand_as(conv.weight).clone()
    if conv.bias is not None:
        masks[f"{conv_name}.bias"] = keep.clone()
    apply_masks(model, masks)
    return masks


def fine_prune(
    model: nn.Module,
    prune_loader: Iterable,
    holdout_loader: Iterable,
    train_loader: BatchSource,
    config: TrainConfig,
    *,
    max_drop: float = 0.05,
    step: float = 0.05,
    device: torch.device | str = "cpu",
    progress: bool = False,
    run: TrainingRun | None = None,
) -> tuple[nn.Module, float]:
    """Fine-pruning: prune the least active channels of the last conv while the held-out clean
    accuracy stays within ``max_drop`` of the unpruned model's, then fine-tune with the pruned
    channels held at zero. Returns the model and the fraction of channels pruned.
    """
    conv_name = last_conv_name(model)
    activity = channel_activity(model, conv_name, prune_loader, device)
    order = torch.argsort(activity)  # least active first
    base_acc = evaluate_model(model, holdout_loader, device)["acc"]
    n = len(order)
    counts = sorted({min(n - 1, max(1, round(f * step * n))) for f in range(1, int(1 / step) + 1)})
    chosen = 0
    for k in counts:  # prune more and more until the held-out accuracy drops too far
        trial = copy.deepcopy(model)
        prune_channels(trial, conv_name, order[:k])
        if evaluate_model(trial, holdout_loader, device)["acc"] < base_acc - max_drop:
            break
        chosen = k
    pruned = copy.deepcopy(model)
    masks = prune_channels(pruned, conv_name, order[:chosen])
    tuned = fine_tune(
        pruned,
        train_loader,
        config,
        device=device,
        progress=progress,
        objective=MaskedObjective(masks),
        description="fine-prune",
        run=run,
    )
    return tuned, chosen / n
