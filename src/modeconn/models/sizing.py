"""A model sized for a data set, and the check that a saved model fits the data it is given."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modeconn.errors import ModeconnError
from modeconn.models.registry import ModelSpec

if TYPE_CHECKING:
    from modeconn.data.prepare import PreparedData


def model_spec_for(arch: str, info, kwargs: dict[str, Any] | None = None) -> ModelSpec:
    """The model spec of architecture ``arch`` sized for data set ``info``."""
    return ModelSpec(
        arch=arch,
        kwargs=dict(kwargs or {}),
        in_channels=info.in_channels,
        image_size=info.image_size,
        num_classes=info.num_classes,
        mean=tuple(info.mean),
        std=tuple(info.std),
    )


def check_compatible(spec: ModelSpec, data: PreparedData, source: str) -> None:
    """A model trained for other inputs gets one clear line instead of a shape error deep inside."""
    info = data.info
    if (spec.in_channels, spec.image_size, spec.num_classes) != (
        info.in_channels,
        info.image_size,
        info.num_classes,
    ):
        raise ModeconnError(
            f"{source} expects {spec.in_channels}×{spec.image_size}×{spec.image_size} inputs and "
            f"{spec.num_classes} classes, but {info.name} has {info.in_channels}×{info.image_size}"
            f"×{info.image_size} and {info.num_classes}"
        )
