"""The main job: the repair story end to end on the Fashion-MNIST default.

``modeconn demo`` trains two backdoored ``lenet``s (the injection scenario: a clean one, and
injects errors into it), repairs them on 2,500 bonafide samples, runs the baselines, writes the
HTML report and prints the comparison table. Scenarios: ``patch`` (the default: BadNets 3×3
patch, all-to-one, 10%), ``blend``, ``all-to-all`` and ``injection`` (fault sneaking on the
last linear layer).

Every step writes its own run directory below ``out``; a step whose directory already holds a
finished run is reused and an unfinished one is resumed at its last completed epoch, so an
interrupted demo continues where it stopped (``force`` redoes all).
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modeconn.attacks.backdoor import TriggerSpec
from modeconn.commands.attack import run_inject, run_poison
from modeconn.commands.repair import run_repair
from modeconn.commands.steps import run_step
from modeconn.commands.train import run_train
from modeconn.defenses.repair import Names, RepairConfig, slug
from modeconn.distributed import resolve_device
from modeconn.errors import InvalidArgument
from modeconn.experiment import DataConfig
from modeconn.io import atomic_write_text, write_json
from modeconn.progress import spinner
from modeconn.report.html import write_report
from modeconn.rundir import run_status
from modeconn.training import TrainConfig

SCENARIOS = ("patch", "blend", "all-to-all", "injection")

#: How each scenario is repaired. Backdoor scenarios use the default (``auto``: scan, unlearn,
#: connect, choose). The injection scenario is the paper's one-model set-up with the scan-free
#: path started on the straight line (A and A fine-tuned on bonafide data): injected errors are
#: not triggers, so a trigger scan has nothing to find, and the reference start keeps the whole
#: path in A's basin and so keeps its clean accuracy (see the README's results).
SCENARIO_METHOD = {
    "patch": ("auto", "random"),
    "blend": ("auto", "random"),
    "all-to-all": ("auto", "random"),
    "injection": ("path", "linear"),
}


#: Test images behind the demo's path tables (a stratified subset; candidates use all).
PATH_TEST_IMAGES = 2000

#: ANP's mask-optimisation rounds in the demo (the library default is 300).
ANP_STEPS = 100

#: FST's epochs in the demo (the library default is 20; the paper uses 10–20).
FST_EPOCHS = 10


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults fit in about 10 minutes on 2 CPU cores."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "lenet"
    epochs: int = 3
    bonafide: int = 2500
    repair_epochs: int | None = None  # None: the repair default of the scenario's method
    scan_steps: int | None = None  # None: 120
    scratch_epochs: int = 20
    baselines: bool = True
    sweep: tuple[int, ...] = ()
    seed: int = 0
    parallel_models: bool = True  # on CPU, train the two backdoored models side by side


def _parallel_on_cpu(device: str) -> bool:
    """Two CPU threads or more and no GPU in use: two models train faster side by side."""
    return resolve_device(device).type == "cpu" and torch.get_num_threads() >= 2


def _poison_job(path: Path, resume: bool, threads: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One backdoored model in a worker process with its share of the CPU threads."""
    torch.set_num_threads(threads)
    return run_poison(path, **kwargs, force=not resume, resume=resume, progress=False)


def _poison_in_parallel(
    jobs: Sequence[tuple[Path, dict[str, Any]]], force: bool, progress: bool
) -> None:
    """Train the scenario's two backdoored models in two processes, half the threads each.

    A lenet's training step on a batch of 128 is too small to keep two threads busy: one thread
    per model, side by side, trained a pair of Fashion-MNIST lenets (one epoch each, with their
    evaluation) in 71 s against 83 s one after the other on two threads. Each model still
    resumes an interrupted run."""
    threads = max(1, torch.get_num_threads() // len(jobs))
    context = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        if progress:
            names = " and ".join(p.name for p, _ in jobs)
            stack.enter_context(spinner(f"training {names} side by side"))
        pool = stack.enter_context(ProcessPoolExecutor(len(jobs), mp_context=context))
        futures = [
            pool.submit(_poison_job, path, not force and run_status(path) == "started", threads, k)
            for path, k in jobs
        ]
        for future in futures:
            future.result()


def trigger_for(scenario: str) -> TriggerSpec:
    if scenario == "patch":
        return TriggerSpec(type="patch", target=0, rate=0.1)
    if scenario == "blend":
        return TriggerSpec(type="blend", target=0, rate=0.1, alpha=0.2)
    if scenario == "all-to-all":
        return TriggerSpec(type="patch", target=0, rate=0.1, label_mode="all-to-all")
    raise InvalidArgument(None, f"unknown scenario '{scenario}' (use {', '.join(SCENARIOS)})")


def run_demo(
    out: str | Path,
    *,
    scenario: str = "patch",
    config: DemoConfig | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one scenario of the demo into ``out``; returns its summary (also in summary.json)."""
    if scenario not in SCENARIOS:
        raise InvalidArgument(None, f"unknown scenario '{scenario}' (use {', '.join(SCENARIOS)})")
    config = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = DataConfig(dataset=config.dataset, data_dir=config.data_dir, seed=config.seed)
    train_cfg = TrainConfig(epochs=config.epochs, batch_size=128, lr=0.05, seed=config.seed)

    def train_clean(path: Path, resume: bool) -> dict[str, Any]:
        return run_train(
            path,
            model=config.model,
            data=copy.deepcopy(data),
            config=copy.deepcopy(train_cfg),
            device=device,
            force=not resume,
            resume=resume,
            progress=progress,
        )

    tampered: list[Path] = []
    reference: dict[str, Any] = {}
    if scenario == "injection":  # the clean model is the one the errors are injected into
        reference["reference_clean_acc"] = run_step(out / "clean", force, train_clean)["clean_acc"]

        def inject(path: Path, resume: bool) -> dict[str, Any]:  # quick: redone, not resumed
            return run_inject(out / "clean", path, device=device, force=True, seed=config.seed)

        run_step(out / "injected", force, inject)
        tampered.append(out / "injected")
    else:
        spec = trigger_for(scenario)
        jobs = []
        for i, seed in enumerate((config.seed + 1, config.seed + 2)):
            cfg = copy.deepcopy(train_cfg)
            cfg.seed = seed
            kwargs = {
                "spec": spec,
                "model": config.model,
                "data": copy.deepcopy(data),
                "config": cfg,
                "device": device,
            }
            jobs.append((out / f"backdoor_{'ab'[i]}", kwargs))
            tampered.append(out / f"backdoor_{'ab'[i]}")
        pending = [(p, k) for p, k in jobs if force or run_status(p) != "finished"]
        if len(pending) == 2 and config.parallel_models and _parallel_on_cpu(device):
            _poison_in_parallel(pending, force, progress)
        else:
            for path, kwargs in jobs:
                run_step(
                    path,
                    force,
                    lambda p, resume, kwargs=kwargs: run_poison(
                        p, **kwargs, force=not resume, resume=resume, progress=progress
                    ),
                )

    method, init = SCENARIO_METHOD[scenario]
    repair_cfg = RepairConfig(
        bonafide=config.bonafide,
        baselines=config.baselines,
        sweep=tuple(config.sweep),
        method=method,
        init=init,
        seed=config.seed,
    )
    # The demo's time budget (10 minutes on 2 CPU cores): a shorter from-scratch baseline (the
    # README gives the 100-epoch figure too), three noise levels with one draw, 120 scan steps,
    # 100 ANP rounds (300 and 1,000 gave the same verdict on the patch model), 10 FST epochs,
    # the path table's test columns on 2,000 test images (every candidate, the chosen point
    # included, is still measured on all 10,000).
    repair_cfg.scratch_epochs = config.scratch_epochs
    repair_cfg.anp.steps = ANP_STEPS
    repair_cfg.fst.epochs = FST_EPOCHS
    repair_cfg.path_test_limit = PATH_TEST_IMAGES
    repair_cfg.noise_sigmas, repair_cfg.noise_draws = (0.1, 0.3, 0.6), 1
    repair_cfg.scan.steps = 120
    if config.scan_steps is not None:
        repair_cfg.scan.steps = config.scan_steps
    if config.repair_epochs is not None:
        repair_cfg.curve.epochs = repair_cfg.path_curve.epochs = config.repair_epochs
    repair = run_step(
        out / "repair",
        force,
        lambda path, resume: run_repair(
            [str(p) for p in tampered],
            path,
            config=repair_cfg,
            data=copy.deepcopy(data),
            device=device,
            force=not resume,
            resume=resume,
            progress=progress,
        ),
    )
    report = write_report(
        out / "repair", out / "report.html", title=f"modeconn demo: {scenario} on {config.dataset}"
    )
    summary = {
        "scenario": scenario,
        **reference,
        **repair,
        "report": str(report),
    }
    write_json(out / "summary.json", summary)
    return summary


#: The rows of the results table, in order: the tampered model, the repair's candidates and the
#: baselines, named as the repair names them (their summary keys come from the same names).
RESULT_ROWS = (
    Names.TAMPERED,
    Names.PATH_REPAIR,
    Names.UNLEARNING,
    Names.PATH,
    Names.TSC,
    Names.FINE_TUNING,
    Names.FROM_SCRATCH,
    Names.NOISY,
    Names.FINE_PRUNING,
    Names.FST,
    Names.ANP,
)


def results_table(summaries: Sequence[dict[str, Any]]) -> str:
    """The README's results table: every candidate of every scenario with its clean accuracy, its
    change against the tampered model (points), the attack's figure (ASR, or injection success),
    the ASR after the retuning attack, the scan's largest anomaly index and its untargeted index
    (the universal label flipper); the model the repair returned is in bold."""
    lines = [
        "| scenario | model | clean acc | Δ clean (points) | ASR / injection success "
        "| ASR after retuning | scan index | untargeted index | detail |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def cell(value: Any) -> str:
        return "—" if value is None else f"{value:.4f}"

    for s in summaries:
        key = "injection_success" if "injection_success" in s else "asr"
        base = s["tampered_clean_acc"]
        for name in RESULT_ROWS:
            prefix = slug(name)
            acc = s.get(f"{prefix}_clean_acc")
            if acc is None:
                continue
            chosen = name == s.get("method")
            label = f"**{name}** (returned)" if chosen else name
            delta = "" if name == Names.TAMPERED else f"{100 * (acc - base):+.1f}"
            detail = ""
            if name in (Names.PATH_REPAIR, Names.PATH) and "t" in s:
                detail = f"t = {s['t']:.2f}"
                if s.get(f"{prefix}_eot_asr") is not None:
                    detail += f"; adaptive EOT attack ASR {s[f'{prefix}_eot_asr']:.4f}"
            lines.append(
                f"| {s['scenario']} | {label} | {acc:.4f} | {delta} | "
                f"{cell(s.get(f'{prefix}_{key}'))} | {cell(s.get(f'{prefix}_retuning_asr'))} | "
                f"{cell(s.get(f'{prefix}_max_anomaly_index'))} | "
                f"{cell(s.get(f'{prefix}_untargeted_index'))} | {detail} |"
            )
    return "\n".join(lines) + "\n"


def run_demos(out: str | Path, scenarios: Sequence[str], **kwargs: Any) -> list[dict[str, Any]]:
    """Run several scenarios into ``out/SCENARIO`` and write ``out/results.md``."""
    out = Path(out)
    summaries = [run_demo(out / s, scenario=s, **kwargs) for s in scenarios]
    atomic_write_text(out / "results.md", results_table(summaries))
    return summaries
