"""``path-eval`` with every metric the run calls for.

The connectivity package evaluates a path with whatever :class:`PathMetric` objects it is given;
this module decides which: the attack success of the endpoints' attacks (read from the curve's
sidecar: ASR for a backdoor, injection success for injected errors), and with ``robust`` the
robust loss and accuracy under PGD against φ(t) itself plus the input-Hessian λ_max — the
robust-loss barrier of Zhao et al. (2020, §5), with the Pearson correlation of the two and a
figure in the style of the paper.

Given two model checkpoints instead of a curve, the straight segment between them is saved as a
two-point polygonal chain and evaluated the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeconn.attacks.config import AttackConfig
from modeconn.attacks.metrics import RobustMetric, metric_from_attack_spec
from modeconn.checkpoints import load_model, read_sidecar
from modeconn.commands.path_eval import PathEvaluation
from modeconn.connectivity import PathMetric, save_curve, segment
from modeconn.connectivity.checkpoints import (
    check_same_architecture,
    endpoint_meta,
    resolve_family_path,
)
from modeconn.errors import ModeconnError
from modeconn.io import read_table
from modeconn.landscape.metrics import InputHessianMetric, robust_path_summary
from modeconn.report.landscape_plots import plot_robust_path
from modeconn.rundir import check_run_dir, open_run


def attack_metrics(meta: dict[str, Any]) -> list[PathMetric]:
    """One metric per distinct attack recorded for the path's endpoints."""
    seen: list[dict[str, Any]] = []
    for attack in meta.get("endpoint_attacks") or []:
        if attack and attack not in seen:
            seen.append(attack)
    metrics = [metric_from_attack_spec(a) for a in seen]
    names = [m.name for m in metrics if m is not None]
    if len(set(names)) != len(names):
        raise ModeconnError(
            "the endpoints carry different attacks of one kind; evaluate them "
            "separately with with_attack_metrics=False and your own metrics",
            parameters=("with_attack_metrics",),
        )
    return [m for m in metrics if m is not None]


def save_segment(model_a: str | Path, model_b: str | Path, out_dir: Path) -> Path:
    """The straight segment between two models as a curve checkpoint in ``out_dir``."""
    a, b = load_model(model_a), load_model(model_b)
    spec = check_same_architecture([a, b], [str(model_a), str(model_b)])
    seg = segment(a.model, a.model.state_dict(), b.model.state_dict())
    meta = {**endpoint_meta([a, b]), "train_split": "train"}
    return save_curve(out_dir / "segment_curve.safetensors", seg, spec, a.dataset, meta)


def run_path_analysis(
    sources: list[str | Path],
    out: str | Path,
    *,
    robust: bool = False,
    attack: AttackConfig | None = None,
    robust_limit: int | None = 1000,
    hessian_limit: int | None = 256,
    hessian_iters: int = 50,
    with_attack_metrics: bool = True,
    force: bool = False,
    **path_eval: Any,
) -> dict[str, Any]:
    """Evaluate a curve (one source) or the segment between two models (two sources)."""
    out = Path(out)
    if len(sources) not in (1, 2):
        raise ModeconnError("path-eval takes a curve, or two models for the straight segment")
    if len(sources) == 2:
        check_run_dir(out, force=force)  # before the segment is written beside it
        tmp = out.parent / f".{out.name}.segment"
        tmp.mkdir(parents=True, exist_ok=True)
        curve_path = save_segment(sources[0], sources[1], tmp)
        path_eval.setdefault("with_segment", False)
    else:
        curve_path = resolve_family_path(sources[0])
    meta = read_sidecar(curve_path)
    metrics: list[PathMetric] = attack_metrics(meta) if with_attack_metrics else []
    if robust:
        metrics += [
            RobustMetric(attack, limit=robust_limit),
            InputHessianMetric(limit=hessian_limit, iters=hessian_iters),
        ]
    evaluation = PathEvaluation.load(curve_path, metrics=metrics, **path_eval)
    config = {
        **evaluation.config,
        "sources": [str(s) for s in sources],
        "robust": robust,
        "attack": (attack or AttackConfig()).to_dict() if robust else None,
    }
    with open_run(out, config, force=force) as run:
        summary = evaluation.write(run)
        if len(sources) == 2:  # keep the segment checkpoint with its evaluation
            final = run.file("segment_curve.safetensors")
            curve_path.replace(final)
            curve_path.with_suffix(".json").replace(final.with_suffix(".json"))
            curve_path.parent.rmdir()
        if robust:
            rows = read_table(run.file("path.csv"))
            extra = robust_path_summary(rows)
            pcc = extra.get("pcc_robust_loss_lmax")
            plot_robust_path(run.file("robust_path.png"), rows, pcc=pcc)
            summary.update(extra)
        run.finish(summary)
    return summary
