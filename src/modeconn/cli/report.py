"""``modeconn report``: one HTML page for a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", help="HTML file to write (default RUN_DIR/report.html)."),
    ] = None,
) -> None:
    """Write one self-contained HTML page (figures embedded) for a run directory."""
    from modeconn.report.html import write_report

    typer.echo(f"report written to {write_report(run_dir, output)}")
