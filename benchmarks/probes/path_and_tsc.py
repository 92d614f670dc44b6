"""Probe behind the README's "Does the curve earn its cost?" table (one thread, minutes).

    python benchmarks/probes/path_and_tsc.py aligned-path runs/demo/patch/backdoor_a \
        runs/demo/patch/backdoor_b
    python benchmarks/probes/path_and_tsc.py tsc runs/demo/patch/backdoor_a --stamped \
        --epochs 40 --lr 0.02
    python benchmarks/probes/path_and_tsc.py tsc runs/demo/patch/backdoor_a --epochs 100 --lr 0.02

Prints clean accuracy, held-out accuracy and ASR (full test set) of the models along the way.
Uses only the public API: the scan, unlearning, weight matching, curves and TSC.
"""

from __future__ import annotations

import argparse
import copy

import torch

from modeconn.attacks.metrics import metric_from_attack_spec
from modeconn.commands.suspects import load_repair_inputs
from modeconn.connectivity.alignment import weight_matching
from modeconn.connectivity.train import fit_curve
from modeconn.defenses.repair import RepairConfig, evaluate_candidate, with_budget
from modeconn.defenses.scan import scan_images, scan_model
from modeconn.defenses.tsc import TSCConfig, symmetry_connectivity
from modeconn.defenses.unlearning import unlearn, unlearning_loader
from modeconn.models.permutation import apply_permutation, permutation_spec
from modeconn.training import TrainConfig

DEVICE = torch.device("cpu")


def report(name: str, model, data, metric) -> None:
    figures = evaluate_candidate(name, model, data, metric, DEVICE).metrics
    print(name, {k: round(v, 4) for k, v in figures.items()}, flush=True)


def aligned_path(paths: list[str], cfg: RepairConfig) -> None:
    """Unlearn A and B with both scans, permute B onto A, train the stamped curve."""
    a, b, _, data = load_repair_inputs(paths, cfg, None, DEVICE)
    metric = metric_from_attack_spec(a.attack)
    x, y = scan_images(data, cfg.scan.images, DEVICE)
    scans = [scan_model(m.model, x, y, data.info.num_classes, cfg.scan) for m in (a, b)]
    print("flagged", [s.flagged_classes for s in scans], flush=True)
    ua = unlearn(a.model, data, scans, cfg.unlearning, seed=0, device=DEVICE)
    ub = unlearn(b.model, data, scans, cfg.unlearning, seed=0, device=DEVICE)
    report("A unlearnt", ua, data, metric)
    report("B unlearnt", ub, data, metric)
    spec = permutation_spec(a.model)
    sa, sb = ua.state_dict(), ub.state_dict()
    sb = apply_permutation(spec, sb, weight_matching(spec, sa, sb))
    loader = unlearning_loader(data, scans, cfg.unlearning, 0, DEVICE, cfg.curve.batch_size)
    curve = fit_curve(a.model, sa, sb, loader, cfg.curve, kind="bezier", num_bends=3)
    bn = data.eval_loader("bonafide", device=DEVICE)
    for t in (0.0, 0.25, 0.5, 0.75):
        report(f"aligned path t={t}", curve.model_at(t, bn_loader=bn).eval(), data, metric)
    mid = copy.deepcopy(ua)
    mid.load_state_dict({k: (sa[k] + sb[k]) / 2 for k in sa})
    report("aligned straight midpoint", mid, data, metric)


def tsc(path: str, cfg: RepairConfig, stamped: bool, epochs: int, lr: float) -> None:
    """One TSC round from the tampered model; stage 2 reported at several t."""
    a, _, _, data = load_repair_inputs([path], cfg, None, DEVICE)
    metric = metric_from_attack_spec(a.attack)
    if stamped:
        x, y = scan_images(data, cfg.scan.images, DEVICE)
        scans = [scan_model(a.model, x, y, data.info.num_classes, cfg.scan)]
        print("flagged", scans[0].flagged_classes, flush=True)
        loader = unlearning_loader(data, scans, cfg.unlearning, 0, DEVICE, 128)
    else:
        loader = data.train_loader(128, split="bonafide", device=DEVICE)
    report("tampered", a.model, data, metric)
    curve = TrainConfig(epochs=epochs, batch_size=128, lr=lr, weight_decay=5e-4, schedule="cosine")
    bn = data.eval_loader("bonafide", device=DEVICE)
    model, log = symmetry_connectivity(a.model, loader, bn, TSCConfig(t=0.4, curve=curve))
    print(log, flush=True)
    report("TSC stage 2, t=0.4", model, data, metric)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("probe", choices=["aligned-path", "tsc"])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--stamped", action="store_true")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = with_budget(RepairConfig(), scan_steps=120)  # the demo's scan
    if args.probe == "aligned-path":
        aligned_path(args.models, cfg)
    else:
        tsc(args.models[0], cfg, args.stamped, args.epochs, args.lr)


if __name__ == "__main__":
    main()
