"""Python API behind ``modeconn train`` and ``modeconn evaluate``.

Each function takes plain options, writes a run directory, and returns the summary it wrote, so
the CLI is a thin layer of argument parsing on top.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.checkpoints import load_model, save_model
from modeconn.defenses.adversarial import AdversarialConfig, RobustEvaluation
from modeconn.distributed import DistContext, init_distributed, resolve_device
from modeconn.errors import ModeconnError
from modeconn.experiment import (
    DataConfig,
    PreparedData,
    check_compatible,
    model_spec_for,
    prepare_data,
)
from modeconn.models import ModelSpec, build_model, check_model_kwargs
from modeconn.rundir import RunDir
from modeconn.training import Objective, TrainConfig, evaluate_model, train


def test_metrics(model: nn.Module, data: PreparedData, device: torch.device) -> dict[str, float]:
    """Clean loss and accuracy on the test split, under the summary's key names."""
    res = evaluate_model(model, data.eval_loader("test", device=device), device)
    return {"clean_loss": res["loss"], "clean_acc": res["acc"]}


def epoch_evaluator(
    data: PreparedData, device: torch.device, robust: RobustEvaluation | None = None
):
    """Per-epoch held-out figures: test (and validation when there is a validation split), and
    with ``robust`` the test split's ``robust_acc``/``robust_loss`` (robust overfitting shows
    only epoch by epoch)."""
    has_val = data.split_sizes()["val"] > 0

    def evaluate(model: nn.Module) -> dict[str, float]:
        res = evaluate_model(model, data.eval_loader("test", device=device), device)
        out = {"test_loss": res["loss"], "test_acc": res["acc"]}
        if has_val:
            val = evaluate_model(model, data.eval_loader("val", device=device), device)
            out.update(val_loss=val["loss"], val_acc=val["acc"])
        if robust is not None:
            out.update(robust(model, data, device))
        return out

    return evaluate


def run_train(
    out: str | Path,
    *,
    model: str = "lenet",
    model_kwargs: dict[str, Any] | None = None,
    data: DataConfig | None = None,
    config: TrainConfig | None = None,
    objective: Objective | None = None,
    adversarial: AdversarialConfig | None = None,
    robust: RobustEvaluation | None = None,
    attack: dict[str, Any] | None = None,
    transform=None,
    extra_config: dict[str, Any] | None = None,
    robust_each_epoch: bool = False,
    data_seed: int | None = None,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a classifier from scratch into run directory ``out``; return its summary.

    ``objective`` swaps the per-batch loss; ``adversarial`` is the shorthand for adversarial
    training (PGD-AT or TRADES, optionally with AWP) and implies ``robust``, the PGD evaluation
    whose ``robust_acc`` and ``robust_loss`` join the summary (by default with the training
    attack). ``transform`` rewrites training batches (backdoor poisoning) and ``attack`` is recorded
    in the checkpoint's sidecar. With ``robust_each_epoch`` the robust figures are measured
    after every epoch too (``metrics.jsonl``), not only at the end. The data split and subset
    are drawn with ``config.seed`` unless ``data_seed`` pins them (models of different seeds
    that must share one split, such as the corners of a surface with a held-out slice). Under
    ``torchrun`` this trains with DistributedDataParallel.
    """
    data = data or DataConfig()
    config = config or TrainConfig()
    config.validate()
    check_model_kwargs(model, model_kwargs)
    if adversarial is not None:
        if objective is not None:
            raise ModeconnError("give either an objective or adversarial settings, not both")
        objective = adversarial.objective()
        robust = robust or RobustEvaluation(attack=adversarial.attack)
    if robust is not None:
        robust.validate()
    # The split follows the training seed unless the caller pins it; the caller's object is
    # left as it was (it may be shared by several steps).
    data = replace(data, seed=config.seed if data_seed is None else data_seed)
    # The data (a missing or unknown data set) is checked before the run directory is touched.
    prepared = prepare_data(data)
    spec = model_spec_for(model, prepared.info, model_kwargs)
    ctx, dev = init_distributed(device, os.environ.get("MODECONN_INIT_METHOD"))
    # Only the main process checks and clears the directory; the others attach to it afterwards.
    run = RunDir(out, force=force, resume=resume) if ctx.is_main else None
    ctx.barrier()
    if run is None:
        run = RunDir.attach(out, resuming=resume and (Path(out) / "state").exists())
    options = {
        "command": "train",
        "model": model,
        "model_kwargs": model_kwargs or {},
        "data": data.to_dict(),
        "train": config.to_dict(),
        "device": str(dev),
        "world_size": ctx.world_size,
        "attack": attack,
        "adversarial": adversarial.to_dict() if adversarial is not None else None,
        "robust_eval": robust.to_dict() if robust is not None else None,
        **({"robust_each_epoch": True} if robust_each_epoch else {}),
        **(extra_config or {}),
    }
    if ctx.is_main:
        run.write_config(options)
    torch.manual_seed(config.seed)
    net = build_model(spec).to(dev)

    def checkpoint(m: nn.Module, epoch: int, record: dict[str, float]) -> None:
        save_model(
            run.file("model.safetensors"),
            m,
            spec,
            dataset=data.dataset,
            attack=attack,
            metrics={**record, "epoch": epoch},
        )

    train(
        net,
        prepared.train_loader(config.batch_size, transform=transform, device=dev, dist_ctx=ctx),
        config,
        objective=objective,
        run=run,
        evaluate=epoch_evaluator(prepared, dev, robust if robust_each_epoch else None),
        on_epoch_end=checkpoint,
        device=dev,
        dist_ctx=ctx,
        progress=progress,
        description=f"train {model}",
    )
    summary: dict[str, Any] = {}
    if ctx.is_main:
        summary = test_metrics(net, prepared, dev)
        if robust is not None:
            summary.update(robust(net, prepared, dev))
        summary["epochs"] = config.epochs
        save_model(
            run.file("model.safetensors"),
            net,
            spec,
            dataset=data.dataset,
            attack=attack,
            metrics=summary,
        )
        run.write_summary(summary)
        run.clear_state()
    ctx.barrier()
    return summary


def run_evaluate(
    model_path: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    test_limit: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Clean loss and accuracy of a saved model on the test split of its (or the given) data set."""
    dev = resolve_device(device)
    ckpt = load_model(model_path, device=dev)
    data = DataConfig(
        dataset=dataset or ckpt.dataset or "fashion-mnist",
        data_dir=data_dir,
        test_limit=test_limit,
        seed=seed,
    )
    run = RunDir(out, force=force) if out is not None else None
    prepared = prepare_data(data)
    check_compatible(ckpt.spec, prepared, str(model_path))
    summary = test_metrics(ckpt.model, prepared, dev)
    if run is not None:
        run.write_config(
            {
                "command": "evaluate",
                "model_path": str(model_path),
                "data": data.to_dict(),
                "device": str(dev),
            }
        )
        run.write_summary(summary)
    return summary


__all__ = ["DistContext", "ModelSpec", "run_evaluate", "run_train", "test_metrics"]
