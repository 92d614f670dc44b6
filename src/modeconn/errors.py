"""Errors by kind: what the user got wrong, as opposed to what modeconn got wrong.

:class:`ModeconnError` is the base of every mistake a user can make; the CLI shows it as one line
on stderr with exit status 2. Two kinds are common enough to have their own class, and each is also
the matching built-in exception, so library callers can catch either:

- :class:`InvalidArgument` (a :class:`ValueError`): a parameter value a function cannot accept.
  It names the *parameter* (``eps``, ``num_bends``), never a command-line flag; the CLI maps the
  parameter to its flag when it prints the message.
- :class:`MissingInput` (a :class:`FileNotFoundError`): a file or directory that should exist
  and does not.

Other input problems (a corrupt or incompatible checkpoint, a NaN loss) are plain
:class:`ModeconnError`. A broken internal invariant is a bug: it raises :class:`RuntimeError`,
and the CLI keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class ModeconnError(Exception):
    """A problem caused by the user's input (missing file, bad name, wrong shapes, NaN loss).

    ``parameters`` lists the parameter names the message mentions (``force``, ``data_dir``), so
    that the CLI can print each as its flag (``--force``, ``--data-dir``).
    """

    def __init__(self, message: str = "", *, parameters: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.parameters = tuple(parameters)


class InvalidArgument(ModeconnError, ValueError):
    """A parameter value a function cannot accept.

    ``parameter`` is the name of the parameter at fault (or a tuple of the names, when the value
    is wrong only in combination), and the message mentions it by that name.
    """

    def __init__(self, parameter: str | Sequence[str] | None, message: str) -> None:
        names = (
            () if parameter is None else (parameter,) if isinstance(parameter, str) else parameter
        )
        super().__init__(message, parameters=names)

    @property
    def parameter(self) -> str | None:
        """The (first) parameter at fault."""
        return self.parameters[0] if self.parameters else None


class MissingInput(ModeconnError, FileNotFoundError):
    """A file or directory that should exist and does not; ``path`` is the path looked for."""

    def __init__(
        self, message: str, path: object = None, *, parameters: Sequence[str] = ()
    ) -> None:
        super().__init__(message, parameters=parameters)
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


__all__ = ["InvalidArgument", "MissingInput", "ModeconnError"]
