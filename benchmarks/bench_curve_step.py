"""Cost of one curve-training step relative to a plain training step (issue #3: at most 1.1×).

Both go through the one training loop (:func:`modeconn.training.train`) on the same synthetic
batches: the plain step trains the model itself (SGD with weight decay), the curve step trains a
3-bend Bezier curve between two copies of it (one t per batch, CE at φ(t) + ½·wd·‖φ(t)‖²).
Timed epochs of each kind alternate (in alternating order). The ratio reported is that of the
fastest epoch of each kind in the process's CPU time: on a shared machine other processes only
ever add time (cache misses, frequency), so the minimum is the robust estimate; the per-pair
ratios and wall-clock figures are recorded too. CPU, ``MODECONN_BENCH_THREADS`` threads
(default 1), ``MODECONN_BENCH_REPEATS`` pairs (default 7).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from modeconn.connectivity import Curve
from modeconn.connectivity.train import train_family
from modeconn.data import TensorLoader
from modeconn.models import ModelSpec, build_model
from modeconn.training import TrainConfig, train

#: (architecture, channels, image size, classes, batch size, steps per timed epoch)
CASES = (
    ("lenet", 1, 28, 10, 128, 30),
    ("preact_resnet18", 3, 32, 10, 32, 2),
)
TARGET_RATIO = 1.1


def _loader(channels: int, size: int, classes: int, batch: int, steps: int) -> TensorLoader:
    gen = torch.Generator().manual_seed(0)
    n = batch * steps
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return TensorLoader(images, labels, batch_size=batch, shuffle=True)


def _time(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) taken by ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(
    arch: str, channels: int, size: int, classes: int, batch: int, steps: int, repeats: int
) -> dict[str, Any]:
    """Seconds per plain step and per curve step, and their ratio, for one architecture."""
    spec = ModelSpec(
        arch=arch, kwargs={}, in_channels=channels, image_size=size, num_classes=classes
    )
    torch.manual_seed(0)
    model = build_model(spec)
    curve = Curve.from_endpoints(
        build_model(spec), model.state_dict(), build_model(spec).state_dict()
    )
    loader = _loader(channels, size, classes, batch, steps)
    config = TrainConfig(
        epochs=1, batch_size=batch, lr=0.01, weight_decay=5e-4, schedule="constant"
    )

    def plain() -> None:
        train(model, loader, config, progress=False)

    def curve_step() -> None:
        train_family(curve, loader, config, progress=False)

    plain(), curve_step()  # warm-up: allocator, kernels, optimiser state
    pairs = []
    for i in range(repeats):  # alternate the order so that drifts in load cancel
        if i % 2:
            c, p = _time(curve_step), _time(plain)
        else:
            p, c = _time(plain), _time(curve_step)
        pairs.append((p, c))
    plain_cpu = min(p[0] for p, _ in pairs) / steps
    curve_cpu = min(c[0] for _, c in pairs) / steps
    return {
        "batch_size": batch,
        "input_shape": [channels, size, size],
        "steps_per_epoch": steps,
        "repeats": repeats,
        "parameters": sum(p.numel() for p in model.parameters()),
        "plain_step_cpu_s": plain_cpu,
        "curve_step_cpu_s": curve_cpu,
        "ratio": curve_cpu / plain_cpu,
        "pair_ratios": [c[0] / p[0] for p, c in pairs],
        "median_pair_ratio": statistics.median(c[0] / p[0] for p, c in pairs),
        "plain_step_wall_s": min(p[1] for p, _ in pairs) / steps,
        "curve_step_wall_s": min(c[1] for _, c in pairs) / steps,
    }


def main(out_dir: Path) -> dict[str, Any]:
    threads = int(os.environ.get("MODECONN_BENCH_THREADS", "1"))
    repeats = int(os.environ.get("MODECONN_BENCH_REPEATS", "7"))
    torch.set_num_threads(threads)
    results = {}
    for arch, channels, size, classes, batch, steps in CASES:
        results[arch] = measure(arch, channels, size, classes, batch, steps, repeats)
        print(f"{arch}: curve/plain step = {results[arch]['ratio']:.3f}")
    return {
        "device": "cpu",
        "threads": threads,
        "target_ratio": TARGET_RATIO,
        "within_target": all(r["ratio"] <= TARGET_RATIO for r in results.values()),
        "models": results,
    }
