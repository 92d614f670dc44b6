"""Run the CLI in-process and capture exit code, stdout and stderr."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modeconn.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> CliResult:
    """Call ``modeconn ARGS`` as the console script would; never raises SystemExit."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr containing every fragment, no traceback."""
    assert result.code != 0, result.out
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
