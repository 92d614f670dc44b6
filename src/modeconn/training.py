"""The one training loop.

Plain training, adversarial training (PGD-AT, TRADES), AWP and curve/surface training all run
through :func:`train`; what differs between them is an :class:`Objective` — the loss of one
mini-batch plus optional hooks around the optimiser step. The loop owns everything else: the
learning-rate schedule, progress, per-epoch metrics, atomic checkpoints of the resumable state,
DistributedDataParallel, and exact resumption.

Exact resumption: the global RNG is re-seeded at the start of every epoch from ``(seed, epoch)``
and the loaders' order and augmentation are pure functions of ``(seed, epoch)``, so an interrupted
run continued from its last epoch ends with the same weights as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.checkpoints import write_tensors
from modeconn.distributed import DistContext, unwrap, wrap_ddp
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.io import read_json, write_json
from modeconn.layout import fast_layout
from modeconn.modes import eval_mode
from modeconn.progress import make_progress

SCHEDULES = ("cosine", "step", "mc", "constant")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every training command."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "cosine"
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    step_gamma: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise InvalidArgument("epochs", f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InvalidArgument(
                "batch_size", f"batch_size must be at least 1, got {self.batch_size}"
            )
        if not self.lr > 0:
            raise InvalidArgument("lr", f"lr must be positive, got {self.lr}")
        if not self.weight_decay >= 0:
            raise InvalidArgument(
                "weight_decay", f"weight_decay must be non-negative, got {self.weight_decay}"
            )
        if self.schedule not in SCHEDULES:
            raise InvalidArgument(
                None, f"unknown schedule '{self.schedule}' (use {', '.join(SCHEDULES)})"
            )
        if self.optimizer not in OPTIMIZERS:
            raise InvalidArgument(
                None, f"unknown optimizer '{self.optimizer}' (use {', '.join(OPTIMIZERS)})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SGDBudget(Protocol):
    """What a defense's own settings name of its training: FST's and FT-SAM's configs."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float


def cosine_sgd(budget: SGDBudget, seed: int) -> TrainConfig:
    """SGD with momentum and a cosine schedule at ``budget``'s settings."""
    return TrainConfig(
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        lr=budget.lr,
        momentum=budget.momentum,
        weight_decay=budget.weight_decay,
        schedule="cosine",
        seed=seed,
    )


def lr_factor(
    schedule: str, progress: float, milestones: Iterable[float] = (0.5, 0.75), gamma: float = 0.1
) -> float:
    """Multiplier of the base learning rate at ``progress`` ∈ [0, 1] of training.

    ``mc`` is the mode-connectivity reference schedule (Garipov et al. 2018): constant for the
    first 50%, linear decay to 1% at 90%, then 1%.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return gamma ** sum(progress >= m for m in milestones)
    if schedule == "mc":
        if progress < 0.5:
            return 1.0
        if progress < 0.9:
            return 1.0 - 0.99 * (progress - 0.5) / 0.4
        return 0.01
    raise InvalidArgument(None, f"unknown schedule '{schedule}'")


class Objective:
    """What one training step minimises. The default is cross-entropy on the batch.

    Subclasses override :meth:`loss` (adversarial examples, a point on a curve) and may use the
    hooks around the optimiser step (AWP perturbs the weights before the loss and removes the
    perturbation after the step).
    """

    #: True when the objective adds its own weight decay term (curves regularise φ(t), not θ_i).
    handles_weight_decay: bool = False

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the scalar loss to minimise and the logits used for training accuracy."""
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    def start_epoch(self, epoch: int, model: nn.Module) -> None:
        """Called before each epoch (1-based)."""

    def after_step(self, model: nn.Module) -> None:
        """Called right after ``optimizer.step()``."""


class BatchSource(Protocol):
    """What the loop needs from a loader (see :class:`modeconn.data.TensorLoader`)."""

    def __iter__(self): ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...


EvalFn = Callable[[nn.Module], dict[str, float]]
EpochEndFn = Callable[[nn.Module, int, dict[str, float]], None]


class TrainingRun(Protocol):
    """Where the loop keeps a run's resumable state and per-epoch metrics.

    :class:`modeconn.rundir.RunDir` is the implementation the commands use; the algorithm
    packages only see this interface, so they stay free of run-directory code.
    """

    resuming: bool

    @property
    def state_dir(self) -> Path: ...

    def append_metrics(self, record: dict[str, Any]) -> None: ...

    def truncate_metrics(self, epochs_done: int) -> None: ...


@dataclass
class TrainResult:
    """Per-epoch history and the last epoch's record."""

    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def make_optimizer(
    params: list[nn.Parameter], config: TrainConfig, weight_decay: float
) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=weight_decay)


def epoch_seed(seed: int, epoch: int) -> int:
    """The global-RNG seed of one epoch: a pure function of (seed, epoch) for exact resumption."""
    return (seed * 1_000_003 + epoch * 7919) % (2**63 - 1)


# --- resumable state -------------------------------------------------------------------------


def save_state(
    run: TrainingRun,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, float]],
) -> None:
    """Write model + optimiser state after ``epoch`` atomically (tensors first, then the index)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    run.state_dir.mkdir(parents=True, exist_ok=True)
    write_tensors(run.state_dir / f"epoch{epoch}.safetensors", tensors)
    write_json(
        run.state_dir / "last.json",
        {
            "epoch": epoch,
            "tensors": f"epoch{epoch}.safetensors",
            "param_groups": opt["param_groups"],
            "optim_scalars": scalars,
            "history": history,
        },
    )
    for old in run.state_dir.glob("epoch*.safetensors"):
        if old.name != f"epoch{epoch}.safetensors":
            old.unlink()


def load_state(
    run: TrainingRun, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, float]]]:
    """Restore the state written by :func:`save_state`; returns (epochs done, history)."""
    from modeconn.checkpoints import read_state_dict

    index_path = run.state_dir / "last.json"
    if not index_path.exists():
        return 0, []
    index = read_json(index_path)
    tensors = read_state_dict(run.state_dir / index["tensors"])
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, scal in index["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(scal)
    optimizer.load_state_dict({"state": state, "param_groups": index["param_groups"]})
    return int(index["epoch"]), list(index["history"])


# --- the loop --------------------------------------------------------------------------------


def _train_epoch(
    net: nn.Module,
    loader: BatchSource,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    config: TrainConfig,
    epoch: int,
    steps_per_epoch: int,
    device: torch.device,
    advance: Callable[[str], None],
) -> tuple[list[float], float]:
    """Epoch ``epoch``'s optimiser steps, the learning rate following ``config``'s schedule.
    Returns ``[loss·n, correct, n]`` summed over the epoch and the last learning rate;
    ``advance(status)`` is called after each step."""
    sums = [0.0, 0.0, 0.0]  # loss·n, correct, n
    for step, (x, y) in enumerate(loader):
        progress_frac = ((epoch - 1) * steps_per_epoch + step) / (config.epochs * steps_per_epoch)
        lr = config.lr * lr_factor(
            config.schedule, progress_frac, config.step_milestones, config.step_gamma
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, logits = objective.loss(net, x, y)
        if not torch.isfinite(loss):
            raise ModeconnError(
                f"training loss became {loss.item()} at epoch {epoch}, step {step + 1}; "
                "try a lower lr",
                parameters=("lr",),
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        objective.after_step(net)
        n = y.shape[0]
        sums[0] += loss.item() * n
        sums[1] += (logits.argmax(1) == y).sum().item()
        sums[2] += n
        advance(f"ep {epoch} loss {sums[0] / sums[2]:.3f}")
    return sums, lr


def _epoch_record(
    net: nn.Module,
    epoch: int,
    lr: float,
    sums: list[float],
    ctx: DistContext,
    device: torch.device,
    evaluate: EvalFn | None,
) -> dict[str, float]:
    """One epoch's metrics: the training sums of every process and, on the main process, the
    held-out figures of ``evaluate``."""
    total_loss, correct, count = ctx.all_reduce_sum(sums, device)
    record: dict[str, float] = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": total_loss / max(count, 1),
        "train_acc": correct / max(count, 1),
    }
    if evaluate is not None and ctx.is_main:
        record.update(evaluate(unwrap(net)))
    return record


def train(
    model: nn.Module,
    loader: BatchSource,
    config: TrainConfig,
    *,
    objective: Objective | None = None,
    run: TrainingRun | None = None,
    evaluate: EvalFn | None = None,
    on_epoch_end: EpochEndFn | None = None,
    device: torch.device | str = "cpu",
    dist_ctx: DistContext | None = None,
    progress: bool = True,
    description: str = "train",
) -> TrainResult:
    """Train ``model``'s trainable parameters on ``loader`` for ``config.epochs`` epochs.

    ``evaluate(model)`` adds held-out figures to each epoch's record (main process only);
    ``on_epoch_end(model, epoch, record)`` may write a checkpoint. With ``run`` given, the
    resumable state is saved after every epoch and, when the run directory is resuming, loaded
    before the first.
    """
    config.validate()
    objective = objective or Objective()
    ctx = dist_ctx or DistContext()
    device = torch.device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModeconnError("nothing to train: the model has no trainable parameters")
    wd = 0.0 if objective.handles_weight_decay else config.weight_decay
    optimizer = make_optimizer(params, config, wd)

    start_epoch, history = 0, []
    if run is not None and run.resuming:
        start_epoch, history = load_state(run, model, optimizer)
        run.truncate_metrics(start_epoch)
    net = wrap_ddp(model, ctx, device)
    steps_per_epoch = max(len(loader), 1)
    total_steps = config.epochs * steps_per_epoch
    layout = nullcontext() if ctx.enabled else fast_layout(model, device)

    with layout, make_progress(progress and ctx.is_main) as bar:
        task = bar.add_task(
            description, total=total_steps, completed=start_epoch * steps_per_epoch, status=""
        )
        for epoch in range(start_epoch + 1, config.epochs + 1):
            torch.manual_seed(epoch_seed(config.seed, epoch))
            loader.set_epoch(epoch)
            objective.start_epoch(epoch, net)
            net.train()
            sums, lr = _train_epoch(
                net,
                loader,
                optimizer,
                objective,
                config,
                epoch,
                steps_per_epoch,
                device,
                lambda status: bar.update(task, advance=1, status=status),
            )
            record = _epoch_record(net, epoch, lr, sums, ctx, device, evaluate)
            history.append(record)
            if ctx.is_main:
                if run is not None:
                    run.append_metrics(record)
                    save_state(run, unwrap(net), optimizer, epoch, history)
                if on_epoch_end is not None:
                    on_epoch_end(unwrap(net), epoch, record)
                status = " ".join(f"{k} {v:.3f}" for k, v in record.items() if k.endswith("acc"))
                bar.update(task, status=f"ep {epoch} {status}")
            ctx.barrier()
    return TrainResult(history=history)


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) over ``loader``."""
    loss_sum, correct, count = 0.0, 0, 0
    with eval_mode(model), fast_layout(model, device):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            count += y.shape[0]
    if count == 0:
        raise ModeconnError("cannot evaluate on an empty data set")
    return {"loss": loss_sum / count, "acc": correct / count}
