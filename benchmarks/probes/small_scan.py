"""Probe: does a scan of a few dozen bonafide images see more when the images are augmented?

With 50 bonafide images the repair's scan has 50 images to push around; on the held-out blend
pair it missed the target (class 3 at 0.90 of the threshold). This probe scans each model with
the raw images and with ``--count`` randomly cropped copies of them (zero padding
``--padding``), and prints each verdict's suspicion and flagged classes.

    python -m benchmarks.probes.small_scan MODEL... --bonafide 50 --count 512
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from modeconn.commands.suspects import suspects_with_data
from modeconn.data.loaders import augment_batch
from modeconn.data.prepare import DataConfig
from modeconn.defenses.scan import ScanConfig, scan_images, scan_model

DEV = torch.device("cpu")


def augmented(x: torch.Tensor, y: torch.Tensor, count: int, padding: int, seed: int):
    """``count`` crops of the images (each image repeated, then cropped at random)."""
    g = torch.Generator().manual_seed(seed)
    reps = -(-count // len(x))
    xs, ys = x.repeat(reps, 1, 1, 1)[:count], y.repeat(reps)[:count]
    keep = xs[: len(x)]  # the originals stay as they are
    crops = augment_batch(xs[len(x) :], "crop", g, padding=padding)
    return torch.cat([keep, crops]), ys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--bonafide", type=int, default=50)
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--padding", type=int, default=2)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    for path in args.models:
        for seed in (int(s) for s in args.seeds.split(",")):
            data = DataConfig(dataset=None, bonafide=args.bonafide)
            (ck,), _, prepared = suspects_with_data([path], data, DEV, seed=seed)
            x, y = scan_images(prepared, 512, DEV)
            variants = {"raw": (x, y), "crops": augmented(x, y, args.count, args.padding, seed)}
            for name, (xv, yv) in variants.items():
                start = time.perf_counter()
                config = ScanConfig(seed=seed)
                result = scan_model(ck.model, xv, yv, prepared.info.num_classes, config)
                row = {
                    "model": path,
                    "seed": seed,
                    "images": name,
                    "n": len(yv),
                    "suspicion": round(result.suspicion, 3),
                    "flagged": result.flagged_classes,
                    "top": result.top_class,
                    "untargeted": round(result.untargeted_index or 0.0, 3),
                    "s": round(time.perf_counter() - start, 1),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
