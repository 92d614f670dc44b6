"""The ``modeconn`` command line: argument parsing only; every command calls the Python API.

Errors a user can cause (:class:`~modeconn.errors.ModeconnError`) end with one line on stderr and
exit status 2; the library's messages name parameters (``num_bends``, ``force=True``) and
:func:`cli_message` rewrites each to the flag of the command that ran (``--num-bends``,
``--force``). An interruption exits with 130 and points at ``--resume``.
"""

from __future__ import annotations

import re
import sys

import typer

from modeconn.allocator import keep_freed_memory
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
        demo,  # noqa: F401
        import_weights,  # noqa: F401
        landscape,  # noqa: F401
        repair,  # noqa: F401
        report,  # noqa: F401
        reproduce,  # noqa: F401
        scan,  # noqa: F401
        train,  # noqa: F401
    )


_register_commands()


INTERRUPTED = 130

#: Library parameter → the command-line parameter(s) that set it, where the names differ.
CLI_NAMES: dict[str, tuple[str, ...]] = {
    "gamma": ("awp_gamma",),
    "warmup": ("awp_warmup",),
    "beta": ("trades_beta",),
    "limit": ("robust_limit", "limit"),
    "steps": ("attack_steps", "steps"),
    "weight_decay": ("wd",),
    "points_per_batch": ("t_per_batch",),
    "name": ("attack",),
    "model_path": ("model",),
}


def _command_flags(argv: list[str]) -> dict[str, str]:
    """``{parameter name: its first long flag}`` for the command named in ``argv``."""
    group = typer.main.get_command(app)
    words = [a for a in argv if not a.startswith("-")]
    command = getattr(group, "commands", {}).get(words[0]) if words else None
    if command is None:
        return {}
    return {
        p.name: next((o for o in p.opts if o.startswith("--")), p.opts[0])
        for p in command.params
        if p.name and any(o.startswith("-") for o in p.opts)
    }


def cli_message(err: ModeconnError, argv: list[str]) -> str:
    """The error's message with every parameter it names written as the running command's flag
    (``force=True`` → ``--force``, ``num_bends`` → ``--num-bends``)."""
    message = str(err)
    flags = _command_flags(argv) if err.parameters else {}
    for parameter in err.parameters:
        flag = next(
            (flags[n] for n in (parameter, *CLI_NAMES.get(parameter, ())) if n in flags), None
        )
        if flag is None:
            continue
        pattern = rf"(?<![\w.-]){re.escape(parameter)}(?:=(?:True|N|DIR))?(?![\w-])"
        spelled = flag + (" N" if "=N" in message else " DIR" if "=DIR" in message else "")
        count = 0
        if not message.startswith("unknown "):  # "unknown curve kind 'x'" stays prose
            message, count = re.subn(pattern, lambda _m, s=spelled: s, message, count=1)
        if count == 0:
            message += f" ({flag})"
    return message


def _interrupted() -> None:
    typer.echo("modeconn: interrupted (training runs continue with --resume)", err=True)
    sys.exit(INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    argv = sys.argv[1:] if argv is None else argv
    keep_freed_memory()  # the process's edge: see modeconn.allocator
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        if exc.exit_code == INTERRUPTED:  # typer turns Ctrl-C into Exit(130)
            _interrupted()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except ModeconnError as err:
        typer.echo(f"modeconn: error: {cli_message(err, argv)}", err=True)
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
