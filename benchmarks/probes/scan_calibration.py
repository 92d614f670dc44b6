"""Probe: score the zoo offline from ``scan_signals.json`` under many scoring rules and budgets.

Each rule turns one model's raw signals (trigger sizes per kind after S steps, untargeted sizes,
class margins) into a score and a top class; the tables give AUROC, TPR at 5% FPR and the
target-right share per family on the calibration and held-out parts.

    python -m benchmarks.probes.scan_calibration [ZOO_DIR]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.probes.scan_signals import load_signals
from benchmarks.scan_zoo import CALIBRATION, HELD_OUT, effective, members
from modeconn.defenses.scan.anomaly import anomaly_index
from modeconn.defenses.scan.calibration import ZooScore, zoo_table
from modeconn.io import read_json

Signals = dict
Rule = Callable[[Signals], tuple[float, int]]


def at(record: Signals, key: str, step: int) -> list[float]:
    traj = record[key]
    return traj[min(step, len(traj)) - 1]


def size_index(record: Signals, steps: int, kinds=("mask", "perturbation")) -> list[float]:
    per = [anomaly_index(at(record, f"{k}_targeted", steps)) for k in kinds]
    return [sum(v[c] for v in per) / len(per) for c in range(len(per[0]))]


def untargeted(record: Signals, steps: int, kinds=("mask", "perturbation")) -> float:
    logs = []
    for k in kinds:
        sizes = torch.tensor(at(record, f"{k}_targeted", steps))
        logs.append(
            math.log(float(sizes.median()) / max(at(record, f"{k}_untargeted", steps)[0], 1e-9))
        )
    return sum(logs) / len(logs)


def margin_index(record: Signals, steps: int) -> list[float]:
    m = torch.tensor(at(record, "margin", steps)).clamp_min(1e-3)
    return [-v for v in anomaly_index(m)]  # high side: a large margin is suspicious


def rule_current(steps: int = 150, thr: float = 3.0, uthr: float = 1.0) -> Rule:
    def score(r: Signals) -> tuple[float, int]:
        idx = size_index(r, steps)
        top = max(range(len(idx)), key=idx.__getitem__)
        return max(idx[top] / thr, untargeted(r, steps) / uthr), top

    return score


def rule_margin(steps: int = 200, thr: float = 3.0) -> Rule:
    def score(r: Signals) -> tuple[float, int]:
        idx = margin_index(r, steps)
        top = max(range(len(idx)), key=idx.__getitem__)
        return idx[top] / thr, top

    return score


def warp_index(record: Signals, steps: int) -> list[float]:
    return anomaly_index(at(record, "warp_targeted", steps))


def rule_warp(
    steps: int = 150,
    wsteps: int = 100,
    thr: float = 3.0,
    wthr: float = 3.0,
    how: str = "max",
    uthr: float = 1.0,
) -> Rule:
    """Mask and perturbation averaged as today, the warp kind either averaged in (``mean``) or
    taken on its own threshold (``max``)."""

    def score(r: Signals) -> tuple[float, int]:
        mp, w = size_index(r, steps), warp_index(r, wsteps)
        if how == "mean":
            ev = [(2 * a + b) / 3 / thr for a, b in zip(mp, w, strict=True)]
        else:
            ev = [max(a / thr, b / wthr) for a, b in zip(mp, w, strict=True)]
        top = max(range(len(ev)), key=ev.__getitem__)
        return max(ev[top], untargeted(r, steps) / uthr), top

    return score


def rule_combined(
    steps: int = 150, msteps: int = 200, thr: float = 3.0, mthr: float = 3.0, uthr: float = 1.0
) -> Rule:
    def score(r: Signals) -> tuple[float, int]:
        idx, midx = size_index(r, steps), margin_index(r, msteps)
        both = [max(a / thr, b / mthr) for a, b in zip(idx, midx, strict=True)]
        top = max(range(len(both)), key=both.__getitem__)
        return max(both[top], untargeted(r, steps) / uthr), top

    return score


def scores(signals: dict, summaries: dict, rule: Rule, part: str, seed: int = 0) -> list[ZooScore]:
    out = []
    for m in members():
        key = f"{m.name}@{seed}"
        if m.part != part or key not in signals or not effective(m, summaries[m.name]):
            continue
        value, top = rule(signals[key])
        target = None
        if m.trigger is not None and m.trigger.get("label_mode", "all-to-one") == "all-to-one":
            target = m.trigger["target"]
        out.append(ZooScore(m.name, m.family, value, value > 1.0, target, top))
    return out


def report(name: str, signals: dict, summaries: dict, rule: Rule) -> None:
    for part in (CALIBRATION, HELD_OUT):
        table = zoo_table(scores(signals, summaries, rule, part))
        cells = " ".join(
            f"{fam}:{t['auroc']:.2f}/{t['detected']}of{t['backdoored']}"
            for fam, t in table.items()
            if fam != "overall"
        )
        o = table["overall"]
        print(
            f"{name:28s} {part:11s} AUROC {o['auroc']:.3f} TPR5 {o['tpr_at_5pct_fpr']:.2f} "
            f"det {o['detected']}/{o['backdoored']} FF {o['false_flags']}/{o['clean']} "
            f"tgt {o['target_right']:.2f} | {cells}"
        )


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results/zoo")
    signals = load_signals(root)
    summaries = {
        m.name: read_json(root / m.name / "summary.json")
        for m in members()
        if (root / m.name / "summary.json").exists()
    }
    warp_rules = {
        "warp-max@150/100": rule_warp(150, 100),
        "warp-max@75/50": rule_warp(75, 50),
        "warp-max@150/100 w4": rule_warp(150, 100, wthr=4.0),
        "warp-mean@150/100": rule_warp(150, 100, how="mean"),
        "warp-mean@75/50": rule_warp(75, 50, how="mean"),
    }
    rules = {
        "current@150": rule_current(150),
        "current@100": rule_current(100),
        "current@75": rule_current(75),
        "margin@200": rule_margin(200),
        "margin@100": rule_margin(100),
        "margin@50": rule_margin(50),
        "combined@150/200": rule_combined(150, 200),
        "combined@100/100": rule_combined(100, 100),
    }
    for name, rule in rules.items():
        report(name, signals, summaries, rule)
    warped = {k: v for k, v in signals.items() if "warp_targeted" in v}
    for name, rule in warp_rules.items():
        report(name, warped, summaries, rule)


if __name__ == "__main__":
    main()
