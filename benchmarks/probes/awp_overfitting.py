"""Probe: where does PGD-AT overfit on Fashion-MNIST, and does AWP narrow the gap?

One PGD-AT (optionally + AWP) run per call, robust accuracy on held-out test images after every
epoch; prints the per-epoch train/test robust accuracy, the gap last - best, and the wall time.

    OMP_NUM_THREADS=1 python -m benchmarks.probes.awp_overfitting --model mlp \
        --kwargs '{"hidden": [1024, 1024]}' --train 1000 --epochs 40 --batch 32 --eps 0.1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from modeconn.attacks.config import AttackConfig
from modeconn.commands.reproduce import AWPSettings, overfitting_gap
from modeconn.commands.train import run_train
from modeconn.data.prepare import DataConfig
from modeconn.defenses.adversarial import RobustEvaluation
from modeconn.rundir import RunDir


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="lenet")
    p.add_argument("--kwargs", default="{}")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--awp", action="store_true")
    p.add_argument("--gamma", type=float, default=None)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--robust", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    # The experiment's own settings, so that a probe row is what ``reproduce awp --set`` runs.
    settings = AWPSettings(
        dataset=a.dataset,
        model=a.model,
        model_kwargs=json.loads(a.kwargs),
        train_limit=a.train,
        epochs=a.epochs,
        batch_size=a.batch,
        lr=a.lr,
        weight_decay=a.wd,
        attack=AttackConfig(name="pgd", eps=a.eps, alpha=a.eps / 4, steps=a.steps),
        awp_gamma=a.gamma,
        awp_warmup=a.warmup,
        robust_limit=a.robust,
        seeds=(a.seed,),
    ).validate()
    started = time.perf_counter()
    run_train(
        a.out,
        model=settings.model,
        model_kwargs=settings.model_kwargs,
        data=DataConfig(dataset=settings.dataset, train_limit=settings.train_limit, seed=a.seed),
        config=settings.train_config(a.seed),
        adversarial=settings.adversarial(a.awp),
        robust=RobustEvaluation(attack=settings.attack, limit=settings.robust_limit),
        robust_each_epoch=True,
        force=True,
        progress=False,
    )
    seconds = time.perf_counter() - started
    rows = [r for r in RunDir.attach(a.out, resuming=False).read_metrics() if "robust_acc" in r]
    print(" ".join(f"{r['train_acc']:.2f}/{r['robust_acc']:.3f}" for r in rows))
    gap = overfitting_gap(rows)
    print(json.dumps({**vars(a), **gap, "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
