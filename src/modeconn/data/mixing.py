"""Mixing two images of a batch into one (mixup, CutMix): many new inputs from a few images.

With a teacher that labels whatever it is shown (distillation from the tampered model), a mixed
image needs no mixed label: the teacher's answer on it is the target. Fifty bonafide images give
50·49 pairs and a continuum of mixing weights, so a student sees far more distinct inputs than
the budget holds (Beyer et al. 2022, "a good teacher is patient and consistent").
"""

from __future__ import annotations

import numpy as np
import torch

MIXES = ("none", "mixup", "cutmix")


def mix_batch(
    images: torch.Tensor, mix: str, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix each image of N×C×H×W ``images`` with a random partner of the same batch.

    Returns the mixed batch, each image's partner index and λ, the share of each image that is
    its own (one λ ~ Beta(α, α) per batch; for CutMix, the share of pixels outside the box).

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 1, 8, 8)
    >>> mixed, partner, lam = mix_batch(x, "mixup", 1.0, g)
    >>> bool(torch.allclose(mixed, lam * x + (1 - lam) * x[partner]))
    True
    >>> mixed, partner, lam = mix_batch(x, "cutmix", 1.0, g)
    >>> bool(((mixed == x) | (mixed == x[partner])).all()), 0.0 <= lam <= 1.0
    (True, True)
    """
    n = images.shape[0]
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}; choose one of {MIXES}")
    if mix == "none" or n < 2:
        return images, torch.arange(n, device=images.device), 1.0
    seed = int(torch.randint(2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    partner = torch.randperm(n, generator=generator).to(images.device)
    if mix == "mixup":
        return lam * images + (1 - lam) * images[partner], partner, lam
    return _cutmix(images, partner, lam, generator)


def _cutmix(
    images: torch.Tensor, partner: torch.Tensor, lam: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste a box of area ≈ (1 − λ)·H·W from each partner; λ is recomputed from the box."""
    height, width = images.shape[-2:]
    box_h, box_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
    top = int(torch.randint(height - box_h + 1, (1,), generator=generator))
    left = int(torch.randint(width - box_w + 1, (1,), generator=generator))
    mixed = images.clone()
    box = (..., slice(top, top + box_h), slice(left, left + box_w))
    mixed[box] = images[partner][box]
    return mixed, partner, 1.0 - box_h * box_w / (height * width)


__all__ = ["MIXES", "mix_batch"]
