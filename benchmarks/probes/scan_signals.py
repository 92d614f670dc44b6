"""Probe: every raw scan signal of every zoo model, with its trajectory over the steps.

For each trained member of :mod:`benchmarks.scan_zoo` and each image-draw seed, records per kind
the smallest targeted trigger size of every class after every step, the untargeted size after
every step, the MM-BD class margins after every step, and the seconds each took. Calibration
experiments (thresholds, fewer steps, early stopping, combinations) then run offline on
``scan_signals.json`` without scanning again.

    OMP_NUM_THREADS=1 python -m benchmarks.probes.scan_signals [ZOO_DIR] [SEEDS]
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.bench_scan_zoo import PREVIOUS
from benchmarks.scan_zoo import members
from modeconn.commands.suspects import suspects_with_data
from modeconn.defenses.scan import ScanConfig, scan_images
from modeconn.defenses.scan.kinds import trigger_kind
from modeconn.defenses.scan.margin import class_margins
from modeconn.defenses.scan.synthesis import TargetedGoal, UntargetedGoal, optimise_triggers
from modeconn.io import write_json

STEPS, MARGIN_STEPS, WARP_STEPS = 150, 200, 100


def _trajectory(store: list) -> callable:
    return lambda step, values: store.append([round(float(v), 4) for v in values])


def _loaded(
    path: Path, config: ScanConfig
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, int]:
    """The model at ``path`` and its scan images drawn with ``config.seed``, as the scan draws
    them, and the class count."""
    dev = torch.device("cpu")
    (ck,), _, prepared = suspects_with_data([path], None, dev, seed=config.seed)
    x, y = scan_images(prepared, config.images, dev)
    return ck.model, x, y, prepared.info.num_classes


def probe_model(path: Path, seed: int) -> dict:
    """Every signal of the previous scan's settings (mask and perturbation, 150 steps) and the
    margin statistic, after every step."""
    config = replace(PREVIOUS, seed=seed, steps=STEPS)
    model, x, y, k = _loaded(path, config)
    dev = x.device
    record: dict = {"seed": seed}
    for name in config.kinds:
        kind = trigger_kind(name)
        for goal_name, goal in (
            ("targeted", TargetedGoal(k, config, dev)),
            ("untargeted", UntargetedGoal(config)),
        ):
            traj: list = []
            t = time.perf_counter()
            optimise_triggers(model, x, y, kind, goal, config, on_step=_trajectory(traj))
            record[f"{name}_{goal_name}"] = traj
            record[f"{name}_{goal_name}_seconds"] = round(time.perf_counter() - t, 2)
    traj = []
    t = time.perf_counter()
    class_margins(model, x.shape[1:], k, steps=MARGIN_STEPS, seed=seed, on_step=_trajectory(traj))
    record["margin"] = traj
    record["margin_seconds"] = round(time.perf_counter() - t, 2)
    return record


def probe_warp(path: Path, seed: int) -> dict:
    """The warp kind's targeted sizes and success after every step (a later addition; its first
    probe: 100 steps at learning rate 0.05, the previous scan's other settings)."""
    config = replace(PREVIOUS, seed=seed, steps=WARP_STEPS, warp_lr=0.05)
    model, x, y, k = _loaded(path, config)
    dev = x.device
    traj: list = []
    t = time.perf_counter()
    _, _, success = optimise_triggers(
        model,
        x,
        y,
        trigger_kind("warp"),
        TargetedGoal(k, config, dev),
        config,
        on_step=_trajectory(traj),
    )
    return {
        "warp_targeted": traj,
        "warp_success": [round(float(v), 3) for v in success],
        "warp_targeted_seconds": round(time.perf_counter() - t, 2),
    }


def load_signals(root: Path) -> dict:
    """Every probed record under ``root``, keyed ``name@seed`` (warp sizes merged in)."""
    records = {}
    for p in root.glob("*/signals@*.json"):
        record = json.loads(p.read_text())
        warp = p.with_name(p.name.replace("signals@", "warp@"))
        if warp.exists():
            record.update(json.loads(warp.read_text()))
        records[f"{p.parent.name}@{p.stem.split('@')[1]}"] = record
    return records


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results/zoo")
    seeds = [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else [0]
    worker, workers = (int(v) for v in (sys.argv[3] if len(sys.argv) > 3 else "0/1").split("/"))
    what = sys.argv[4] if len(sys.argv) > 4 else "signals"
    probe = {"signals": probe_model, "warp": probe_warp}[what]
    order = sorted(members(), key=lambda m: (m.part != "calibration", m.family == "clean"))
    for i, member in enumerate(order):
        run = root / member.name
        if i % workers != worker or not (run / "summary.json").exists():
            continue
        for seed in seeds:
            out = run / f"{what}@{seed}.json"
            if out.exists():
                continue
            t = time.perf_counter()
            write_json(out, probe(run / "model.safetensors", seed))
            print(f"{member.name}@{seed}: {time.perf_counter() - t:.0f}s", flush=True)


if __name__ == "__main__":
    main()
