"""Run every ``benchmarks/bench_*.py`` module's ``main(out_dir)`` and write its result as JSON.

``python -m benchmarks.run`` (``make bench``) runs them all; ``python -m benchmarks.run NAME ...``
runs the named ones (``curve_step`` or ``bench_curve_step``). Results go to
``benchmarks/results/<module>.json``, together with the time taken and the torch version.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import torch

from modeconn.allocator import keep_freed_memory
from modeconn.io import write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def discover(names: list[str] | None = None) -> list[str]:
    """Module names of the benchmarks to run (all ``bench_*.py``, or those named)."""
    found = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if not names:
        return found
    wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in names}
    unknown = sorted(wanted - set(found))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(found)}")
    return [n for n in found if n in wanted]


def run(names: list[str] | None = None, out_dir: Path = RESULTS) -> dict[str, dict]:
    """Run the benchmarks and write ``out_dir/<module>.json`` for each; return the results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in discover(names):
        module = importlib.import_module(f"benchmarks.{name}")
        start = time.perf_counter()
        result = module.main(out_dir)
        record = {
            "benchmark": name,
            "seconds": round(time.perf_counter() - start, 2),
            "torch": torch.__version__,
            **result,
        }
        write_json(out_dir / f"{name}.json", record)
        print(f"{name}: written to {out_dir / f'{name}.json'}")
        results[name] = record
    return results


if __name__ == "__main__":
    keep_freed_memory()  # as the command line does: the figures are what a user gets
    run(sys.argv[1:])
