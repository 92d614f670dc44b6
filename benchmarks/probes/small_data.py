"""Probe: repair from very little clean data (issue 25) — which unlearning keeps accuracy.

For one tampered model and bonafide budgets (50, 250, 2500 by default), scans once per budget
and compares, on the test split, the methods named by ``--methods``: ``nc`` (NC-unlearning as
the repair runs it: 20 epochs, so 20 steps at 50 images), ``pam`` (the same with path-aware
steps, :mod:`modeconn.defenses.pam`) and ``kd`` (the product's distillation unlearning with 300
steps, :mod:`modeconn.defenses.distillation`). For each unlearnt model it walks the straight line
back to the tampered model (``--line`` values of t) and measures clean accuracy, ASR, held-out
accuracy and a trigger-free proxy (the share of bonafide images that the tampered scan's
triggers send to the flagged class); from ``--scan-from`` on it also scans the point, the
trigger-free check a repair could choose t by. One JSON line per (budget, method, t).

    OMP_NUM_THREADS=1 python -m benchmarks.probes.small_data MODEL [--sizes 50,250] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace

import torch
from torch import nn

from modeconn.attacks.backdoor import TriggerSpec, backdoor_metrics
from modeconn.commands.suspects import suspects_with_data
from modeconn.data.loaders import to_unit_float
from modeconn.data.prepare import DataConfig, PreparedData
from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.distillation import DistillationConfig, distillation_objective
from modeconn.defenses.pam import PathAwareObjective
from modeconn.defenses.retuning import retuning_attack_asr
from modeconn.defenses.scan import ScanConfig, scan_images, scan_model
from modeconn.defenses.unlearning import (
    UnlearningConfig,
    unlearn,
)
from modeconn.training import evaluate_model

DEV = torch.device("cpu")


def measure(model: nn.Module, data: PreparedData, spec: TriggerSpec) -> dict[str, float]:
    test = data.eval_loader("test", device=DEV)
    hold = data.eval_loader("bonafide_holdout", device=DEV)
    return {
        "acc": round(evaluate_model(model, test, DEV)["acc"], 4),
        "asr": round(backdoor_metrics(model, test, spec, DEV)["asr"], 4),
        "holdout": round(evaluate_model(model, hold, DEV)["acc"], 4),
    }


def stamped_flip_rate(model: nn.Module, data: PreparedData, scans, flagged=None) -> float:
    """Trigger-free: the share of bonafide images (all of them: the held-out part is tiny at
    50) sent to a flagged class by that class's synthesized trigger (every class when none is
    flagged) — what a point of the line would show if the backdoor came back."""
    x, y = data.tensors("bonafide")
    idx = torch.cat([data.indices("bonafide"), data.indices("bonafide_holdout")])
    images, labels = to_unit_float(x[idx]), y[idx]
    scan = scans[0]
    classes = flagged or scan.flagged_classes or list(range(data.info.num_classes))
    hits, count = 0, 0
    with torch.no_grad():
        for k in classes:
            keep = labels != k
            for trig in scan.triggers.values():
                pred = model(trig.apply(images[keep], k)).argmax(1)
                hits += int((pred == k).sum())
                count += int(keep.sum())
    return round(hits / max(count, 1), 4)


def line_point(a: nn.Module, b: nn.Module, t: float) -> nn.Module:
    """(1 − t)·a + t·b (lenets have no BatchNorm)."""
    out = copy.deepcopy(a)
    sa, sb = a.state_dict(), b.state_dict()
    out.load_state_dict({k: (1 - t) * sa[k] + t * sb[k] for k in sa})
    return out.eval()


def distill(tampered, data, scans, cfg, steps, mix, seed, student=None):
    """The product's distillation unlearning (:mod:`modeconn.defenses.distillation`), the
    student started from ``student`` (default: the tampered model itself)."""
    kd = DistillationConfig(min_steps=steps, mix=mix, **KD_OVERRIDES)
    images = len(data.indices("bonafide"))
    passes = kd.passes(cfg.epochs, images, cfg.batch_size)
    cfg = replace(cfg, batch_size=max(1, min(cfg.batch_size, images)))
    loader = data.train_loader(
        cfg.batch_size, split="bonafide", seed=seed, augment=True, passes=passes
    )
    objective = distillation_objective(tampered, scans, cfg, kd, seed)
    start = tampered if student is None else student
    return fine_tune(start, loader, cfg.train_config(seed), objective=objective)


KD_OVERRIDES: dict[str, float] = {}


def overrides(text: str) -> dict[str, float]:
    """``"strength=1,rate=0.15"`` → {"strength": 1.0, "rate": 0.15}."""
    pairs = (item.split("=") for item in text.split(",") if item)
    return {key: float(value) for key, value in pairs}


def methods(tampered, data, scans, args):
    cfg = replace(UnlearningConfig(), **overrides(args.unlearning))
    KD_OVERRIDES.update(overrides(args.distill))
    nc = None
    if "nc" in args.methods:
        nc = unlearn(tampered, data, scans, cfg, seed=args.seed)
        yield "nc", nc
    if "pam" in args.methods:
        pam = PathAwareObjective(tampered, args.rho)
        yield "pam", unlearn(tampered, data, scans, cfg, seed=args.seed, objective=pam)
    if "kd" not in args.methods:
        return
    for variant in args.kd.split(","):
        mix, steps = variant.split(":")
        model = distill(tampered, data, scans, cfg, int(steps), mix, args.seed)
        yield f"kd_{mix}_{steps}", model
        if nc is not None and "kdnc" in args.methods:  # the student starts unlearnt
            model = distill(tampered, data, scans, cfg, int(steps), mix, args.seed, student=nc)
            yield f"kd_from_nc_{mix}_{steps}", model


def with_soup(pairs, built):
    """The methods' models, then the uniform weight average of every two of them."""
    for name, model in pairs:
        built[name] = model
        yield name, model
    names = list(built)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            yield f"soup({a},{b})", line_point(built[a], built[b], 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--sizes", default="50,250,2500")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="nc,pam,kd")
    parser.add_argument("--rho", type=float, default=0.5, help="PAM's step towards the tampered")
    parser.add_argument("--scan-from", type=float, default=2.0, help="scan line points from t")
    parser.add_argument("--line", default="0.5,0.6,0.7,0.8,0.9")
    parser.add_argument("--unlearning", default="", help="UnlearningConfig overrides k=v,...")
    parser.add_argument("--distill", default="", help="DistillationConfig overrides k=v,...")
    parser.add_argument("--retune", action="store_true", help="the anchor's retuning attack too")
    parser.add_argument("--probe-seeds", default="", help="other scans' triggers as probes")
    parser.add_argument("--kd", default="none:300", help="distillation variants, mix:steps,...")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        (ck,), _, data = suspects_with_data(
            [args.model], DataConfig(dataset=None, bonafide=size), DEV, seed=args.seed
        )
        spec = TriggerSpec.from_dict(ck.attack)
        x, y = scan_images(data, ScanConfig().images, DEV)
        start = time.perf_counter()
        scans = [scan_model(ck.model, x, y, data.info.num_classes, ScanConfig(seed=args.seed))]
        base = {"size": size, "seed": args.seed, "flagged": scans[0].flagged_classes}
        print(json.dumps({**base, "method": "scan", "s": round(time.perf_counter() - start)}))
        print(json.dumps({**base, "method": "tampered", **measure(ck.model, data, spec)}))
        classes = data.info.num_classes
        probes = {
            s: scan_model(ck.model, x, y, classes, ScanConfig(seed=s, confirm_draws=0))
            for s in (int(v) for v in args.probe_seeds.split(",") if v)
        }
        built = {}
        for name, model in with_soup(methods(ck.model, data, scans, args), built):
            row = {**base, "method": name, **measure(model, data, spec)}
            if args.retune:
                row["retuning_asr"] = round(retuning_attack_asr(model, data, spec), 4)
            print(json.dumps(row), flush=True)
            for t in (float(v) for v in args.line.split(",") if v):
                point = line_point(model, ck.model, t)
                row = {**base, "method": f"{name}→tampered", "t": t, **measure(point, data, spec)}
                row["flip"] = stamped_flip_rate(point, data, scans)
                for probe_seed, probe in probes.items():
                    flagged = scans[0].flagged_classes
                    row[f"flip@{probe_seed}"] = stamped_flip_rate(point, data, [probe], flagged)
                if t >= args.scan_from:
                    config = ScanConfig(seed=args.seed)
                    seen = scan_model(point, x, y, data.info.num_classes, config)
                    row["suspicion"] = round(seen.suspicion, 3)
                    row["passes"] = not seen.backdoor_found
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
