"""Single settings of a claim replaced by name (the CLI's ``--set NAME=VALUE``)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

from modeconn.attacks.config import AttackConfig
from modeconn.errors import InvalidArgument

T = TypeVar("T")


def with_overrides(settings: T, changes: dict[str, Any]) -> T:
    """``settings`` (an experiment's settings dataclass) with the fields in ``changes`` replaced.

    Values come as parsed JSON: a list replaces a tuple field as a tuple, and a dict given for
    ``attack`` is read as an :class:`AttackConfig`. An unknown field name is an error that lists
    the known ones.

    >>> from modeconn.commands.reproduce.surface import SurfaceSettings
    >>> with_overrides(SurfaceSettings(), {"num_bends": [4, 4], "align": False}).num_bends
    (4, 4)
    """
    known = {f.name for f in fields(settings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise InvalidArgument(
            "set",
            f"unknown setting {', '.join(unknown)} for this experiment "
            f"(known: {', '.join(sorted(known))})",
        )
    values: dict[str, Any] = {}
    for name, value in changes.items():
        current = getattr(settings, name)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, AttackConfig) and isinstance(value, dict):
            value = AttackConfig.from_dict({**current.to_dict(), **value})
        if not _same_kind(current, value):
            raise InvalidArgument(
                "set", f"setting {name} takes a value like {current!r}, got {value!r}"
            )
        values[name] = value
    return replace(settings, **values)


def _same_kind(current: Any, value: Any) -> bool:
    """Whether ``value`` can stand where ``current`` stands (None for an optional setting, an
    integer for a float; a bool is no number here)."""
    if current is None or value is None:
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, int | float)
    return isinstance(value, type(current))
