"""Architecture registry and the JSON-safe spec that rebuilds a model.

A checkpoint stores a :class:`ModelSpec` next to the weights, so that a model is rebuilt from a name
and a few numbers, never by unpickling. Built-in architectures are registered by name with
:func:`register_model`; a user's own architecture is named ``package.module:factory`` and imported.

Every factory is called as ``factory(in_channels=..., image_size=..., num_classes=..., **kwargs)``
and returns the bare network; :func:`build_model` puts the input normalisation in front of it.
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from torch import nn

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models.normalize import NormalizedModel

ModelFactory = Callable[..., nn.Module]
FactoryT = TypeVar("FactoryT", bound=ModelFactory)

SHAPE_ARGS = ("in_channels", "image_size", "num_classes")
_REGISTRY: dict[str, ModelFactory] = {}


def _json_safe(value: Any, where: str) -> Any:
    """Return ``value`` in plain JSON types (tuples become lists), or raise if it has none."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise ModeconnError(f"{where} must have string keys, got {list(value)}")
        return {key: _json_safe(item, f"{where}.{key}") for key, item in value.items()}
    raise InvalidArgument(where, f"{where} must be JSON-serialisable, got {type(value).__name__}")


def _positive_int(value: Any, name: str) -> int:
    """Check that a spec field is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidArgument(name, f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _float_tuple(values: Any, name: str) -> tuple[float, ...]:
    """A single number or a sequence of numbers as a tuple of floats."""
    if isinstance(values, numbers.Real):
        return (float(values),)
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(name, f"{name} must be numbers, got {values!r}") from exc


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model: architecture, its kwargs, input shape, normalisation.

    ``kwargs`` are kept in JSON types (tuples become lists) so that ``to_dict`` / ``from_dict``
    round-trip exactly through a JSON sidecar. Images are square: ``image_size`` is both height
    and width. ``mean``/``std`` default to no normalisation.
    """

    arch: str
    kwargs: dict[str, Any]
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            raise InvalidArgument("arch", f"arch must be a non-empty string, got {self.arch!r}")
        if not isinstance(self.kwargs, Mapping):
            raise InvalidArgument(
                "kwargs", f"kwargs must be a mapping, got {type(self.kwargs).__name__}"
            )
        self.kwargs = _json_safe(dict(self.kwargs), "kwargs")
        for name in SHAPE_ARGS:
            setattr(self, name, _positive_int(getattr(self, name), name))
        self.mean = _float_tuple(self.mean, "mean")
        self.std = _float_tuple(self.std, "std")
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, self.in_channels):
            raise ModeconnError(
                f"mean and std need 1 or in_channels={self.in_channels} values each, got "
                f"{len(self.mean)} and {len(self.std)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (lists instead of tuples) for a checkpoint sidecar."""
        return _json_safe(asdict(self), "spec")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Rebuild a spec from :meth:`to_dict` output, e.g. read from a JSON sidecar."""
        if not isinstance(data, Mapping):
            raise InvalidArgument(
                None, f"a model spec must be a JSON object, got {type(data).__name__}"
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InvalidArgument(None, f"unknown model spec field(s): {', '.join(unknown)}")
        required = [f.name for f in fields(cls) if f.name not in ("mean", "std")]
        missing = [name for name in required if name not in data]
        if missing:
            raise ModeconnError(f"model spec is missing field(s): {', '.join(missing)}")
        return cls(**dict(data))


def register_model(name: str) -> Callable[[FactoryT], FactoryT]:
    """Decorator that makes ``factory`` buildable as ``ModelSpec(arch=name, ...)``."""
    if not name or ":" in name:
        raise InvalidArgument(None, f"model names must be non-empty and free of ':', got {name!r}")

    def decorator(factory: FactoryT) -> FactoryT:
        if _REGISTRY.get(name, factory) is not factory:
            raise ModeconnError(f"model name {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def model_names() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_REGISTRY)


def _import_factory(arch: str) -> ModelFactory:
    """Import ``package.module:attr`` (``attr`` may be dotted) and return the callable."""
    module_name, _, attr_path = arch.partition(":")
    if not module_name or not attr_path:
        raise ModeconnError(f"architecture {arch!r} must look like 'package.module:factory'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # a user's module may fail in any way while importing
        raise ModeconnError(
            f"cannot import module {module_name!r} for architecture {arch!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ModeconnError(f"module {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModeconnError(f"{arch!r} is not callable")
    return obj


def resolve_factory(arch: str) -> ModelFactory:
    """The factory for a registered name or a ``package.module:factory`` string."""
    if arch in _REGISTRY:
        return _REGISTRY[arch]
    if ":" in arch:
        return _import_factory(arch)
    raise InvalidArgument(
        None,
        f"unknown architecture {arch!r}; known: {', '.join(model_names())} "
        "(or 'package.module:factory' for your own)",
    )


def check_model_kwargs(arch: str, kwargs: Mapping[str, Any] | None) -> None:
    """Check, before anything is built or written, that ``arch`` exists and takes ``kwargs``.

    Catches unknown option names (a factory without ``**kwargs`` in its signature) and the shape
    arguments, which the data set decides; a wrong value of a known option still fails when the
    network is built.
    """
    factory = resolve_factory(arch)
    kwargs = kwargs or {}
    clash = sorted(set(kwargs) & set(SHAPE_ARGS))
    if clash:
        raise InvalidArgument(
            "model_kwargs", f"{', '.join(clash)} belong in the model spec, not in its kwargs"
        )
    names = _keyword_names(factory)
    if names is None:  # takes any keyword (or cannot be inspected): the build will tell
        return
    known = sorted(names - set(SHAPE_ARGS))
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise InvalidArgument(
            "model_kwargs",
            f"{arch!r} takes no option {', '.join(unknown)} "
            f"(its options: {', '.join(known) or 'none'})",
        )


def _keyword_names(factory: ModelFactory) -> set[str] | None:
    """The parameter names ``factory`` accepts by keyword; None when it takes any keyword
    (``**kwargs``) or its signature cannot be inspected."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n for n, p in params.items() if p.kind in by_keyword}


def _accepted_shape_args(factory: ModelFactory, shape: dict[str, int]) -> dict[str, int]:
    """The subset of in_channels/image_size/num_classes that ``factory`` accepts by keyword."""
    names = _keyword_names(factory)
    return shape if names is None else {k: v for k, v in shape.items() if k in names}


def build_network(spec: ModelSpec) -> nn.Module:
    """The bare network of ``spec`` (no normalisation layer)."""
    check_model_kwargs(spec.arch, spec.kwargs)
    factory = resolve_factory(spec.arch)
    shape = {name: getattr(spec, name) for name in SHAPE_ARGS}
    try:
        net = factory(**_accepted_shape_args(factory, shape), **spec.kwargs)
    except TypeError as exc:
        raise ModeconnError(
            f"cannot build {spec.arch!r} with kwargs {spec.kwargs}: {exc}".replace("\n", " ")
        ) from exc
    if not isinstance(net, nn.Module):
        raise ModeconnError(f"factory {spec.arch!r} returned {type(net).__name__}, not nn.Module")
    return net


def build_model(spec: ModelSpec) -> NormalizedModel:
    """Build the model described by ``spec``: its network behind a :class:`Normalize` layer."""
    return NormalizedModel(build_network(spec), spec.mean, spec.std)


def _last_module_name(model: nn.Module, kind: type[nn.Module], what: str) -> str:
    """Qualified name of the last registered submodule of type ``kind``."""
    names = [name for name, module in model.named_modules() if isinstance(module, kind)]
    if not names:
        raise ModeconnError(f"the model has no {what} layer")
    return names[-1]


def last_linear_name(model: nn.Module) -> str:
    """Name of the last ``nn.Linear``'s weight (e.g. ``net.fc.weight``): the default target of
    error injection. "Last" means last registered, which for every zoo model is the output layer.
    """
    name = _last_module_name(model, nn.Linear, "nn.Linear")
    return f"{name}.weight" if name else "weight"


def last_conv_name(model: nn.Module) -> str:
    """Module name of the last registered ``nn.Conv2d`` (e.g. ``net.conv2``): what fine-pruning
    prunes."""
    return _last_module_name(model, nn.Conv2d, "nn.Conv2d")
