"""The default repair judged on held-out zoo backdoors it was never tuned on.

Runs ``modeconn repair MODEL --bonafide 2500`` (the one-model set-up, every default) on held-out
backdoored models of :mod:`benchmarks.scan_zoo` — other seeds, targets and trigger settings than
the calibration part the scan's thresholds were set on, patch, blend, warp and all-to-all, three
architectures — and checks what a user must be able to rely on: the returned model's ASR is at
most 0.05, or the repair says it could not verify the result. A repair that reports success
(``verified``) while the true ASR is above 0.05 is the failure this benchmark exists to catch.

The zoo models are trained (once) by the zoo benchmark's cache; each repair is a resumable run
directory ``<zoo>/<model>/repair`` and is computed once. ``MODECONN_ZOO_WORKERS=i/n`` splits the
repairs over processes as the zoo benchmark does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.bench_scan_zoo import _root
from benchmarks.scan_zoo import FULL, members, train_member
from modeconn.commands.repair import run_repair
from modeconn.data.prepare import DataConfig
from modeconn.io import read_json
from modeconn.rundir import run_status

#: Held-out backdoors of every family and architecture, near the threshold and far from it.
REPAIRED = (
    "patch-lenet-22",
    "patch-lenet-23",
    "blend-lenet-22",
    "blend-resnet-21",
    "blend-mlp-21",
    "warp-lenet-21",
    "warp-resnet-22",
    "all-to-all-lenet-21",
)
ASR_LIMIT = 0.05
BONAFIDE = 2500


def repair_member(name: str, root: Path, *, progress: bool = False) -> dict[str, Any]:
    """The default one-model repair of zoo model ``name`` (computed once); its summary."""
    member = next(m for m in members() if m.name == name)
    train_member(member, root, FULL)
    out = root / name / "repair"
    if run_status(out) == "finished":
        return read_json(out / "summary.json")
    return run_repair(
        [root / name / "model.safetensors"],
        out,
        data=DataConfig(dataset=None, bonafide=BONAFIDE),
        resume=out.exists(),
        progress=progress,
    )


def judged(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One repair's row: figures, the verdict it gave, and whether a user could rely on it."""
    asr = summary["asr"]
    verified = bool(summary["verified"])
    return {
        "model": name,
        "clean_acc": summary["clean_acc"],
        "tampered_clean_acc": summary.get("tampered_clean_acc"),
        "asr": asr,
        "tampered_asr": summary.get("tampered_asr"),
        "chosen": summary.get("method"),
        "retuning_asr": summary.get("retuning_asr"),
        "backdoor_t": summary.get("backdoor_t"),
        "verified": verified,
        "precaution_classes": summary.get("precaution_classes", []),
        "warning": summary.get("warning"),
        "removed": asr <= ASR_LIMIT,
        "silent_failure": verified and asr > ASR_LIMIT,
        "seconds": round(sum(v for k, v in summary.items() if k.startswith("seconds_")), 1),
    }


def main(out_dir: Path) -> dict[str, Any]:
    """This worker's share of the repairs, then the table of every repair finished so far (the
    last worker to finish writes all of them; ``partial`` lists the ones still running)."""
    i, n = (int(v) for v in os.environ.get("MODECONN_ZOO_WORKERS", "0/1").split("/"))
    root = _root()
    for k, name in enumerate(REPAIRED):
        if k % n == i:
            repair_member(name, root)
    done = [name for name in REPAIRED if run_status(root / name / "repair") == "finished"]
    rows = [judged(name, read_json(root / name / "repair" / "summary.json")) for name in done]
    return {
        "bonafide": BONAFIDE,
        "asr_limit": ASR_LIMIT,
        "repairs": rows,
        "partial": [name for name in REPAIRED if name not in done],
        "removed": sum(r["removed"] for r in rows),
        "unverified": sum(not r["verified"] for r in rows),
        "silent_failures": [r["model"] for r in rows if r["silent_failure"]],
    }
