"""The ``repair`` command: a repair into a run directory (config, stages, outputs, summary).

The repair itself — scan, unlearn, connect, choose, verify — is :class:`modeconn.defenses.repair.
Repair`, in memory; this module gives its training stages resumable run directories and writes
what it produced: the repaired model, the curve, the tables, every scan and the figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modeconn.attacks.metrics import POISONED_TEST, PoisonedTestSpec
from modeconn.checkpoints import (
    Checkpoint,
    foreign_record,
    load_model,
    network_weights_path,
    save_model,
)
from modeconn.commands.scan import write_scan_outputs
from modeconn.commands.suspects import load_repair_inputs
from modeconn.connectivity import save_curve
from modeconn.data.prepare import DataConfig, PreparedData
from modeconn.data.registry import DatasetInfo
from modeconn.data.triggered import TriggeredImages, read_triggered_folder
from modeconn.defenses.repair import (
    ATTACK_NOT_MEASURED,
    TAMPERED,
    Candidate,
    Repair,
    RepairConfig,
    RepairResult,
    check_registered,
    repair_warnings,
    slug,
    sweep_repairs,
)
from modeconn.defenses.repair.evaluation import AttackUnderTest
from modeconn.defenses.retuning import RETUNING_ASR
from modeconn.defenses.scan import ScanConfig
from modeconn.defenses.scan.zoo_reference import scan_uncertainty
from modeconn.distributed import resolve_device
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.io import atomic_write_text, write_table
from modeconn.models.foreign import ForeignArchitecture
from modeconn.report.repair_plots import plot_repair
from modeconn.report.repair_tables import comparison_markdown
from modeconn.rundir import RunDir, open_run, run_status
from modeconn.training import TrainConfig

#: The repaired model's file in the run directory.
REPAIRED = "repaired.safetensors"


class Stages:
    """Run directories for a repair's training stages, ``OUT/stages/NAME``.

    Every stage (endpoint B, the curve, each trained baseline, each sweep size) saves its
    resumable state after every epoch through the training loop, so ``--resume`` continues an
    interrupted repair inside the stage it stopped in; a stage that had finished resumes at its
    last epoch and trains no further. The states are removed once the whole repair has finished;
    each stage's config and per-epoch metrics stay.
    """

    def __init__(self, run: RunDir) -> None:
        self.root = run.path / "stages"
        self.resuming = run.resuming
        self.runs: list[RunDir] = []

    def __call__(self, name: str, config: TrainConfig) -> RunDir:
        stage = RunDir(self.root / name, force=not self.resuming, resume=self.resuming)
        stage.write_config({"stage": name, "train": config.to_dict()})
        self.runs.append(stage)
        return stage

    def finish(self) -> None:
        """Drop the resumable states (the repair is complete)."""
        for stage in self.runs:
            stage.clear_state()


#: The figures of every comparison row that go into the summary, under the row's slug.
ROW_KEYS = (
    "clean_acc",
    "retuning_asr",
    "eot_asr",
    "max_anomaly_index",
    "untargeted_index",
    "backdoor_t",
)
#: The attack's figure, whichever the attack is.
ATTACK_KEYS = ("asr", "injection_success")
#: The further strengths of the retuning attack: ``retuning_asr@N``.
RETUNING_SWEEP_PREFIX = f"{RETUNING_ASR}@"


def present_keys(names: Sequence[str], metrics: dict[str, Any]) -> list[str]:
    """Those of ``names`` that ``metrics`` holds, in order, with the retuning attack's further
    strengths (``retuning_asr@N``) right after its default."""
    out: list[str] = []
    for name in names:
        out.append(name)
        if name == RETUNING_ASR:
            out += [k for k in metrics if k.startswith(RETUNING_SWEEP_PREFIX)]
    return [k for k in out if k in metrics]


def row_summary(row: Candidate, key: str | None) -> dict[str, float]:
    """A comparison row's summary keys: ``<slug>_<figure>``."""
    prefix = slug(row.name)
    names = (ROW_KEYS[0], key, *ROW_KEYS[1:]) if key else ROW_KEYS
    return {f"{prefix}_{k}": row.metrics[k] for k in present_keys(names, row.metrics)}


def summary_row(summary: dict[str, Any], name: str) -> dict[str, float]:
    """A comparison row's figures read back from a flat summary (the inverse of
    :func:`row_summary`): ``{"clean_acc": ..., "asr": ...}``; empty when the row is absent."""
    prefix = f"{slug(name)}_"
    names = (*ROW_KEYS, *ATTACK_KEYS)
    row = {k: summary[f"{prefix}{k}"] for k in names if f"{prefix}{k}" in summary}
    sweep = f"{prefix}{RETUNING_SWEEP_PREFIX}"
    row.update({k[len(prefix) :]: v for k, v in summary.items() if k.startswith(sweep)})
    return row


def verdict_summary(
    result: RepairResult, key: str | None, attack_note: str | None = None
) -> dict[str, Any]:
    """The keys that lead a repair's summary: what could be verified without the trigger.

    ``verified``: the scan found a backdoor in the tampered model(s) and none in the returned
    model — the only evidence of success a user without the trigger has. ``warning`` (only when
    not verified): why not, in plain sentences (:func:`~modeconn.defenses.repair.repair_warnings`).
    ``attack_measured``: the attack's figure (``asr`` or ``injection_success``) was measured, on
    the test set with the known trigger or on the user's triggered test images; ``attack_note``
    says that it was not (the trigger is unknown), or on which images it was (``attack_note``
    given: the user's triggered images).
    """
    warnings = repair_warnings(result)
    summary: dict[str, Any] = {"verified": not warnings}
    if warnings:
        summary["warning"] = " ".join(warnings)
    summary["attack_measured"] = key is not None
    if key is None or attack_note is not None:
        summary["attack_note"] = ATTACK_NOT_MEASURED if key is None else attack_note
    return summary


def repair_summary(
    result: RepairResult,
    key: str | None,
    bonafide: int,
    *,
    attack_note: str | None = None,
    scan_config: ScanConfig | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Flat summary keys: the verdict first (:func:`verdict_summary`, with ``attack_note``),
    then the chosen model's figures (and what the scan zoo says of the tampered model's scan
    under ``scan_config`` on ``dataset``), then every row's under its slug."""
    scan_config = scan_config or ScanConfig()
    chosen = result.chosen
    tampered = result.references[0]
    summary: dict[str, Any] = {
        **verdict_summary(result, key, attack_note),
        "method": chosen.name,
        "choice_rule": result.choice_rule,
        "clean_acc": chosen.metrics["clean_acc"],
        "clean_loss": chosen.metrics["clean_loss"],
        "tampered_clean_acc": tampered.metrics["clean_acc"],
        "bonafide": bonafide,
    }
    if result.t is not None:
        summary["t"] = result.t
        summary["t_rule"] = result.t_rule
        summary["path_candidate"] = result.path_candidate
    if key:
        summary[key] = chosen.metrics[key]
    figures = ("eot_asr", RETUNING_ASR, "max_anomaly_index", "untargeted_index", "backdoor_t")
    for name in present_keys(figures, chosen.metrics):
        summary[name] = chosen.metrics[name]
    tampered_scan = result.scans.get(TAMPERED)
    if tampered_scan is not None:
        summary["tampered_flagged_classes"] = list(tampered_scan.flagged_classes)
        summary["tampered_backdoor_found"] = tampered_scan.backdoor_found
        uncertainty = scan_uncertainty(tampered_scan, scan_config, dataset)
        summary.update({f"tampered_{k}": v for k, v in uncertainty.items()})
    if result.precautions:
        summary["precaution_classes"] = list(result.precautions)
    if result.near_beside_flipper:
        summary["near_classes_not_unlearnt"] = list(result.near_beside_flipper)
    if result.requested:
        summary["classes_unlearnt_on_request"] = list(result.requested)
    repaired_scan = result.scans[chosen.name]
    summary["repaired_flagged_classes"] = list(repaired_scan.flagged_classes)
    summary["repaired_backdoor_found"] = repaired_scan.backdoor_found
    if repaired_scan.natural_classes:
        summary["repaired_natural_classes"] = list(repaired_scan.natural_classes)
    for row in result.table:
        summary.update(row_summary(row, key))
    summary.update({f"seconds_{step}": value for step, value in result.timings.items()})
    return summary


def write_repair_outputs(
    run: RunDir,
    result: RepairResult,
    key: str | None,
    sweep_rows: list[dict[str, float]],
    spec,
    attack: dict[str, Any] | None,
    model_paths: Sequence[str | Path],
    prepared: PreparedData,
) -> None:
    """The repaired model, the curve, the tables, the scans and the figures of a repair."""
    data = prepared.config
    save_model(
        run.file(REPAIRED),
        result.chosen_model,
        spec,
        dataset=data.dataset,
        class_names=prepared.info.class_names,
        attack=attack,
        metrics=result.chosen.metrics,
        extra={
            "repair": {
                "method": result.chosen.name,
                "rule": result.choice_rule,
                "t": result.chosen_t,
                "sources": [str(p) for p in model_paths],
            }
        },
    )
    if result.curve is not None:
        save_curve(
            run.file("curve.safetensors"),
            result.curve,
            spec,
            data.dataset,
            {  # path-eval redraws the same bonafide split from this and measures the attack
                "endpoints": [str(p) for p in model_paths],
                "endpoint_attacks": [attack, attack],
                "data": data.to_dict(),
                "train_split": "bonafide",
            },
        )
        write_table(run.file("path.csv"), result.rows)
    table = result.table
    write_table(
        run.file("comparison.csv"),
        [{"model": c.name, **c.metrics, "detail": c.detail} for c in table],
    )
    atomic_write_text(run.file("comparison.md"), comparison_markdown(table, key))
    for name, scan in result.scans.items():
        sub = RunDir(run.path / "scans" / slug(name), force=True)
        write_scan_outputs(sub, scan, None)
        sub.write_summary({"model": name, "verdict": scan.verdict(), **scan.summary()})
    if result.noisy_rows:
        write_table(run.file("noisy.csv"), result.noisy_rows)
    if sweep_rows:
        write_table(run.file("sweep.csv"), sweep_rows)
    if result.depth:
        write_table(run.file("depth.csv"), depth_rows(result))
    plot_repair(run.path, result, key, sweep_rows)


def depth_rows(result: RepairResult) -> list[dict[str, Any]]:
    """``depth.csv``: every row's backdoor-connected path, one line per (model, t)."""
    return [{"model": name, **row} for name, rows in result.depth.items() for row in rows]


def load_clean_reference(
    path: str | Path | None,
    tampered: Checkpoint,
    prepared: PreparedData,
    device,
    foreign: ForeignArchitecture | None = None,
) -> Checkpoint | None:
    """The user's clean model (None: not given), checked to be the tampered model's architecture
    before anything is written; weights without a sidecar are read through ``foreign``."""
    if path is None:
        return None
    info = prepared.info
    clean = load_model(path, device=device, foreign=foreign, data=info, dataset=info.name)
    if clean.spec.to_dict() != tampered.spec.to_dict():
        raise ModeconnError(
            f"the clean reference {path} ({clean.spec.arch}) is not the tampered model's "
            f"architecture ({tampered.spec.arch})"
        )
    return clean


def requested_attack(
    attack: dict[str, Any] | None, poisoned_test: str | Path | None, target: int | None
) -> dict[str, Any] | None:
    """The attack spec the caller asked for: ``attack``, or the poisoned-test spec of the folder
    ``poisoned_test`` and ``target`` (which go together); None leaves it to the sidecar."""
    if poisoned_test is None and target is None:
        return attack
    if poisoned_test is None or target is None:
        raise InvalidArgument(
            ("poisoned_test", "target"),
            "poisoned_test and target go together: the folder of triggered test images and "
            "the class the trigger sends them to",
        )
    if attack is not None:
        raise InvalidArgument(("attack", "poisoned_test"), "give attack or poisoned_test, not both")
    return PoisonedTestSpec.for_folder(poisoned_test, target).to_dict()


def triggered_note(spec: PoisonedTestSpec, images: TriggeredImages) -> str:
    """The summary's ``attack_note`` for an ASR measured on the user's triggered images."""
    counted = len(images) if images.labels is None else int((images.labels != spec.target).sum())
    return (
        f"ASR measured on {counted} triggered test images from {spec.path} (target class "
        f"{spec.target}); the retuning and EOT attacks need the trigger itself and were not run"
    )


def attack_under_test(
    attack: dict[str, Any] | None, info: DatasetInfo
) -> tuple[AttackUnderTest, str | None]:
    """The attack the repair is evaluated against, and the note on how its ASR was measured
    (None: on the test split with the known trigger, or not at all). A poisoned-test spec's
    images are read here — once for the repair and its sweep — and checked against the data set
    before anything is written."""
    if not attack or attack.get("type") != POISONED_TEST:
        return AttackUnderTest.parse(attack), None
    spec = PoisonedTestSpec.from_dict(attack)
    images = read_triggered_folder(spec.path, info)
    spec.check_for(info, images)
    return AttackUnderTest.parse(attack, images), triggered_note(spec, images)


def repair_options(
    config: RepairConfig,
    data: DataConfig,
    attack: dict[str, Any] | None,
    device,
    clean_reference: str | Path | None,
) -> dict[str, Any]:
    """The settings of a repair as ``config.json`` records them (the clean reference only when
    given, so a run without one records what it did before)."""
    options = {
        "repair": config.to_dict(),
        "data": data.to_dict(),
        "attack": attack,
        "device": str(device),
    }
    if clean_reference is not None:
        options["clean_reference"] = str(clean_reference)
    return options


def run_repair(
    model_paths: Sequence[str | Path],
    out: str | Path,
    *,
    config: RepairConfig | None = None,
    data: DataConfig | None = None,
    attack: dict[str, Any] | None = None,
    poisoned_test: str | Path | None = None,
    target: int | None = None,
    foreign: ForeignArchitecture | None = None,
    clean_reference: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Repair one or two tampered models (see the module doc) into the run directory ``out``.

    Writes ``repaired.safetensors`` (+ sidecar: the chosen candidate), ``curve.safetensors`` and
    ``path.csv`` (when a path was trained), ``comparison.csv``/``.md``, ``depth.csv`` (every
    row's backdoor-connected path, when the trigger is known), ``scans/NAME/`` (every
    scan: verdict, table, trigger images), plots and ``summary.json``, which leads with whether
    the result could be verified without the trigger (:func:`verdict_summary`); returns it.
    ``attack`` overrides the sidecar's attack spec (evaluation only); ``poisoned_test`` (a folder
    of test images that carry the trigger, :mod:`modeconn.data.triggered`) with ``target``
    measures the ASR on those images instead, without the EOT and retuning attacks, which need
    the trigger itself. ``clean_reference`` (a checkpoint of the same architecture trained on
    clean data) adds its row, evaluated and attacked like the others: the retuning attack's
    figure to compare with. ``resume`` continues an interrupted repair in ``out`` (see
    :class:`Stages`); the result equals an uninterrupted run's.
    """
    config = config if config is not None else RepairConfig()
    check_registered(config)
    attack = requested_attack(attack, poisoned_test, target)
    dev = resolve_device(device)
    if resume and not force and run_status(out) == "finished":
        raise ModeconnError(f"{out} holds a finished repair; nothing to resume (force redoes it)")
    tampered, second, data, prepared = load_repair_inputs(
        model_paths, config, data, dev, foreign=foreign
    )
    prepared.indices("bonafide")  # an empty bonafide split is an error before anything is written
    config.unlearning.validate(prepared.info.num_classes)
    clean = load_clean_reference(clean_reference, tampered, prepared, dev, foreign)
    attack = attack if attack is not None else tampered.attack
    under_test, note = attack_under_test(attack, prepared.info)
    options = {
        "command": "repair",
        **foreign_record(foreign),
        "models": [str(p) for p in model_paths],
        **repair_options(config, data, attack, dev, clean_reference),
    }
    with open_run(out, options, force=force, resume=resume and not force) as run:
        stages = Stages(run)
        inputs = (tampered, second, prepared, config, under_test, dev)
        repair = Repair(*inputs, progress=progress, stages=stages, clean=clean)
        result = repair.run()
        sweep_rows: list[dict[str, float]] = []
        if config.sweep:
            started = time.perf_counter()
            sweep_rows = sweep_repairs(
                tampered, second, data, config, dev, progress, under_test, stages
            )
            result.timings["sweep"] = round(time.perf_counter() - started, 1)
        write_repair_outputs(
            run, result, repair.key, sweep_rows, tampered.spec, attack, model_paths, prepared
        )
        bonafide = len(prepared.indices("bonafide")) + len(prepared.indices("bonafide_holdout"))
        summary = repair_summary(
            result,
            repair.key,
            bonafide,
            attack_note=note,
            scan_config=config.scan,
            dataset=prepared.info.name,
        )
        # the repaired weights in the user's own key names, for their own class
        summary["network_weights"] = network_weights_path(Path(REPAIRED)).name
        stages.finish()
        run.finish(summary)
    return summary


__all__ = [
    "Stages",
    "attack_under_test",
    "depth_rows",
    "load_clean_reference",
    "repair_summary",
    "requested_attack",
    "row_summary",
    "run_repair",
    "summary_row",
    "triggered_note",
    "verdict_summary",
    "write_repair_outputs",
]
