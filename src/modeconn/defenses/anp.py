"""ANP, Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021), for any ``nn.Module``.

Backdoor neurons are the ones most sensitive to adversarial perturbations of the weights: under a
small perturbation they make the network predict the target class even on clean data. ANP learns a
mask m ∈ [0, 1] per neuron that keeps the clean loss low *under* the worst perturbation in a
budget; neurons the mask turns down are the backdoor's, and pruning them removes it.

**Neurons.** Every output channel of every ``nn.Conv2d`` and every unit of every ``nn.Linear``
except the last one (the classification head). The paper uses the neurons of BatchNorm layers;
our default lenet has none, so the mask and the perturbation act on the layers' outputs through
forward hooks, and any architecture works unchanged. A neuron's output o (bias included) becomes
m·o on the clean pass and (m + δ)·o on the perturbed pass, |δ| ≤ ε — at m = 1 a multiplicative
perturbation (1 + δ) of the neuron, and at m = 0 exactly the pruned neuron.

**Optimisation** (one round per bonafide batch, ``steps`` rounds): δ starts uniform in [−ε, ε],
takes ``noise_steps`` ascent steps on the cross-entropy of the perturbed pass (step ε /
``noise_steps``) and is clipped to [−ε, ε]; then m takes one descent step on
α·CE(m) + (1 − α)·CE(m, δ) and is clipped to [0, 1]. The model stays in eval mode, so BatchNorm
running statistics (where there are any) are not touched.

**Pruning.** Neurons are pruned in increasing order of their mask. The number pruned is chosen on
*held-out bonafide* data only: counts grow in steps of ``prune_step`` neurons until the held-out
accuracy falls more than ``tolerance`` (default 2 points) below the unpruned model's; the last
count within tolerance is kept. A pruned neuron's weights and bias are zeroed in the returned
copy, which is a plain module (no hooks) and outputs exactly zero there. (With a BatchNorm after a
pruned convolution, BN's shift still adds a constant to that channel.)
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.progress import make_progress
from modeconn.training import BatchSource, evaluate_model


@dataclass(frozen=True)
class ANPConfig:
    """ANP's settings: the paper's ε = 0.4, α = 0.2, mask lr 0.2 (momentum 0.9) and one ascent
    step on δ per round; 300 rounds (the paper: 2,000 on 1% of CIFAR-10) suit small bonafide sets.
    ``prune_step`` = 0 picks max(1, neurons // 200)."""

    eps: float = 0.4
    noise_steps: int = 1
    alpha: float = 0.2
    mask_lr: float = 0.2
    momentum: float = 0.9
    steps: int = 300
    batch_size: int = 128
    tolerance: float = 0.02
    prune_step: int = 0

    def validate(self) -> None:
        """Reject settings that cannot work, with one clear line."""
        if self.eps < 0:
            raise InvalidArgument(None, f"ANP's eps must be non-negative, got {self.eps}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidArgument(None, f"ANP's alpha must be in [0, 1], got {self.alpha}")
        if self.steps < 1 or self.noise_steps < 1:
            raise InvalidArgument(None, "ANP needs at least one step of each kind")
        if self.tolerance < 0:
            raise InvalidArgument(
                None, f"ANP's tolerance must be non-negative, got {self.tolerance}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def neuron_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers whose neurons ANP masks: every ``nn.Conv2d`` and every ``nn.Linear`` but the
    last registered one (the head), by module name."""
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    layers = {**convs, **dict(linears[:-1])}
    if not layers:
        raise ModeconnError("ANP needs convolutions or hidden linear layers; the model has none")
    return {n: m for n, m in model.named_modules() if n in layers}


def _width(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _scale(output: torch.Tensor, coeff: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    shape = (1, -1, 1, 1) if isinstance(layer, nn.Conv2d) else (-1,)
    return output * coeff.view(shape)


class NeuronMask:
    """A mask and a perturbation per neuron of ``layers``, applied to their outputs by hooks."""

    def __init__(self, layers: dict[str, nn.Module], device: torch.device | str) -> None:
        self.layers = layers
        self.mask = {
            n: torch.ones(_width(m), device=device, requires_grad=True) for n, m in layers.items()
        }
        self.noise = {
            n: torch.zeros(_width(m), device=device, requires_grad=True) for n, m in layers.items()
        }
        self.perturbed = False

    @contextlib.contextmanager
    def applied(self, coefficients: dict[str, torch.Tensor] | None = None) -> Iterator[None]:
        """Hooks on every layer: outputs scaled by the mask (plus the noise when ``perturbed``),
        or by fixed ``coefficients`` when given."""

        def hook_for(name: str):
            def hook(layer: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
                if coefficients is not None:
                    coeff = coefficients[name]
                elif self.perturbed:
                    coeff = self.mask[name] + self.noise[name]
                else:
                    coeff = self.mask[name]
                return _scale(output, coeff, layer)

            return hook

        handles = [m.register_forward_hook(hook_for(n)) for n, m in self.layers.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def order(self) -> list[tuple[str, int, float]]:
        """Every neuron as (layer, index, mask value), smallest mask first (ties: layer order)."""
        entries = [
            (name, i, float(v))
            for name, values in self.mask.items()
            for i, v in enumerate(values.detach().cpu().tolist())
        ]
        return sorted(entries, key=lambda e: e[2])


def optimise_masks(
    model: nn.Module,
    loader: BatchSource,
    masks: NeuronMask,
    config: ANPConfig,
    *,
    seed: int,
    device: torch.device | str,
    bar: Any,
) -> None:
    """The min-max game: ascent on the perturbation, descent on the mask (see module doc)."""
    mask_params = list(masks.mask.values())
    noise_params = list(masks.noise.values())
    mask_opt = torch.optim.SGD(mask_params, lr=config.mask_lr, momentum=config.momentum)
    noise_opt = torch.optim.SGD(noise_params, lr=config.eps / config.noise_steps)
    generator = torch.Generator().manual_seed(seed)
    task = bar.add_task("ANP masks", total=config.steps, status="")
    done, epoch = 0, 0
    while done < config.steps:
        epoch += 1
        loader.set_epoch(epoch)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if config.eps > 0:
                masks.perturbed = True
                with torch.no_grad():
                    for noise in noise_params:
                        draw = torch.rand(noise.shape, generator=generator) * 2 - 1
                        noise.copy_(draw.to(noise.device) * config.eps)
                for _ in range(config.noise_steps):
                    noise_opt.zero_grad(set_to_none=True)
                    (-F.cross_entropy(model(x), y)).backward()
                    noise_opt.step()
                    with torch.no_grad():
                        for noise in noise_params:
                            noise.clamp_(-config.eps, config.eps)
                robust = F.cross_entropy(model(x), y)
            else:
                robust = torch.zeros((), device=device)
            masks.perturbed = False
            natural = F.cross_entropy(model(x), y)
            loss = config.alpha * natural + (1 - config.alpha) * robust
            mask_opt.zero_grad(set_to_none=True)
            loss.backward()
            mask_opt.step()
            with torch.no_grad():
                for mask in mask_params:
                    mask.clamp_(0.0, 1.0)
            done += 1
            bar.update(task, advance=1, status=f"loss {loss.item():.3f}")
            if done >= config.steps:
                break
    for p in model.parameters():
        p.grad = None


def pruning_coefficients(
    masks: NeuronMask, order: list[tuple[str, int, float]], count: int
) -> dict[str, torch.Tensor]:
    """0/1 coefficients per layer that switch off the first ``count`` neurons of ``order``."""
    coeff = {n: torch.ones_like(m.detach()) for n, m in masks.mask.items()}
    for name, i, _ in order[:count]:
        coeff[name][i] = 0.0
    return coeff


def fold_pruning(model: nn.Module, coefficients: dict[str, torch.Tensor]) -> None:
    """Zero the weights and bias of every neuron whose coefficient is 0 (in place)."""
    with torch.no_grad():
        for name, coeff in coefficients.items():
            layer = model.get_submodule(name)
            keep = coeff.to(layer.weight.device)
            layer.weight.mul_(keep.view(-1, *([1] * (layer.weight.dim() - 1))))
            if layer.bias is not None:
                layer.bias.mul_(keep)


def choose_count(
    model: nn.Module,
    masks: NeuronMask,
    order: list[tuple[str, int, float]],
    heldout_loader: Iterable,
    config: ANPConfig,
    device: torch.device | str,
) -> tuple[int, float, float]:
    """The largest count (in steps of ``prune_step``, stopping at the first count out of
    tolerance) whose held-out accuracy stays within ``tolerance`` of the unpruned model's;
    returns (count, unpruned accuracy, pruned accuracy)."""
    base = evaluate_model(model, heldout_loader, device)["acc"]
    step = config.prune_step or max(1, len(order) // 200)
    chosen, chosen_acc = 0, base
    for count in range(step, len(order), step):
        with masks.applied(pruning_coefficients(masks, order, count)):
            acc = evaluate_model(model, heldout_loader, device)["acc"]
        if acc < base - config.tolerance:
            break
        chosen, chosen_acc = count, acc
    return chosen, base, chosen_acc


def adversarial_neuron_pruning(
    model: nn.Module,
    train_loader: BatchSource,
    heldout_loader: Iterable,
    config: ANPConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """ANP on bonafide data: a pruned copy of ``model`` (``model`` itself untouched) and what was
    pruned — ``pruned`` (neurons), ``neurons`` (total), ``threshold`` (the largest mask value
    pruned, NaN when none), ``heldout_acc_before`` / ``heldout_acc_after`` and ``per_layer``
    (pruned neurons by layer).

    ``train_loader`` drives the mask optimisation; ``heldout_loader`` (held-out bonafide data,
    never test or poisoned data) chooses how many neurons to prune.
    """
    config.validate()
    work = copy.deepcopy(model).to(device).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    masks = NeuronMask(neuron_layers(work), device)
    torch.manual_seed(seed)
    with make_progress(progress) as bar, masks.applied():
        optimise_masks(work, train_loader, masks, config, seed=seed, device=device, bar=bar)
    order = masks.order()
    count, before, after = choose_count(work, masks, order, heldout_loader, config, device)
    coefficients = pruning_coefficients(masks, order, count)
    fold_pruning(work, coefficients)
    for p in work.parameters():
        p.requires_grad_(True)
    per_layer = {n: int((c == 0).sum().item()) for n, c in coefficients.items()}
    info: dict[str, Any] = {
        "pruned": count,
        "neurons": len(order),
        "threshold": order[count - 1][2] if count else math.nan,
        "heldout_acc_before": before,
        "heldout_acc_after": after,
        "per_layer": per_layer,
    }
    return work.eval(), info
