"""modeconn's 2×2 max pooling (:mod:`modeconn.models.pooling`) against ``nn.MaxPool2d(2)``.

Two measurements, side by side in one process on the same inputs: the pooling layer alone
(forward without gradients, forward+backward) on lenet's two map shapes, and a whole ``lenet``
(the demo's model) evaluating 10,000 Fashion-MNIST-sized images and taking training steps, once
with modeconn's pooling and once with PyTorch's module swapped in. Timed runs alternate; the
fastest of ``MODECONN_BENCH_REPEATS`` (default 5) in process CPU time is kept, since other
processes only ever add time. CPU, ``MODECONN_BENCH_THREADS`` threads (default 1).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.models import ModelSpec, build_model
from modeconn.models.pooling import MaxPool2x2, max_pool2x2


def _best(fn: Callable[[], object], repeats: int) -> float:
    """Fastest CPU time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def _with_torch_pooling(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose pooling layers are PyTorch's ``nn.MaxPool2d(2)``."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, MaxPool2x2):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, nn.MaxPool2d(2))
    return model


def _layer(repeats: int) -> dict[str, Any]:
    out = {}
    for shape in ((128, 32, 28, 28), (128, 64, 14, 14)):
        x = torch.randn(shape).relu().requires_grad_()
        grad = torch.randn(*shape[:2], shape[2] // 2, shape[3] // 2)
        row = {}
        for name, fn in (("torch", lambda v: F.max_pool2d(v, 2)), ("modeconn", max_pool2x2)):

            def forward(fn=fn, x=x) -> None:
                with torch.no_grad():
                    for _ in range(5):
                        fn(x)

            def backward(fn=fn, x=x, grad=grad) -> None:
                for _ in range(5):
                    torch.autograd.grad(fn(x), x, grad)

            row[name] = {"forward_s": _best(forward, repeats) / 5}
            row[name]["forward_backward_s"] = _best(backward, repeats) / 5
        row["forward_speedup"] = row["torch"]["forward_s"] / row["modeconn"]["forward_s"]
        row["forward_backward_speedup"] = (
            row["torch"]["forward_backward_s"] / row["modeconn"]["forward_backward_s"]
        )
        out["x".join(map(str, shape))] = row
    return out


def _lenet(repeats: int) -> dict[str, Any]:
    spec = ModelSpec(arch="lenet", kwargs={}, in_channels=1, image_size=28, num_classes=10)
    torch.manual_seed(0)
    ours = build_model(spec).eval()
    theirs = _with_torch_pooling(ours)
    images = torch.rand(10_000, 1, 28, 28)
    labels = torch.randint(0, 10, (128,))
    batch = images[:128]
    result: dict[str, Any] = {}
    for name, model in (("modeconn", ours), ("torch", theirs)):

        def evaluate(model=model) -> None:
            with torch.no_grad():
                for chunk in images.split(500):
                    model(chunk)

        def train_steps(model=model) -> None:
            for _ in range(5):
                model.zero_grad()
                F.cross_entropy(model(batch), labels).backward()

        result[name] = {
            "eval_10k_s": _best(evaluate, repeats),
            "train_step_s": _best(train_steps, repeats) / 5,
        }
    with torch.no_grad():
        assert torch.equal(ours(batch), theirs(batch))
    result["eval_speedup"] = result["torch"]["eval_10k_s"] / result["modeconn"]["eval_10k_s"]
    result["train_step_speedup"] = (
        result["torch"]["train_step_s"] / result["modeconn"]["train_step_s"]
    )
    return result


def main(out_dir: Path) -> dict[str, Any]:
    threads = int(os.environ.get("MODECONN_BENCH_THREADS", "1"))
    repeats = int(os.environ.get("MODECONN_BENCH_REPEATS", "5"))
    torch.set_num_threads(threads)
    layer, lenet = _layer(repeats), _lenet(repeats)
    print(
        f"lenet: eval {lenet['eval_speedup']:.2f}× faster, "
        f"training step {lenet['train_step_speedup']:.2f}× faster with modeconn's pooling"
    )
    return {"device": "cpu", "threads": threads, "layer": layer, "lenet": lenet}
