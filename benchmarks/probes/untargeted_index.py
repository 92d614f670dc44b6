"""Probe: the scan's untargeted index of trained models (README, "Backdoor scan").

Usage: python -m benchmarks.probes.untargeted_index RUN_DIR [RUN_DIR ...]

For each model: 512 bonafide images of its data set (2,500 bonafide samples, seed 0), the
scan with 120 steps (the demo's setting), then one line with the verdict, the largest class
anomaly index, the untargeted trigger sizes against the median class trigger, and the index.
"""

from __future__ import annotations

import sys
import time

import torch

from modeconn.commands.suspects import load_repair_inputs
from modeconn.defenses.repair import RepairConfig
from modeconn.defenses.scan import ScanConfig, scan_images, scan_model


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    config = RepairConfig()
    for path in paths:
        start = time.perf_counter()
        checkpoint, _, _, data = load_repair_inputs([path], config, None, torch.device("cpu"))
        x, y = scan_images(data, 512)
        scan = scan_model(checkpoint.model, x, y, data.info.num_classes, ScanConfig(steps=120))
        sizes = ", ".join(
            f"{kind} {float(trig.size[0]):.2f} vs {float(scan.triggers[kind].size.median()):.2f}"
            for kind, trig in scan.untargeted.items()
        )
        print(
            f"{path}: max class index {max(scan.anomaly_index):.2f} "
            f"(flagged {scan.flagged_classes}); untargeted {sizes}; "
            f"untargeted index {scan.untargeted_index:.2f}; found {scan.backdoor_found}; "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
