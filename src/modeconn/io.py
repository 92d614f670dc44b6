"""Atomic file writes and JSON helpers.

Every file modeconn writes goes through :func:`atomic_write` so that an interrupted command never
leaves a half-written result: the bytes go to a temporary file in the same directory, which is
then renamed over the target (an atomic operation on POSIX file systems).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(target: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        write(tmp)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    atomic_write(target, lambda p: p.write_text(text))


def to_jsonable(value: Any) -> Any:
    """Convert tensors, numpy scalars, paths, tuples and non-finite floats to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(target: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_text(target, json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_table(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as CSV, atomically; columns in order of first appearance, blanks where missing."""
    if not rows:
        raise RuntimeError(f"nothing to write to {path}")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_table(path: str | Path) -> list[dict[str, float]]:
    """Read a table written by :func:`write_table` (numbers as floats, blanks as NaN)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in rows]


def markdown_table(rows: Sequence[dict[str, Any]], digits: int = 4) -> str:
    """Rows as a Markdown table (columns in order of first appearance; floats to ``digits``).

    >>> print(markdown_table([{"seed": 0, "excess": 0.12345, "holds": True}]))
    | seed | excess | holds |
    |---|---|---|
    | 0 | 0.1235 | yes |
    """
    if not rows:
        raise RuntimeError("no rows for a Markdown table")
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
