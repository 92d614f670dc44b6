"""The per-seed aggregation every claim shares: means, "holds for n of m seeds", flat per-seed
summary keys and the ``table.csv`` / ``table.md`` pair."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from modeconn.io import atomic_write_text, markdown_table, write_table
from modeconn.rundir import RunDir

Row = Mapping[str, Any]


def mean(values: Iterable[float]) -> float:
    """The arithmetic mean of ``values`` (summed in order).

    >>> mean([0.25, 0.5, 0.75])
    0.5
    """
    items = list(values)
    return sum(items) / len(items)


def seeds_holding(flags: Sequence[bool]) -> str:
    """``"n/m"``: for how many of the seeds (one flag each) the claim holds.

    >>> seeds_holding([True, False, True])
    '2/3'
    """
    return f"{sum(flags)}/{len(flags)}"


def claim_head(experiment: str, claim: str, holds: bool) -> dict[str, Any]:
    """The first keys of every claim's summary: which experiment, the claim in words, the
    verdict."""
    return {"experiment": experiment, "claim": claim, "holds": holds}


def per_seed_figures(
    rows: Sequence[Row],
    keys: Sequence[str] | None = None,
    *,
    prefix: Callable[[Row], str] = lambda row: f"seed{row['seed']}",
) -> dict[str, Any]:
    """Flat summary keys ``<prefix>_<key>`` for each row (one per seed, or per seed and run);
    ``keys`` defaults to every key of the row but ``seed``.

    >>> per_seed_figures([{"seed": 0, "gap": -0.1}, {"seed": 2, "gap": 0.0}])
    {'seed0_gap': -0.1, 'seed2_gap': 0.0}
    """
    figures: dict[str, Any] = {}
    for row in rows:
        for key in keys if keys is not None else [k for k in row if k != "seed"]:
            figures[f"{prefix(row)}_{key}"] = row[key]
    return figures


def numeric_row(row: Row) -> dict[str, Any]:
    """A table row for ``table.csv``, which holds numbers only: flags as 0.0/1.0, text left out.

    >>> numeric_row({"seed": 1, "holds": True, "verdict": "surface by 1.00 points"})
    {'seed': 1, 'holds': 1.0}
    """
    return {
        k: (float(v) if isinstance(v, bool) else v)
        for k, v in row.items()
        if not isinstance(v, str)
    }


def write_tables(run: RunDir, csv_rows: Sequence[Row], *markdown: Sequence[Row]) -> None:
    """``table.csv`` from ``csv_rows`` and ``table.md`` with one Markdown table per ``markdown``
    row list (a blank line between them)."""
    write_table(run.file("table.csv"), csv_rows)
    text = "\n\n".join(markdown_table(rows) for rows in markdown)
    atomic_write_text(run.file("table.md"), text + "\n")
