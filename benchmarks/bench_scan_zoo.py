"""The scan judged on a zoo of clean and backdoored models, as detectors are judged.

Trains the zoo of :mod:`benchmarks.scan_zoo` once (cached run directories), scans every model with
the default :class:`ScanConfig`, and reports per attack family and overall, for the calibration
part and the held-out part separately: AUROC of the scan's score (its suspicion, the strongest
evidence over its threshold), true-positive rate at 5% false positives, detections and false
flags at the default threshold, the share of detected all-to-one models whose target is the top
class, and seconds per model. It also scans the held-out backdoored models with two more seeds
(other image draws) to count verdicts that change, and times today's and the previous default
scan side by side on the same lenets for the speed ratio.

``MODECONN_ZOO`` names the cache directory (default ``benchmarks/results/zoo``);
``MODECONN_ZOO_WORKERS=i/n`` scans every n-th model only (run n processes side by side; the
last one to finish writes the tables from every model's cached result).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.scan_zoo import (
    CALIBRATION,
    FULL,
    HELD_OUT,
    QUICK,
    ZooMember,
    ZooScale,
    effective,
    members,
    quick_members,
    train_member,
)
from modeconn.commands.suspects import suspects_with_data
from modeconn.data.prepare import DataConfig
from modeconn.defenses.scan import ScanConfig, ScanResult, scan_images, scan_model
from modeconn.defenses.scan.anomaly import combine_kinds, flag_classes, untargeted_groups
from modeconn.defenses.scan.calibration import ZooScore, zoo_table
from modeconn.defenses.scan.draws import draw_seeds, needs_second_look, pool_draws
from modeconn.defenses.scan.zoo_reference import REFERENCE_FILE
from modeconn.io import read_json, write_json
from modeconn.layout import standard_layout

STABILITY_SEEDS = (1, 2)
#: The scan before the zoo: mask and perturbation kinds, 150 steps of 24 images per class.
PREVIOUS = ScanConfig(
    steps=150,
    batch_size=24,
    kinds=("mask", "perturbation"),
    untargeted_kinds=("mask", "perturbation"),
    mask_lr=0.1,
    perturbation_lr=0.02,
    untargeted_batch=96,
    confirm_draws=0,
)
RATIO_MODELS = ("clean-lenet-0", "patch-lenet-1")


def _root() -> Path:
    return Path(os.environ.get("MODECONN_ZOO", "benchmarks/results/zoo"))


def scan_member(
    member: ZooMember,
    root: Path,
    config: ScanConfig,
    scale: ZooScale = FULL,
    *,
    data_seed: int | None = None,
    whole: bool = False,
    standard: bool = False,
) -> tuple[ScanResult, float]:
    """One draw of the scan of a trained zoo model (the whole scan, second look included, when
    ``whole``), as ``modeconn scan`` makes it: its own bonafide draw, seeded by ``data_seed``
    (default ``config.seed``; a second look's draws keep the first draw's images). Without
    ``whole`` the second look is decided offline from cached draws (:func:`decide`). With
    ``standard`` the model keeps the standard memory layout, as scans ran before channels-last
    (:func:`~modeconn.layout.standard_layout`)."""
    dev = torch.device("cpu")
    data = DataConfig(dataset=None, bonafide=scale.bonafide)
    seed = config.seed if data_seed is None else data_seed
    (ck,), _, prepared = suspects_with_data(
        [root / member.name / "model.safetensors"], data, dev, seed=seed
    )
    start = time.perf_counter()
    x, y = scan_images(prepared, config.images, dev)
    one = config if whole else replace(config, confirm_draws=0)
    with standard_layout(ck.model) if standard else nullcontext():
        result = scan_model(ck.model, x, y, prepared.info.num_classes, one)
    return result, time.perf_counter() - start


def _record(result: ScanResult, seconds: float) -> dict[str, Any]:
    """What a zoo table needs of a scan, and every kind's index so that rules can be re-derived
    offline (``benchmarks/probes/scan_calibration.py``)."""
    groups = untargeted_groups(result.triggers, result.untargeted) if result.untargeted else {}
    return {
        "score": result.suspicion,
        "flagged": result.backdoor_found,
        "top_class": result.top_class,
        "flagged_classes": result.flagged_classes,
        "verdict": result.verdict(),
        "seconds": round(seconds, 2),
        "index": result.index,
        "success": {k: [round(float(v), 3) for v in t.success] for k, t in result.triggers.items()},
        "untargeted_index": result.untargeted_index,
        "untargeted_groups": groups,
    }


def cached_scan(
    member: ZooMember,
    root: Path,
    config: ScanConfig,
    scale: ZooScale = FULL,
    *,
    label: str = "scan",
    data_seed: int | None = None,
) -> dict[str, Any]:
    """The scan of ``member`` with ``config``, computed once per scan setting (one draw). A draw
    cached before ``config`` added kinds is extended by synthesizing the new kinds alone: every
    kind is optimised on its own, from its own seeded generator, so the result is the draw the
    whole scan would make."""
    path = root / member.name / f"{label}@{config.seed}.json"
    cached = read_json(path) if path.exists() else None
    if cached is not None:
        if _synthesis(cached.get("config", {})) == _synthesis(config.to_dict()):
            return cached
        added = added_kinds(cached.get("config", {}), config)
        if added is not None:
            record = {**cached, "config": config.to_dict()}
            if added.kinds:
                record = _extended(member, root, cached, added, config, scale, data_seed)
            write_json(path, record)
            return record
    result, seconds = scan_member(member, root, config, scale, data_seed=data_seed)
    record = {**_record(result, seconds), "config": config.to_dict()}
    write_json(path, record)
    return record


def added_kinds(cached: dict[str, Any], config: ScanConfig) -> ScanConfig | None:
    """The scan of only the kinds ``config`` adds to a cached draw's settings ``cached``, or
    None when the two differ in anything else (then the draw is scanned again)."""
    new = json.loads(json.dumps(config.to_dict()))
    kinds, untargeted = cached.get("kinds"), cached.get("untargeted_kinds")
    if kinds is None or untargeted is None:
        return None
    if not set(kinds) <= set(config.kinds) or not set(untargeted) <= set(config.untargeted_kinds):
        return None
    shared = {k for k in cached if k not in ("kinds", "untargeted_kinds")}
    if _synthesis({k: cached[k] for k in shared}) != _synthesis({k: new[k] for k in shared}):
        return None
    added = tuple(k for k in config.kinds if k not in kinds)
    flippers = tuple(k for k in config.untargeted_kinds if k not in untargeted)
    if not set(flippers) <= set(added):
        return None
    return replace(config, kinds=added, untargeted_kinds=flippers, confirm_draws=0)


def _extended(
    member: ZooMember,
    root: Path,
    cached: dict[str, Any],
    added: ScanConfig,
    config: ScanConfig,
    scale: ZooScale,
    data_seed: int | None,
) -> dict[str, Any]:
    """``cached`` with the kinds of ``added`` synthesized on the same images and merged in (a
    record written before groups were kept held the pixel kinds' untargeted index only)."""
    result, seconds = scan_member(member, root, added, scale, data_seed=data_seed)
    groups = dict(cached.get("untargeted_groups") or {"pixels": cached["untargeted_index"]})
    if result.untargeted:
        groups.update(untargeted_groups(result.triggers, result.untargeted))
    index = {k: (cached["index"] | result.index)[k] for k in config.kinds}
    success = cached["success"] | {
        k: [round(float(v), 3) for v in t.success] for k, t in result.triggers.items()
    }
    merged = {
        "index": index,
        "untargeted_index": max(groups.values()) if groups else None,
        "untargeted_groups": groups,
    }
    decided = _as_result(merged, config)
    return {
        **merged,
        "score": decided.suspicion,
        "flagged": decided.backdoor_found,
        "top_class": decided.top_class,
        "flagged_classes": decided.flagged_classes,
        "verdict": decided.verdict(),
        "seconds": round(cached["seconds"] + seconds, 2),
        "success": success,
        "config": config.to_dict(),
    }


#: Settings that decide on the synthesized triggers without changing them: a cached scan is
#: decided again under today's values instead of scanned again.
DECISION_FIELDS = (
    "threshold",
    "warp_threshold",
    "blend_threshold",
    "untargeted_threshold",
    "margin_threshold",
    "confirm_draws",
    "confirm_band",
)


def _synthesis(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``config`` (as JSON) that change what the scan synthesizes."""
    plain = json.loads(json.dumps(config))
    return {k: v for k, v in plain.items() if k not in DECISION_FIELDS}


def _as_result(record: dict[str, Any], config: ScanConfig) -> ScanResult:
    """A cached draw as a scan result under ``config``'s thresholds (without its triggers)."""
    combined = combine_kinds(record["index"], config)
    return ScanResult(
        {},
        record["index"],
        combined,
        flag_classes(combined, config),
        config.threshold,
        untargeted_index=record["untargeted_index"],
        untargeted_threshold=config.untargeted_threshold,
    )


def decide(
    member: ZooMember,
    root: Path,
    config: ScanConfig,
    scale: ZooScale = FULL,
    *,
    label: str = "scan",
) -> dict[str, Any]:
    """The scan of ``member`` with ``config`` decided from cached draws as ``scan_model`` decides
    it: the first draw, and when it lies near the threshold the pool of it and the second look's
    draws (scanned and cached when missing). Seconds add up over the draws."""
    records = [cached_scan(member, root, config, scale, label=label)]
    result = _as_result(records[0], config)
    if needs_second_look(result.suspicion, config):
        records += [
            cached_scan(
                member, root, replace(config, seed=s), scale, label=label, data_seed=config.seed
            )
            for s in draw_seeds(config)
        ]
        result = pool_draws([_as_result(r, config) for r in records], config)
    return {
        **records[0],
        "score": result.suspicion,
        "flagged": result.backdoor_found,
        "top_class": result.top_class,
        "draws": len(records),
        "seconds": round(sum(r["seconds"] for r in records), 2),
    }


def _score(member: ZooMember, record: dict[str, Any]) -> ZooScore:
    target = None
    if member.trigger is not None and member.trigger.get("label_mode") != "all-to-all":
        target = member.trigger["target"]
    return ZooScore(
        member.name,
        member.family,
        record["score"],
        record["flagged"],
        target,
        record["top_class"],
        record["seconds"],
    )


def speed_ratio(root: Path) -> dict[str, Any]:
    """Seconds of the previous scan (its settings, standard memory layout: the scan as issue 23
    found it) and today's default scan on the same lenets, side by side; also the previous
    settings in today's layout, which shows what the settings alone are worth."""
    zoo = {m.name: m for m in members()}
    arms = (
        ("previous", PREVIOUS, True),
        ("previous_settings_channels_last", PREVIOUS, False),
        ("default", ScanConfig(), False),
    )
    laps: dict[str, list[float]] = {label: [] for label, _, _ in arms}
    for name in RATIO_MODELS:
        for label, config, standard in arms:
            _, seconds = scan_member(zoo[name], root, config, whole=True, standard=standard)
            laps[label].append(round(seconds, 2))
    total = {label: sum(values) for label, values in laps.items()}
    return {
        **laps,
        "ratio": round(total["previous"] / total["default"], 2),
        "settings_ratio": round(total["previous_settings_channels_last"] / total["default"], 2),
    }


def run_zoo(
    root: Path,
    zoo: list[ZooMember],
    scale: ZooScale,
    *,
    worker: tuple[int, int] = (0, 1),
    config: ScanConfig | None = None,
) -> dict[str, Any]:
    """Train (once) and scan (once per setting) this worker's share of ``zoo`` under ``root``;
    the tables once every model has been scanned (else ``{"partial": True}``)."""
    config = config or ScanConfig()
    for i, m in enumerate(zoo):
        if i % worker[1] != worker[0]:
            continue
        train_member(m, root, scale)
        decide(m, root, config, scale)
        if m.part == HELD_OUT:
            cached_scan(m, root, PREVIOUS, scale, label="previous")
            if m.trigger is not None:
                for seed in STABILITY_SEEDS:
                    decide(m, root, replace(config, seed=seed), scale)
    if not all((root / m.name / f"scan@{config.seed}.json").exists() for m in zoo):
        return {"partial": True, "worker": worker[0]}
    summaries = {m.name: train_member(m, root, scale) for m in zoo}
    return tables(root, zoo, summaries, config, scale)


def main(out_dir: Path) -> dict[str, Any]:
    quick = os.environ.get("MODECONN_ZOO_QUICK") == "1"
    workers = tuple(int(v) for v in os.environ.get("MODECONN_ZOO_WORKERS", "0/1").split("/"))
    root = _root()
    if quick:
        return run_zoo(root / "quick", quick_members(), QUICK, worker=workers)
    result = run_zoo(root, members(), FULL, worker=workers)
    if not result.get("partial"):
        write_reference(result, ScanConfig())
        result["speed"] = speed_ratio(root)
    return result


def write_reference(result: dict[str, Any], config: ScanConfig) -> None:
    """The zoo's clean suspicions and held-out miss rates beside the scan's code
    (:mod:`modeconn.defenses.scan.zoo_reference`), for the uncertainty of every default scan."""
    models = result["models"].values()
    held_out = result[HELD_OUT]
    record = {
        "config": config.to_dict(),
        "clean_scores": sorted(round(r["score"], 4) for r in models if r["family"] == "clean"),
        "miss_rate": {
            family: round(1 - row["detected"] / row["backdoored"], 3)
            for family, row in held_out.items()
            if family != "overall" and row["backdoored"]
        },
        "dataset": FULL.dataset,
        "description": (
            f"{len(models)} Fashion-MNIST models (lenet, narrow ResNet-20, MLP), "
            "benchmarks/bench_scan_zoo.py"
        ),
    }
    write_json(REFERENCE_FILE, record)


def tables(
    root: Path,
    zoo: list[ZooMember],
    summaries: dict[str, dict],
    config: ScanConfig,
    scale: ZooScale,
) -> dict[str, Any]:
    """The zoo's figures per part and family, the unstable verdicts and every model's row."""
    usable = [m for m in zoo if effective(m, summaries[m.name])]
    rows = {m.name: decide(m, root, config, scale) for m in usable}
    out: dict[str, Any] = {"config": asdict(config)}
    for part in (CALIBRATION, HELD_OUT):
        out[part] = zoo_table([_score(m, rows[m.name]) for m in usable if m.part == part])
    held_out = [m for m in usable if m.part == HELD_OUT]
    out["held-out, previous scan"] = zoo_table(
        [_score(m, decide(m, root, PREVIOUS, scale, label="previous")) for m in held_out]
    )
    unstable = []
    for m in usable:
        if m.part == HELD_OUT and m.trigger is not None:
            verdicts = {
                decide(m, root, replace(config, seed=s), scale)["flagged"]
                for s in (config.seed, *STABILITY_SEEDS)
            }
            if len(verdicts) > 1:
                unstable.append(m.name)
    out["unstable_verdicts"] = unstable
    out["not_learnt"] = [m.name for m in zoo if m not in usable]
    out["models"] = {
        m.name: {
            "family": m.family,
            "arch": m.arch,
            "part": m.part,
            "trigger": m.trigger,
            "clean_acc": summaries[m.name]["clean_acc"],
            "asr": summaries[m.name].get("asr"),
            **{k: rows[m.name][k] for k in ("score", "flagged", "top_class", "seconds", "draws")},
        }
        for m in usable
    }
    return out


def zoo_markdown(result: dict[str, Any]) -> str:
    """The README's table: per part and family, AUROC, TPR at 5% FPR, detections, false flags,
    target right and seconds per model."""
    lines = [
        "| part | family | models | AUROC | TPR at 5% FPR | detected | false flags (clean) "
        "| target right | s / model |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for part in (CALIBRATION, HELD_OUT, "held-out, previous scan"):
        for family, row in result[part].items():
            right = row["target_right"]
            lines.append(
                f"| {part} | {family} | {row['backdoored']} | {row['auroc']:.2f} "
                f"| {row['tpr_at_5pct_fpr']:.2f} | {row['detected']}/{row['backdoored']} "
                f"| {row['false_flags']}/{row['clean']} "
                f"| {'—' if right is None or right != right else f'{right:.0%}'} "
                f"| {row['seconds_per_model']:.0f} |"
            )
    return "\n".join(lines)
