"""Python API behind ``modeconn poison``, ``modeconn inject`` and ``modeconn attack``.

Each function takes plain options, writes a run directory (config.json, the model if it makes
one, summary.json) and returns the summary it wrote; the CLI only parses arguments and calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from modeconn.attacks.backdoor import TriggerSpec, backdoor_metrics, poison_transform
from modeconn.attacks.config import AttackConfig
from modeconn.attacks.injection import InjectionSpec, choose_injection_sets, inject_errors
from modeconn.attacks.metrics import robust_metrics
from modeconn.checkpoints import (
    Checkpoint,
    foreign_record,
    load_model_and_data,
    save_model,
    sidecar_path,
)
from modeconn.commands.train import ClassifierTraining, test_metrics
from modeconn.data import make_eval_loader
from modeconn.data.prepare import DataConfig, PreparedData
from modeconn.distributed import resolve_device
from modeconn.errors import InvalidArgument
from modeconn.io import read_json, write_json
from modeconn.models.foreign import ForeignArchitecture
from modeconn.rundir import RunDir, open_optional_run, open_run
from modeconn.training import TrainConfig, evaluate_model


def _add_to_sidecar_metrics(weights: Path, values: dict[str, Any]) -> None:
    """Record attack figures next to the training metrics in a checkpoint's sidecar."""
    side = sidecar_path(weights)
    meta = read_json(side)
    meta["metrics"] = {**meta.get("metrics", {}), **values}
    write_json(side, meta)


def run_poison(
    out: str | Path,
    *,
    spec: TriggerSpec,
    model: str = "lenet",
    model_kwargs: dict[str, Any] | None = None,
    data: DataConfig | None = None,
    config: TrainConfig | None = None,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a backdoored classifier into ``out``; return its summary.

    This is :func:`modeconn.api.run_train` with a poisoning transform: a fixed seeded
    subset of ``spec.rate`` × the training split carries the trigger and the attacker's label. The
    trigger spec goes into the checkpoint sidecar (``attack``), and the summary adds ``asr`` and
    ``poisoned_acc`` on the test split to ``clean_acc``/``clean_loss``.
    """
    job = ClassifierTraining.prepare(
        model=model,
        model_kwargs=model_kwargs,
        data=data,
        config=config,
        attack=spec.to_dict(),
        device=device,
    )
    info = job.prepared.info
    spec.check_for(info.num_classes, info.image_size)
    job.transform = poison_transform(spec, info.num_classes, pool=job.prepared.indices("train"))
    poisoned = int(job.transform.poisoned.numel())
    options = job.options({"command": "poison", "poisoned_samples": poisoned})
    with open_run(out, options, force=force, resume=resume, dist_ctx=job.ctx) as run:
        net = job.fit(run, progress)
        summary: dict[str, Any] = {}
        if job.ctx.is_main:
            summary = job.final_summary(net, run)
            test = job.prepared.eval_loader("test", device=job.dev)
            figures = backdoor_metrics(net, test, spec, job.dev)
            summary.update(figures, poisoned_samples=poisoned)
            _add_to_sidecar_metrics(run.file("model.safetensors"), figures)
        run.finish(summary)
    return summary


def _load_with_data(
    model_path: str | Path,
    dev,
    *,
    dataset: str | None,
    data_dir: str | None,
    test_limit: int | None,
    train_limit: int | None,
    seed: int,
    foreign: ForeignArchitecture | None,
):
    """A checkpoint and the prepared data set it runs on (its sidecar's, unless one is named);
    ``foreign`` reads weights without a sidecar."""
    data = DataConfig(
        dataset=dataset,
        data_dir=data_dir,
        train_limit=train_limit,
        test_limit=test_limit,
        augment=False,
        seed=seed,
    )
    return load_model_and_data(model_path, data, device=dev, foreign=foreign)


def _test_accuracies(model, data, spec: InjectionSpec, device) -> dict[str, float]:
    """Clean loss/accuracy on the test split, and the accuracy on its images other than S.

    S are test images, so flipping them moves ``clean_acc`` by |S| / |test| by itself (1.1
    points for 4 of the 360 digits); ``others_acc`` isolates the collateral damage.
    """
    figures = test_metrics(model, data, device)
    indices = data.indices("test")
    others = indices[~torch.isin(indices, torch.as_tensor(spec.targets, dtype=torch.long))]
    images, labels = data.tensors("test")
    loader = make_eval_loader(images, labels, others, device=device)
    figures["others_acc"] = evaluate_model(model, loader, device)["acc"]
    return figures


def _injection_spec(
    model, data, device, *, sets: dict[str, Any], settings: dict[str, Any], overrides: dict
) -> InjectionSpec:
    """S and R chosen on the test and training splits (``sets``: how many, which, which
    labels), with the injection's ``settings`` and the ``overrides`` that are not None (the
    others keep :class:`InjectionSpec`'s defaults)."""
    chosen, injected, keep = choose_injection_sets(
        model, data, **sets, seed=settings["seed"], device=device
    )
    return InjectionSpec(
        targets=chosen,
        labels=injected,
        keep=keep,
        **settings,
        **{k: v for k, v in overrides.items() if v is not None},
    )


def _inject_and_measure(model, data, spec: InjectionSpec, device) -> dict[str, Any]:
    """Inject the errors into ``model`` in place; the summary's figures before and after."""
    before = _test_accuracies(model, data, spec, device)
    figures = inject_errors(model, data, spec, device)
    after = _test_accuracies(model, data, spec, device)
    return {
        "injection_success": figures["injection_success"],
        "clean_loss": after["clean_loss"],
        "clean_acc": after["clean_acc"],
        "clean_acc_before": before["clean_acc"],
        "others_acc": after["others_acc"],
        "others_acc_before": before["others_acc"],
        "keep_acc": figures["keep_acc"],
        "changed_weights": figures["changed_weights"],
        "change_l2": figures["change_l2"],
        "change_linf": figures["change_linf"],
        "steps": figures["steps"],
        "param": spec.param,
    }


def _save_injected(
    run: RunDir, ckpt: Checkpoint, data: PreparedData, spec: InjectionSpec, summary: dict[str, Any]
) -> None:
    """The injected model as ``model.safetensors``, its sidecar with the spec, the figures and
    the data set's class names."""
    save_model(
        run.file("model.safetensors"),
        ckpt.model,
        ckpt.spec,
        dataset=data.config.dataset,
        attack=spec.to_dict(),
        metrics={k: v for k, v in summary.items() if k != "param"},
        class_names=data.info.class_names,
    )


def run_inject(
    model_path: str | Path,
    out: str | Path,
    *,
    num_targets: int = 4,
    num_keep: int = 1000,
    targets: list[int] | None = None,
    labels: list[int] | None = None,
    label_mode: str = "next",
    param: str | None = None,
    norm: str = "l2",
    budget: float | None = None,
    penalty: float | None = None,
    target_weight: float | None = None,
    margin: float | None = None,
    steps: int | None = None,
    lr: float | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    test_limit: int | None = None,
    train_limit: int | None = None,
    seed: int = 0,
    device: str = "auto",
    force: bool = False,
    foreign: ForeignArchitecture | None = None,
) -> dict[str, Any]:
    """Inject errors into the model at ``model_path`` by fault sneaking; write it to ``out``.

    S (``num_targets`` correctly classified test images, or ``targets``) are sent to wrong labels
    (``labels``, or by ``label_mode``) while R (``num_keep`` correctly classified training images)
    keep theirs, by changing the one tensor ``param`` (default: the last linear layer's weight).
    Options left at None take :class:`InjectionSpec`'s defaults. The injected model's sidecar
    records the spec; the summary holds ``injection_success``, ``clean_acc`` (and the clean model's
    ``clean_acc_before``), ``others_acc`` (test images other than S, before: ``others_acc_before``),
    ``keep_acc`` (on R), ``changed_weights``, ``change_l2`` and ``change_linf``. ``foreign``
    reads weights without a sidecar."""
    dev = resolve_device(device)
    ckpt, data, prepared = _load_with_data(
        model_path,
        dev,
        dataset=dataset,
        data_dir=data_dir,
        test_limit=test_limit,
        train_limit=train_limit,
        seed=seed,
        foreign=foreign,
    )
    overrides = dict(
        penalty=penalty, target_weight=target_weight, margin=margin, steps=steps, lr=lr
    )
    spec = _injection_spec(
        ckpt.model,
        prepared,
        dev,
        sets=dict(
            num_targets=num_targets,
            num_keep=num_keep,
            label_mode=label_mode,
            targets=targets,
            labels=labels,
        ),
        settings=dict(param=param, norm=norm, budget=budget, seed=seed),
        overrides=overrides,
    )
    options = {
        "command": "inject",
        "model_path": str(model_path),
        "data": data.to_dict(),
        "label_mode": label_mode,
        "num_targets": num_targets,
        "num_keep": num_keep,
        "device": str(dev),
        "attack": spec.to_dict(),
        **foreign_record(foreign),
    }
    with open_run(out, options, force=force) as run:
        summary = _inject_and_measure(ckpt.model, prepared, spec, dev)
        _save_injected(run, ckpt, prepared, spec, summary)
        run.finish(summary)
    return summary


def run_attack(
    model_path: str | Path,
    out: str | Path | None = None,
    *,
    attack: AttackConfig | Mapping[str, Any] | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    test_limit: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "auto",
    force: bool = False,
    foreign: ForeignArchitecture | None = None,
) -> dict[str, Any]:
    """Robust accuracy and loss of a saved model under an evasion attack on its test split.

    ``attack`` is an :class:`~modeconn.attacks.config.AttackConfig` used as it is, or a mapping
    of some of its settings whose missing (or None) ``eps``, ``alpha`` and ``steps`` take the
    usual values for the model's data set (:meth:`AttackConfig.for_dataset`: e.g. 0.1 under L∞
    on Fashion-MNIST, 8/255 on CIFAR; ``alpha`` = ``eps``/4; steps by attack). The summary holds
    ``robust_acc``, ``robust_loss``, ``clean_acc`` and ``clean_loss``; with ``out`` it is written
    there, and the attack's settings in config.json (``attack``). ``foreign`` reads weights
    without a sidecar.
    """
    if batch_size < 1:
        raise InvalidArgument("batch_size", f"batch_size must be at least 1, got {batch_size}")
    if attack is not None and not isinstance(attack, AttackConfig | Mapping):
        raise InvalidArgument("attack", "attack must be an AttackConfig or a mapping of settings")
    dev = resolve_device(device)
    ckpt, data, prepared = _load_with_data(
        model_path,
        dev,
        dataset=dataset,
        data_dir=data_dir,
        test_limit=test_limit,
        train_limit=None,
        seed=seed,
        foreign=foreign,
    )
    if not isinstance(attack, AttackConfig):
        settings = {k: v for k, v in (attack or {}).items() if v is not None}
        settings.setdefault("seed", seed)
        attack = AttackConfig.for_dataset(data.dataset, **settings)
    attack.validate()
    options = {
        "command": "attack",
        "model_path": str(model_path),
        "data": data.to_dict(),
        "batch_size": batch_size,
        "device": str(dev),
        "attack": attack.to_dict(),
        **foreign_record(foreign),
    }
    with open_optional_run(out, options, force=force) as run:
        loader = prepared.eval_loader("test", batch_size=batch_size, device=dev)
        summary = {
            **robust_metrics(ckpt.model, loader, attack, device=dev),
            **test_metrics(ckpt.model, prepared, dev),
        }
        if run is not None:
            run.finish(summary)
    return summary


__all__ = ["run_attack", "run_inject", "run_poison"]
