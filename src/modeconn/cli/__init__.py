"""The ``modeconn`` command line: argument parsing only; every command calls the Python API.

Errors a user can cause (:class:`~modeconn.errors.ModeconnError`) end with one line on stderr and
exit status 2; an interruption exits with 130 and points at ``--resume``.
"""

from __future__ import annotations

import sys

import typer

from modeconn.errors import ModeconnError

app = typer.Typer(
    name="modeconn",
    help="Mode connectivity: repair tampered networks, read robustness off the loss landscape.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    """Import the command modules; each adds its commands to :data:`app`."""
    from modeconn.cli import (
        align,  # noqa: F401
        attack,  # noqa: F401
        connect,  # noqa: F401
        landscape,  # noqa: F401
        repair,  # noqa: F401
        scan,  # noqa: F401
        train,  # noqa: F401
    )


_register_commands()


INTERRUPTED = 130


def _interrupted() -> None:
    typer.echo("modeconn: interrupted (training runs continue with --resume)", err=True)
    sys.exit(INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        if exc.exit_code == INTERRUPTED:  # typer turns Ctrl-C into Exit(130)
            _interrupted()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except ModeconnError as err:
        typer.echo(f"modeconn: error: {err}", err=True)
        sys.exit(2)
    except Exception as exc:
        if not (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            raise
        exc.show()  # a usage error (unknown option, bad value): the parser's own message
        sys.exit(exc.exit_code)
    if code == INTERRUPTED:  # typer returns Ctrl-C as exit code 130 outside standalone mode
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
