"""Train/eval mode for the length of a block, restored afterwards even when the block raises.

Evaluation code puts a model in eval mode and must hand it back in the mode the caller left it in;
:func:`eval_mode` is the one implementation of that save/restore pattern.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def module_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """``model.train(training)`` inside the block, the previous mode after it.

    >>> import torch
    >>> net = torch.nn.Dropout().train()
    >>> with module_mode(net, False):
    ...     net.training
    False
    >>> net.training
    True
    """
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)


def eval_mode(model: nn.Module):
    """Eval mode inside the block, the previous mode after it (``with eval_mode(model): ...``)."""
    return module_mode(model, False)


__all__ = ["eval_mode", "module_mode"]
