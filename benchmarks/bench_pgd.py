"""Benchmark: our PGD against torchattacks' PGD on the same model, batch and settings.

``main(out_dir)`` times both (L∞, ε = 8/255, 10 steps of 2/255, random start) on one batch of 256
Fashion-MNIST-shaped images through a LeNet, alternating the two so that both see the same load,
and returns the best-of-``REPEATS`` times (the least disturbed runs, as ``timeit`` advises) and
their ratio ours ÷ torchattacks (goal ≤ 1.0); medians are recorded too. On CPU the times are of
the process's CPU time, which other processes on a shared machine barely disturb; wall-clock
medians are recorded as well. Both spend almost all their time in the same model forward and
backward passes (identical operator profiles), so the ratio measures the attack's own overhead.
CPU, ``MODECONN_BENCH_THREADS`` threads (default 1); ``MODECONN_BENCH_DEVICE=cuda`` times on a
GPU instead (wall clock, synchronised).
``python benchmarks/bench_pgd.py [OUT_DIR]`` runs it alone and writes ``OUT_DIR/bench_pgd.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modeconn.attacks.evasion import pgd
from modeconn.models import ModelSpec, build_model

BATCH = 256
REPEATS = 15
SETTINGS = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10}


def _model(device: torch.device) -> torch.nn.Module:
    """A LeNet for 1×28×28 inputs with seeded weights (training does not change PGD's cost)."""
    torch.manual_seed(0)
    spec = ModelSpec(
        arch="lenet",
        kwargs={},
        in_channels=1,
        image_size=28,
        num_classes=10,
        mean=(0.286,),
        std=(0.353,),
    )
    return build_model(spec).to(device).eval()


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.process_time() - cpu, time.perf_counter() - wall


def main(out_dir: Path) -> dict[str, Any]:
    """Time both PGDs; return ``{"ours_s", "torchattacks_s", "ratio", ...}``."""
    import torchattacks

    device = torch.device(os.environ.get("MODECONN_BENCH_DEVICE", "cpu"))
    threads = int(os.environ.get("MODECONN_BENCH_THREADS", "1"))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = _model(device)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(BATCH, 1, 28, 28, generator=gen).to(device)
        y = torch.randint(0, 10, (BATCH,), generator=gen).to(device)
        theirs_attack = torchattacks.PGD(model, random_start=True, **SETTINGS)
        runs = {
            "ours": lambda: pgd(model, x, y, **SETTINGS),
            "torchattacks": lambda: theirs_attack(x, y),
        }
        for fn in runs.values():  # warm-up
            _timed(fn, device)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(REPEATS):
            for name, fn in runs.items():
                times[name].append(_timed(fn, device))
    finally:
        torch.set_num_threads(previous)
    clock = 1 if device.type == "cuda" else 0  # wall clock on a GPU, CPU time on the CPU
    result: dict[str, Any] = {
        "batch": BATCH,
        **SETTINGS,
        "device": str(device),
        "threads": threads,
        "clock": "wall" if clock else "cpu",
    }
    for name, samples in times.items():
        result[f"{name}_s"] = min(s[clock] for s in samples)
        result[f"{name}_median_s"] = statistics.median(s[clock] for s in samples)
        result[f"{name}_wall_median_s"] = statistics.median(s[1] for s in samples)
    result["ratio"] = result["ours_s"] / result["torchattacks_s"]
    print(
        f"PGD-10 on {BATCH} images ({device}): ours {result['ours_s']:.4f}s, torchattacks "
        f"{result['torchattacks_s']:.4f}s, ratio {result['ratio']:.3f} (goal ≤ 1.0)"
    )
    return result


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    res = main(out)
    (out / "bench_pgd.json").write_text(json.dumps(res, indent=2) + "\n")
