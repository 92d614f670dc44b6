"""Devices and DistributedDataParallel set-up.

``modeconn train`` run under ``torchrun`` finds ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its
environment and trains with DistributedDataParallel: gloo on CPU, nccl on GPU. Tests start two gloo
processes with ``torch.multiprocessing.spawn`` and a ``file://`` rendezvous, which needs no port.
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from modeconn.errors import InvalidArgument


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N`` to a device; ``auto`` takes the GPU when there is one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidArgument(
                "device", "device cuda was asked for but no CUDA GPU is available"
            )
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(name)
    if name != "cpu":
        raise InvalidArgument(None, f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """Who this process is in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum a few scalars over all processes (used for epoch metrics)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()


def init_distributed(
    device_name: str = "auto", init_method: str | None = None
) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun (or a test); otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), resolve_device(device_name)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = resolve_device(device_name, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend, init_method=init_method or "env://", rank=rank, world_size=world_size
        )
        atexit.register(shutdown_distributed)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank), device


def shutdown_distributed() -> None:
    """Destroy the process group while the interpreter is still whole (no-op when none).

    DistributedDataParallel wrappers sit in reference cycles, so without a collection the process
    group they hold outlives them and is torn down late, where gloo's threads can abort a process
    that has finished its work ("terminate called without an active exception", SIGABRT): the
    spawned gloo workers of the tests did so in about one run in six. Collecting first makes the
    teardown deterministic. :func:`init_distributed` registers this to run at exit (torchrun).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """Wrap in DistributedDataParallel when running with several processes."""
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
