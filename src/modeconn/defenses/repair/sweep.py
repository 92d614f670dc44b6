"""The bonafide-size sweep: the same repair again with several bonafide sizes."""

from __future__ import annotations

import dataclasses

from modeconn.checkpoints import Checkpoint
from modeconn.data.prepare import DataConfig, prepare_data
from modeconn.defenses.repair.config import RepairConfig
from modeconn.defenses.repair.context import StageFn
from modeconn.defenses.repair.repair import Repair
from modeconn.defenses.repair.results import slug
from modeconn.training import TrainConfig, TrainingRun


def _prefixed(stages: StageFn | None, n: int) -> StageFn | None:
    """The sweep size's stages, ``sweep<n>_<name>``, so each size resumes on its own."""
    if stages is None:
        return None

    def stage(name: str, train_cfg: TrainConfig) -> TrainingRun | None:
        return stages(f"sweep{n}_{name}", train_cfg)

    return stage


def sweep_repairs(
    tampered: Checkpoint,
    second: Checkpoint | None,
    data: DataConfig,
    config: RepairConfig,
    device,
    progress: bool,
    attack,
    stages: StageFn | None = None,
) -> list[dict[str, float]]:
    """Repair again with several bonafide sizes (same method and rule, no baselines, no EOT,
    11 path points); one row per size with the chosen candidate's figures (clean accuracy, the
    attack's figure, its retuning ASR and backdoor_t when measured) and every candidate's."""
    rows = []
    for n in config.sweep:
        cfg = dataclasses.replace(config, baselines=False, eot=False, points=11)
        prepared = prepare_data(dataclasses.replace(data, bonafide=n))
        repair = Repair(
            tampered,
            second,
            prepared,
            cfg,
            attack,
            device,
            progress=progress,
            stages=_prefixed(stages, n),
        )
        result = repair.run()
        key = repair.key
        entry = {"bonafide": n, "clean_acc": result.chosen.metrics["clean_acc"]}
        if result.t is not None:
            entry["t"] = result.t
        if key:
            entry[key] = result.chosen.metrics[key]
        for depth_key in ("retuning_asr", "backdoor_t"):
            if result.chosen.metrics.get(depth_key) is not None:
                entry[depth_key] = result.chosen.metrics[depth_key]
        for cand in result.candidates:
            entry[f"{slug(cand.name)}_clean_acc"] = cand.metrics["clean_acc"]
            if key:
                entry[f"{slug(cand.name)}_{key}"] = cand.metrics[key]
        rows.append(entry)
    return rows
