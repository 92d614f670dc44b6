"""Probe: the distillation candidate of a two-model repair, setting by setting (issue 25).

Builds the repair's own ``distillation unlearning`` candidate (:class:`DistillationCandidate`)
for the pair ``A B`` at one bonafide budget, with the tampered models scanned once, for each
variant named on the command line: ``key=value`` overrides of :class:`DistillationConfig` or
:class:`UnlearningConfig` joined by ``+`` (``base`` for the defaults). Each row gives the test
accuracy, ASR, held-out accuracy and the anchor's retuning ASR, as one JSON line.

    OMP_NUM_THREADS=1 python -m benchmarks.probes.distill_students A B --bonafide 250 \\
        base students=1 students=1+lr=0.005 students=1+teachers=both
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from modeconn.commands.repair import attack_under_test
from modeconn.commands.suspects import load_repair_inputs
from modeconn.data.prepare import DataConfig
from modeconn.defenses.repair import RepairConfig
from modeconn.defenses.repair.candidates.distillation import DistillationCandidate
from modeconn.defenses.repair.repair import Repair

DEVICE = torch.device("cpu")


def variant_config(base: RepairConfig, variant: str) -> RepairConfig:
    """``base`` with the variant's overrides, each on the config that has the field."""
    distill, unlearning = base.distill, base.unlearning
    for item in (i for i in variant.split("+") if i != "base"):
        key, text = item.split("=")
        target = distill if hasattr(distill, key) else unlearning
        current = getattr(target, key)
        value = text if isinstance(current, str) else type(current or 0.0)(text)
        if target is distill:
            distill = dataclasses.replace(distill, **{key: value})
        else:
            unlearning = dataclasses.replace(unlearning, **{key: value})
    return dataclasses.replace(base, distill=distill, unlearning=unlearning)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs=2)
    parser.add_argument("--bonafide", type=int, default=250)
    parser.add_argument("variants", nargs="+")
    args = parser.parse_args()
    base = RepairConfig()
    data = DataConfig(dataset="fashion-mnist", bonafide=args.bonafide)
    tampered, second, _, prepared = load_repair_inputs(args.models, base, data, DEVICE)
    attack, _ = attack_under_test(tampered.attack, prepared.info)
    scans = None
    for variant in args.variants:
        config = variant_config(base, variant)
        repair = Repair(tampered, second, prepared, config, attack, DEVICE, progress=False)
        if scans is not None:
            repair._endpoint_scans = scans  # the same bonafide draw: scanned once
        scans = repair.endpoint_scans()
        started = time.perf_counter()
        built = DistillationCandidate().build(repair)
        seconds = round(time.perf_counter() - started)
        row = repair.evaluate("probe", built.model).metrics
        figures = {k: round(v, 4) for k, v in repair.retuning(built.model).items()}
        print(
            json.dumps(
                {
                    "bonafide": args.bonafide,
                    "variant": variant,
                    "seconds": seconds,
                    "acc": round(row["clean_acc"], 4),
                    "asr": round(row["asr"], 4),
                    "holdout": round(row["bonafide_holdout_acc"], 4),
                    **figures,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
