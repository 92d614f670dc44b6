"""Input normalisation as a layer of the model.

Every model in modeconn takes images in [0, 1] (NCHW) and normalises them itself. Attacks,
triggers and clamping then all work in the same [0, 1] space, and a checkpoint fully describes what
the network expects. The mean and std are non-persistent buffers: they follow ``.to(device)`` but
are not part of the state dict, so a state dict (and every curve control point built from it) holds
only the network's own tensors, and the normalisation comes from the model's spec instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modeconn.errors import InvalidArgument, ModeconnError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` for NCHW images.

    A single value broadcasts over all channels; otherwise give one value per channel.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(tuple(mean), dtype=torch.float32)
        std_t = torch.as_tensor(tuple(std), dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.numel() == 0 or mean_t.shape != std_t.shape:
            raise ModeconnError(
                f"mean and std need the same number (>= 1) of values, got {tuple(mean)} and "
                f"{tuple(std)}"
            )
        if not bool((std_t > 0).all()):
            raise InvalidArgument("std", f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch of images."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """Show the statistics in ``print(model)``."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedModel(nn.Module):
    """A network with its input normalisation in front: ``net(normalize(x))`` for x in [0, 1].

    Parameter names all start with ``net.``, so ``net.fc.weight`` of a model built here is
    ``fc.weight`` of the user's own module.
    """

    def __init__(
        self, net: nn.Module, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1]."""
        return self.net(self.normalize(x))
