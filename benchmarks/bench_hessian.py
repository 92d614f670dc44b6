"""Hessian eigen-solvers (issue #6): Lanczos against power iteration, batched against per-image.

1. **Hessian-vector products to converge at one tolerance.** Both solvers stop on the same test —
   relative residual ‖Hv − θv‖/|θ| ≤ tol — on (a) the input Hessian of every test image of a LeNet
   trained briefly on digits (per-image counts), and (b) the weight Hessian of the same network on
   512 training images, top-1 and top-5 (power iteration deflated one eigenvector at a time).
2. **Batched per-image input-Hessian eigenvalues against one image at a time**: the same images,
   the same solver and tolerance, either as one batch sharing each HVP or as a loop of batches of
   one. The ratio is of the process's CPU time (which other processes on a shared machine barely
   disturb), median over repeats; wall-clock figures are recorded too.

CPU, ``MODECONN_BENCH_THREADS`` threads (default 1).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from modeconn.data.prepare import DataConfig, prepare_data
from modeconn.landscape.input_hessian import input_hessian_eig
from modeconn.landscape.weight_hessian import WeightHessian, hessian_eigenvalues
from modeconn.models import build_model
from modeconn.models.sizing import model_spec_for
from modeconn.training import TrainConfig, train

TOL = 1e-3
INPUT_IMAGES = 256
TIMED_IMAGES = 128
REPEATS = 3


def _trained_lenet():
    """A LeNet trained for three epochs on sklearn digits (seeded), and the data."""
    data = prepare_data(DataConfig(dataset="digits", augment=False))
    torch.manual_seed(0)
    model = build_model(model_spec_for("lenet", data.info))
    train(model, data.train_loader(64), TrainConfig(epochs=3, batch_size=64), progress=False)
    return model.eval(), data


def _counts(counts: torch.Tensor) -> dict[str, float]:
    c = counts.float()
    return {"mean": float(c.mean()), "median": float(c.median()), "max": int(c.max())}


def input_hessian_hvps(model, x, y) -> dict[str, Any]:
    """Per-image HVPs of power iteration and Lanczos at one tolerance, and their agreement."""
    out: dict[str, Any] = {"images": int(x.shape[0]), "tol": TOL}
    values = {}
    for method in ("power", "lanczos"):
        res = input_hessian_eig(model, x, y, method=method, iters=1000, tol=TOL)
        values[method] = res.values
        out[method] = {**_counts(res.matvecs), "converged": float(res.converged.float().mean())}
    out["ratio_mean_hvps_power_over_lanczos"] = out["power"]["mean"] / out["lanczos"]["mean"]
    rel = (values["power"] - values["lanczos"]).abs() / values["lanczos"].abs().clamp_min(1e-12)
    out["max_relative_difference"] = float(rel.max())
    return out


def weight_hessian_hvps(model, data) -> dict[str, Any]:
    """HVPs for the top-1 and top-5 weight-Hessian eigenvalues by each solver."""
    batches = [next(iter(data.eval_loader("train", batch_size=512)))]
    out: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters()), "tol": TOL}
    for k in (1, 5):
        row = {}
        for method in ("power", "lanczos"):
            hessian = WeightHessian(model, batches)
            res = hessian_eigenvalues(hessian, k=k, method=method, iters=1000, tol=TOL)
            row[method] = {
                "hvps": hessian.matvecs,
                "eigenvalues": [round(float(v), 5) for v in res.values.reshape(-1)],
                "converged": bool(res.converged.all()),
            }
        row["ratio_hvps_power_over_lanczos"] = row["power"]["hvps"] / row["lanczos"]["hvps"]
        out[f"top{k}"] = row
    return out


def _time(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def batched_vs_single(model, x, y) -> dict[str, Any]:
    """CPU and wall time of the batched per-image eigenvalues against a loop over images."""

    def batched():
        input_hessian_eig(model, x, y, method="power", iters=1000, tol=TOL)

    def single():
        for i in range(x.shape[0]):
            input_hessian_eig(
                model, x[i : i + 1], y[i : i + 1], method="power", iters=1000, tol=TOL
            )

    batched()  # warm-up
    runs = {"batched": [], "single": []}
    for _ in range(REPEATS):
        for name, fn in (("batched", batched), ("single", single)):
            runs[name].append(_time(fn))
    cpu = {k: statistics.median(c for c, _ in v) for k, v in runs.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in runs.items()}
    return {
        "images": int(x.shape[0]),
        "method": "power",
        "tol": TOL,
        "cpu_seconds": {k: round(v, 4) for k, v in cpu.items()},
        "wall_seconds": {k: round(v, 4) for k, v in wall.items()},
        "speedup_cpu_single_over_batched": cpu["single"] / cpu["batched"],
        "speedup_wall_single_over_batched": wall["single"] / wall["batched"],
    }


def main(out_dir: Path) -> dict[str, Any]:
    """Run both measurements; return the figures (``benchmarks.run`` writes them as JSON)."""
    del out_dir  # nothing beyond the JSON record
    threads = int(os.environ.get("MODECONN_BENCH_THREADS", "1"))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, data = _trained_lenet()
        x, y = next(iter(data.eval_loader("test", batch_size=INPUT_IMAGES)))
        result = {
            "threads": threads,
            "model": "lenet on digits (8×8), 3 epochs",
            "input_hessian_hvps": input_hessian_hvps(model, x, y),
            "weight_hessian_hvps": weight_hessian_hvps(model, data),
            "input_hessian_batched_vs_single": batched_vs_single(
                model, x[:TIMED_IMAGES], y[:TIMED_IMAGES]
            ),
        }
    finally:
        torch.set_num_threads(previous)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(Path(".")), indent=2))
