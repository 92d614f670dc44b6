"""2×2 max pooling whose inference forward is fast on CPU and equal to ``F.max_pool2d(x, 2)``.

On CPU, PyTorch's ``max_pool2d`` forward is slow for small maps when no gradient is wanted: for
a batch of 128 lenet maps (32×28×28) it takes about half as long as the 3×3 convolution before
it, and modeconn evaluates many models (every point of a path, every repair candidate, the ASR on
9,000 triggered images). The elementwise maximum of a window's four strided sub-grids is 7–9×
faster for that forward and equal to the bit. With gradients (training, trigger synthesis,
Hessians) PyTorch's kernel is as fast or faster, so it is used there, as on every other device.
``benchmarks/bench_pool.py`` measures both side by side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """2×2 max pooling with stride 2 (floor mode), equal to ``F.max_pool2d(x, 2)``."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    fast = x.device.type == "cpu" and x.dim() in (3, 4) and h > 0 and w > 0
    if not fast or (torch.is_grad_enabled() and x.requires_grad):
        return F.max_pool2d(x, 2)
    x = x[..., :h, :w]
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` with the fast CPU inference path of :func:`max_pool2x2` (same module
    type and outputs)."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2x2(x)


__all__ = ["MaxPool2x2", "max_pool2x2"]
