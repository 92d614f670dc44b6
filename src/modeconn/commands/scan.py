"""``modeconn scan``: is this model backdoored? Answered from bonafide data only.

Loads the model, draws the bonafide subset of the training split (never the test set), optionally
trains a reference model from scratch on it (or loads the one given), synthesizes a trigger per
class in the model (and the reference) (:mod:`modeconn.defenses.scan`) and writes the verdict:
``summary.json`` (``flagged_classes``, ``anomaly_index``, per kind sizes and indices),
``scan.csv``/``scan.md`` (one row per class), ``triggers_<kind>.png`` (the synthesized triggers)
and ``triggers.safetensors`` (for unlearning elsewhere).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.checkpoints import Checkpoint, foreign_record, load_model, write_tensors
from modeconn.commands.suspects import suspects_with_data
from modeconn.data.prepare import DataConfig, PreparedData
from modeconn.defenses.baselines import train_from_scratch
from modeconn.defenses.scan import ScanConfig, ScanResult, scan_images, scan_model
from modeconn.defenses.scan.kinds import TENSOR_NAMES
from modeconn.defenses.scan.zoo_reference import scan_uncertainty
from modeconn.distributed import resolve_device
from modeconn.errors import ModeconnError
from modeconn.io import atomic_write_text, write_table
from modeconn.models import ModelSpec
from modeconn.models.foreign import ForeignArchitecture
from modeconn.models.sizing import check_compatible
from modeconn.rundir import RunDir, open_run
from modeconn.training import TrainConfig

#: How the reference model is trained from scratch on the bonafide data. It only needs to know
#: the classes' natural trigger sizes, so a short run is enough.
REFERENCE_TRAINING = TrainConfig(
    epochs=30, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine"
)


def reference_model(
    spec: ModelSpec,
    data: PreparedData,
    config: TrainConfig,
    device: torch.device | str,
    progress: bool,
) -> nn.Module:
    """A model of the same architecture trained from scratch on the bonafide data only."""
    loader = data.train_loader(config.batch_size, split="bonafide", augment=False, device=device)
    return train_from_scratch(spec, loader, config, device=device, progress=progress)


def scan_rows(result: ScanResult) -> list[dict[str, Any]]:
    """One row per class: index, flag and per kind size, reference size, success, index."""
    rows = []
    for k, value in enumerate(result.anomaly_index):
        row: dict[str, Any] = {
            "class": k,
            "anomaly_index": value,
            "flagged": k in result.flagged_classes,
        }
        for kind, trig in result.triggers.items():
            row[f"{kind}_size"] = float(trig.size[k])
            if result.reference_sizes is not None:
                row[f"{kind}_reference_size"] = result.reference_sizes[kind][k]
            row[f"{kind}_success"] = float(trig.success[k])
            row[f"{kind}_index"] = result.index[kind][k]
        rows.append(row)
    return rows


def uncertainty_text(figures: dict[str, Any]) -> str:
    """What the zoo says of a verdict, in one sentence (empty without zoo figures)."""
    if not figures:
        return ""
    misses = ", ".join(f"{family} {rate:.0%}" for family, rate in figures["zoo_miss_rate"].items())
    return (
        f"How sure: {figures['zoo_clean_share']:.0%} of the zoo's clean models "
        f"({figures['zoo']}) look at least this suspicious; on its held-out part the scan "
        f"missed {misses} of the backdoored models."
    )


def scan_markdown(
    result: ScanResult, class_names: list[str] | None = None, uncertainty: str = ""
) -> str:
    kinds = list(result.triggers)
    head = (
        "| class | anomaly index | flagged | "
        + " | ".join(f"{k} size (reference) | {k} index" for k in kinds)
        + " |"
    )
    sep = "|---|---:|---|" + "---:|---:|" * len(kinds)
    lines = [f"Verdict: {result.verdict()}", *([uncertainty] if uncertainty else []), "", head, sep]
    for k, value in enumerate(result.anomaly_index):
        name = f"{k} {class_names[k]}" if class_names else str(k)
        cells = []
        for kind in kinds:
            size = float(result.triggers[kind].size[k])
            ref = result.reference_sizes[kind][k] if result.reference_sizes else None
            cells.append(f"{size:.2f}" + (f" ({ref:.2f})" if ref is not None else ""))
            cells.append(f"{result.index[kind][k]:.2f}")
        flag = "**yes**" if k in result.flagged_classes else ""
        lines.append(f"| {name} | {value:.2f} | {flag} | " + " | ".join(cells) + " |")
    if result.untargeted:
        sizes = ", ".join(
            f"{kind} {float(trig.size[0]):.2f} "
            f"(median class {float(result.triggers[kind].size.median()):.2f})"
            for kind, trig in result.untargeted.items()
        )
        lines += [
            "",
            f"Universal label flipper (untargeted trigger): {sizes}; untargeted index "
            f"{result.untargeted_index:.2f} (flagged above {result.untargeted_threshold:g}).",
        ]
    return "\n".join(lines) + "\n"


def save_triggers(path: Path, result: ScanResult) -> None:
    tensors: dict[str, torch.Tensor] = {}
    named = [(kind, trig) for kind, trig in result.triggers.items()]
    named += [(f"untargeted_{kind}", trig) for kind, trig in result.untargeted.items()]
    for key, trig in named:
        tensors[f"{key}.size"] = trig.size
        tensors[f"{key}.success"] = trig.success
        for name in TENSOR_NAMES:
            value = getattr(trig, name)
            if value is not None:
                tensors[f"{key}.{name}"] = value
    write_tensors(path, tensors)


def write_scan_outputs(
    run: RunDir,
    result: ScanResult,
    class_names: list[str] | None,
    uncertainty: dict[str, Any] | None = None,
) -> None:
    """Tables, trigger images and tensors of one scan into ``run``."""
    from modeconn.report.scan_plots import plot_triggers

    write_table(run.file("scan.csv"), scan_rows(result))
    text = scan_markdown(result, class_names, uncertainty_text(uncertainty or {}))
    atomic_write_text(run.file("scan.md"), text)
    save_triggers(run.file("triggers.safetensors"), result)
    for kind in result.triggers:
        plot_triggers(run.file(f"triggers_{kind}.png"), result, kind, class_names)


def _reference_checkpoint(
    reference: str | Path,
    checkpoint: Checkpoint,
    source: str | Path,
    prepared: PreparedData,
    device: torch.device,
    foreign: ForeignArchitecture | None,
) -> Checkpoint:
    """The clean model a scan compares each class with, checked to fit the scanned one."""
    info = prepared.info
    ref = load_model(reference, device=device, foreign=foreign, data=info, dataset=info.name)
    if ref.spec.num_classes != checkpoint.spec.num_classes:
        raise ModeconnError(
            f"reference {reference} has {ref.spec.num_classes} classes, "
            f"{source} has {checkpoint.spec.num_classes}"
        )
    check_compatible(ref.spec, prepared, str(reference))
    return ref


def run_scan(
    model_path: str | Path,
    out: str | Path,
    *,
    config: ScanConfig | None = None,
    data: DataConfig | None = None,
    reference: str | Path | None = None,
    reference_training: TrainConfig | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    foreign: ForeignArchitecture | None = None,
) -> dict[str, Any]:
    """Scan one model for a backdoor; see the module doc. ``reference``: ``"scratch"`` (train
    one on the bonafide data), a checkpoint path, or None (compare raw sizes across classes).
    ``foreign`` reads weights without a sidecar (the model's and the reference's)."""
    config = config if config is not None else ScanConfig()
    config.validate()
    dev = resolve_device(device)
    (checkpoint,), data, prepared = suspects_with_data(
        [model_path], data, dev, seed=config.seed, foreign=foreign
    )
    ref_checkpoint = None
    if reference not in (None, "scratch"):
        ref_checkpoint = _reference_checkpoint(
            reference, checkpoint, model_path, prepared, dev, foreign
        )
    x, y = scan_images(prepared, config.images, dev)
    ref_cfg = dataclasses.replace(reference_training or REFERENCE_TRAINING, seed=config.seed)
    options = {
        "command": "scan",
        "model": str(model_path),
        "reference": str(reference) if reference is not None else None,
        "reference_training": ref_cfg.to_dict() if reference == "scratch" else None,
        "scan": config.to_dict(),
        "data": data.to_dict(),
        "device": str(dev),
        **foreign_record(foreign),
    }
    with open_run(out, options, force=force) as run:
        ref_model = ref_checkpoint.model if ref_checkpoint is not None else None
        if reference == "scratch":
            ref_model = reference_model(checkpoint.spec, prepared, ref_cfg, dev, progress)
        result = scan_model(
            checkpoint.model, x, y, prepared.info.num_classes, config, reference=ref_model
        )
        uncertainty = scan_uncertainty(result, config, prepared.info.name)
        write_scan_outputs(run, result, None, uncertainty)
        summary = {
            "verdict": result.verdict(),
            **result.summary(),
            "threshold": config.threshold,
            "images": len(y),
            **uncertainty,
        }
        run.finish(summary)
    return summary
