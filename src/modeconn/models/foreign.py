"""Weights that modeconn did not write: their architecture, and their tensors fitted to it.

A model downloaded from a hub or handed over by someone else comes as a bare state dict, without a
sidecar. :class:`ForeignArchitecture` says what the sidecar would have said about it — the
architecture (a zoo name or the user's own ``package.module:factory``), its keyword arguments and
the input normalisation the user applies (default: none, the model takes images in [0, 1]) — and
:meth:`ForeignArchitecture.spec_for` sizes it for a data set, whose images and classes give the
input shape and class count.

The weights are in the user's own key names: those of the bare network (``fc.weight``), not
modeconn's (``net.fc.weight``, behind its normalisation layer). :func:`fit_state_dict` accepts
either, and names the first tensor that does not fit with the closest name the architecture has.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models.normalize import Normalize
from modeconn.models.registry import ModelSpec, check_model_kwargs

#: Where modeconn's models keep the bare network (see :class:`NormalizedModel`).
NETWORK_PREFIX = "net."
#: The channel counts an input image can have: grayscale or RGB.
CHANNEL_CHOICES = (1, 3)
#: BatchNorm's step counter: older state dicts lack it, and it changes no output.
_OPTIONAL_SUFFIX = ".num_batches_tracked"


class DataShape(Protocol):
    """What a data set tells a model: the input shape and the number of classes."""

    in_channels: int
    image_size: int
    num_classes: int


@dataclass(frozen=True)
class ForeignArchitecture:
    """The architecture and input normalisation of weights that have no modeconn sidecar.

    ``arch`` is a registered name or ``package.module:factory``; ``kwargs`` go to the factory as
    they would in a :class:`ModelSpec`. ``mean``/``std`` are the normalisation the user's own code
    applies to images in [0, 1] before the network (one value, or one per channel); the default
    is none. ``image_size``/``channels`` describe the input the architecture takes (default: the
    data set's); a folder's images are converted to them. The architecture and its options are
    checked when the description is made, so a factory that cannot be imported fails before any
    data is read or any file written.
    """

    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    image_size: int | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        check_model_kwargs(self.arch, self.kwargs)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        Normalize(self.mean, self.std)  # same count of values, positive std
        if self.image_size is not None and (
            isinstance(self.image_size, bool) or self.image_size < 1
        ):
            raise InvalidArgument(
                "image_size", f"image_size must be at least 1, got {self.image_size}"
            )
        if self.channels is not None and self.channels not in CHANNEL_CHOICES:
            raise InvalidArgument("channels", f"channels must be 1 or 3, got {self.channels}")

    def check_shape(self, data: DataShape) -> None:
        """Raise one line when ``data``'s images are not the input shape this architecture was
        said to take (a data set whose shape is its own, not converted to the model's)."""
        for parameter, wanted, found in (
            ("image_size", self.image_size, data.image_size),
            ("channels", self.channels, data.in_channels),
        ):
            if wanted is not None and wanted != found:
                raise InvalidArgument(
                    parameter,
                    f"the weights take {parameter} {wanted}, but the data set's images have "
                    f"{data.in_channels}×{data.image_size}×{data.image_size}",
                )

    def spec_for(self, data: DataShape) -> ModelSpec:
        """The model spec of these weights for a data set of ``data``'s shape and classes."""
        self.check_shape(data)
        return ModelSpec(
            arch=self.arch,
            kwargs=dict(self.kwargs),
            in_channels=data.in_channels,
            image_size=data.image_size,
            num_classes=data.num_classes,
            mean=self.mean,
            std=self.std,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record of the description (for a run's config)."""
        return {
            "arch": self.arch,
            "kwargs": dict(self.kwargs),
            "mean": list(self.mean),
            "std": list(self.std),
            "image_size": self.image_size,
            "channels": self.channels,
        }


def _closest(
    name: str, shape: torch.Size, others: Mapping[str, torch.Tensor], taken: Mapping[str, Any]
) -> str:
    """The name in ``others`` most like ``name``, looked for first among those ``taken`` lacks
    and of the same shape (a renamed tensor), then among all; empty when ``others`` is."""
    unmatched = [n for n in others if n not in taken] or list(others)
    same_shape = [n for n in unmatched if tuple(others[n].shape) == tuple(shape)]
    match = difflib.get_close_matches(name, same_shape or unmatched, n=1, cutoff=0)
    return match[0] if match else ""


def _without_prefix(state: Mapping[str, torch.Tensor], expected: Mapping[str, Any]) -> dict:
    """``state`` with modeconn's ``net.`` prefix taken off when that is what makes it fit."""
    keys = list(state)
    if keys and set(keys) != set(expected) and all(k.startswith(NETWORK_PREFIX) for k in keys):
        stripped = {k.removeprefix(NETWORK_PREFIX): v for k, v in state.items()}
        if len(set(stripped) & set(expected)) > len(set(keys) & set(expected)):
            return stripped
    return dict(state)


def mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    """The first way ``state`` does not fit ``expected`` — a tensor the architecture does not
    have (with the closest name it has), a shape that differs, a tensor it lacks — as one
    phrase; None when it fits."""
    for name, tensor in state.items():
        if name not in expected:
            closest = _closest(name, tensor.shape, expected, state)
            hint = f" (closest expected: '{closest}')" if closest else ""
            return f"tensor '{name}' is not in the architecture{hint}"
        if tuple(tensor.shape) != tuple(expected[name].shape):
            return (
                f"tensor '{name}' has shape {tuple(tensor.shape)}, expected "
                f"{tuple(expected[name].shape)}"
            )
    for name in expected:
        if name not in state and not name.endswith(_OPTIONAL_SUFFIX):
            return f"tensor '{name}' missing"
    return None


def load_checked(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: object
) -> None:
    """Load ``state`` into ``module`` under the module's own key names; raises one line naming
    the first tensor that does not fit."""
    expected = module.state_dict()
    problem = mismatch(state, expected)
    if problem is not None:
        raise ModeconnError(f"{source} does not match the architecture: {problem}")
    complete = dict(state)
    for name, tensor in expected.items():
        complete.setdefault(name, tensor)  # only optional step counters can be absent here
    module.load_state_dict(complete, strict=True)


def fit_state_dict(
    network: torch.nn.Module, state: Mapping[str, torch.Tensor], source: object
) -> None:
    """Load ``state`` into the bare ``network``: keys as the user's class has them, or with
    modeconn's ``net.`` prefix. Raises one line naming the first tensor that does not fit."""
    load_checked(network, _without_prefix(state, network.state_dict()), source)
