"""The maximum-margin statistic of MM-BD (Wang et al., S&P 2024), needing no images at all.

A backdoor makes its target class reachable with an unusually large logit margin: the trigger is
a shortcut the network learnt to trust more than any natural feature. For every class k the scan
searches the input space for the largest margin z_k(x) − max_{j≠k} z_j(x), starting from random
images and following the gradient; the target of an all-to-one backdoor (whatever the trigger:
patch, blend or warp) stands out above the other classes. The null is the other classes: a
class is scored by how far its (log) margin lies above theirs.

Everything here works in memory; :func:`class_margins` is called by
:func:`~modeconn.defenses.scan.draws.scan_model`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from modeconn.defenses.scan.synthesis import frozen_parameters
from modeconn.modes import eval_mode


def margins_of(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """z_k − max_{j≠k} z_j for each row's class k.

    >>> margins_of(torch.tensor([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]]), torch.tensor([0, 1]))
    tensor([ 2., -2.])
    """
    own = logits.gather(1, classes.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, classes.unsqueeze(1), float("-inf"))
    return own - others.max(1).values


def class_margins(
    model: nn.Module,
    shape: torch.Size | tuple[int, ...],
    num_classes: int,
    *,
    starts: int = 16,
    steps: int = 100,
    lr: float = 0.05,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """The largest logit margin found for each class (a tensor of ``num_classes``).

    ``starts`` random images in [0, 1] per class, all classes in one batched pass per step,
    optimised by Adam on the clamped images for ``steps`` steps; the best margin over the starts
    and the steps is kept. ``on_step(step, best)`` sees the best margins so far.
    """
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((num_classes * starts, *shape), generator=gen).to(device)
    images.requires_grad_(True)
    classes = torch.arange(num_classes, device=device).repeat_interleave(starts)
    best = torch.full((num_classes,), float("-inf"), device=device)
    opt = torch.optim.Adam([images], lr=lr)
    with frozen_parameters(model), eval_mode(model):
        for step in range(steps):
            margin = margins_of(model(images.clamp(0, 1)), classes)
            best = torch.maximum(best, margin.detach().view(num_classes, starts).max(1).values)
            opt.zero_grad(set_to_none=True)
            (-margin.sum()).backward()
            opt.step()
            if on_step is not None:
                on_step(step, best)
    return best.cpu()
