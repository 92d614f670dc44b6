"""Python API behind ``modeconn train`` and ``modeconn evaluate``.

Each function takes plain options, writes a run directory, and returns the summary it wrote, so
the CLI is a thin layer of argument parsing on top.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeconn.checkpoints import foreign_record, load_model_and_data, save_model
from modeconn.data.prepare import DataConfig, PreparedData, prepare_data
from modeconn.defenses.adversarial import AdversarialConfig, RobustEvaluation
from modeconn.distributed import DistContext, init_distributed, resolve_device
from modeconn.errors import ModeconnError
from modeconn.models import ModelSpec, build_model, check_model_kwargs
from modeconn.models.foreign import ForeignArchitecture
from modeconn.models.sizing import model_spec_for
from modeconn.rundir import RunDir, open_optional_run, open_run
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


@dataclass
class ClassifierTraining:
    """A classifier's training from scratch, checked and set up before its run directory is
    touched: the options, the data (split drawn with ``data.seed``), the model spec and the
    (distributed) device. :func:`run_train` and :func:`~modeconn.commands.attack.run_poison`
    run it inside their run directories."""

    model: str
    model_kwargs: dict[str, Any] | None
    data: DataConfig
    config: TrainConfig
    objective: Objective | None
    adversarial: AdversarialConfig | None
    robust: RobustEvaluation | None
    robust_each_epoch: bool
    attack: dict[str, Any] | None
    transform: Any
    prepared: PreparedData
    spec: ModelSpec
    ctx: DistContext
    dev: torch.device

    @classmethod
    def prepare(
        cls,
        *,
        model: str = "lenet",
        model_kwargs: dict[str, Any] | None = None,
        data: DataConfig | None = None,
        config: TrainConfig | None = None,
        objective: Objective | None = None,
        adversarial: AdversarialConfig | None = None,
        robust: RobustEvaluation | None = None,
        robust_each_epoch: bool = False,
        attack: dict[str, Any] | None = None,
        transform=None,
        data_seed: int | None = None,
        device: str = "auto",
    ) -> ClassifierTraining:
        """Check the options and prepare the data (see :func:`run_train` for what they mean)."""
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
        return cls(
            model,
            model_kwargs,
            data,
            config,
            objective,
            adversarial,
            robust,
            robust_each_epoch,
            attack,
            transform,
            prepared,
            spec,
            ctx,
            dev,
        )

    def options(self, extra_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything ``config.json`` records about the training, ``extra_config`` last."""
        return {
            "command": "train",
            "model": self.model,
            "model_kwargs": self.model_kwargs or {},
            "data": self.data.to_dict(),
            "train": self.config.to_dict(),
            "device": str(self.dev),
            "world_size": self.ctx.world_size,
            "attack": self.attack,
            "adversarial": self.adversarial.to_dict() if self.adversarial is not None else None,
            "robust_eval": self.robust.to_dict() if self.robust is not None else None,
            **({"robust_each_epoch": True} if self.robust_each_epoch else {}),
            **(extra_config or {}),
        }

    def fit(self, run: RunDir, progress: bool) -> nn.Module:
        """Train in the one loop, writing the checkpoint after every epoch; return the model."""
        torch.manual_seed(self.config.seed)
        net = build_model(self.spec).to(self.dev)

        def checkpoint(m: nn.Module, epoch: int, record: dict[str, float]) -> None:
            self.save(run, m, {**record, "epoch": epoch})

        per_epoch_robust = self.robust if self.robust_each_epoch else None
        train(
            net,
            self.prepared.train_loader(
                self.config.batch_size, transform=self.transform, device=self.dev, dist_ctx=self.ctx
            ),
            self.config,
            objective=self.objective,
            run=run,
            evaluate=epoch_evaluator(self.prepared, self.dev, per_epoch_robust),
            on_epoch_end=checkpoint,
            device=self.dev,
            dist_ctx=self.ctx,
            progress=progress,
            description=f"train {self.model}",
        )
        return net

    def final_summary(self, net: nn.Module, run: RunDir) -> dict[str, Any]:
        """The trained model's test (and robust) figures; the checkpoint is saved with them."""
        summary = test_metrics(net, self.prepared, self.dev)
        if self.robust is not None:
            summary.update(self.robust(net, self.prepared, self.dev))
        summary["epochs"] = self.config.epochs
        self.save(run, net, summary)
        return summary

    def save(self, run: RunDir, net: nn.Module, metrics: dict[str, Any]) -> None:
        save_model(
            run.file("model.safetensors"),
            net,
            self.spec,
            dataset=self.data.dataset,
            attack=self.attack,
            metrics=metrics,
            class_names=self.prepared.info.class_names,
        )


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
    job = ClassifierTraining.prepare(
        model=model,
        model_kwargs=model_kwargs,
        data=data,
        config=config,
        objective=objective,
        adversarial=adversarial,
        robust=robust,
        robust_each_epoch=robust_each_epoch,
        attack=attack,
        transform=transform,
        data_seed=data_seed,
        device=device,
    )
    options = job.options(extra_config)
    with open_run(out, options, force=force, resume=resume, dist_ctx=job.ctx) as run:
        net = job.fit(run, progress)
        summary = job.final_summary(net, run) if job.ctx.is_main else {}
        run.finish(summary)
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
    foreign: ForeignArchitecture | None = None,
) -> dict[str, Any]:
    """Clean loss and accuracy of a saved model on the test split of its (or the given) data set.
    ``foreign`` reads weights without a sidecar."""
    dev = resolve_device(device)
    ckpt, data, prepared = load_model_and_data(
        model_path,
        DataConfig(dataset=dataset, data_dir=data_dir, test_limit=test_limit, seed=seed),
        device=dev,
        foreign=foreign,
    )
    options = {
        "command": "evaluate",
        "model_path": str(model_path),
        "data": data.to_dict(),
        "device": str(dev),
        **foreign_record(foreign),
    }
    with open_optional_run(out, options, force=force) as run:
        summary = test_metrics(ckpt.model, prepared, dev)
        if run is not None:
            run.finish(summary)
    return summary


__all__ = [
    "ClassifierTraining",
    "DistContext",
    "ModelSpec",
    "run_evaluate",
    "run_train",
    "test_metrics",
]
