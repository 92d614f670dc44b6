"""Safe checkpoints: ``NAME.safetensors`` holds the tensors, ``NAME.json`` says what they are.

The sidecar records the architecture and its keyword arguments, the data set, the input shape, the
number of classes, the normalisation, the attack spec of a tampered model, metrics and the package
version, so any later command can rebuild the model without flags.

A model file may come from an attacker, so nothing is ever unpickled: safetensors is a plain tensor
format, and ``.pt``/``.pth`` files are read only through ``torch.load(weights_only=True)``, which
refuses any object other than tensors and containers of them.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from modeconn import __version__
from modeconn.errors import MissingInput, ModeconnError
from modeconn.io import atomic_write, read_json, write_json
from modeconn.models import ModelSpec, build_model

FORMAT = "modeconn-checkpoint"
DEFAULT_NAME = "model.safetensors"


@dataclass
class Checkpoint:
    """A loaded model with everything its sidecar said about it."""

    model: nn.Module
    spec: ModelSpec
    dataset: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def attack(self) -> dict[str, Any] | None:
        return self.meta.get("attack")


def resolve_weights_path(path: str | Path) -> Path:
    """Accept a run directory, a ``.safetensors`` file, its ``.json`` sidecar, or a ``.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / DEFAULT_NAME
    elif p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.exists():
        raise MissingInput(f"model file not found: {p}", p)
    return p


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat name → tensor mapping without ever unpickling arbitrary objects."""
    p = Path(path)
    if p.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModeconnError(
                f"refusing to load {p}: it holds objects other than tensors "
                f"(a pickle that could run code) — {first}"
            ) from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ModeconnError(f"{p} does not hold a state dict of tensors")
        return {str(k).removeprefix("module."): v for k, v in obj.items()}
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModeconnError(f"cannot read {p} as safetensors: {err}") from None


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors to a safetensors file atomically (shared storage is cloned apart)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, str(tmp)))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy ``state`` into ``model``; name the first tensor that is missing, extra or misshapen."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise ModeconnError(
                f"{source} does not match the architecture: tensor '{name}' missing"
            )
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ModeconnError(
                f"{source} does not match the architecture: tensor '{name}' has shape "
                f"{tuple(state[name].shape)}, expected {tuple(tensor.shape)}"
            )
    for name in state:
        if name not in own:
            raise ModeconnError(
                f"{source} does not match the architecture: unexpected tensor '{name}'"
            )
    model.load_state_dict(state, strict=True)


def save_model(
    path: str | Path,
    model: nn.Module,
    spec: ModelSpec,
    *,
    dataset: str | None,
    attack: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as ``path`` (a ``.safetensors`` file or a directory) and its sidecar."""
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / DEFAULT_NAME
    write_tensors(p, model.state_dict())
    meta = {
        "format": FORMAT,
        "kind": "model",
        "version": __version__,
        "model": spec.to_dict(),
        "dataset": dataset,
        "input_shape": [spec.in_channels, spec.image_size, spec.image_size],
        "num_classes": spec.num_classes,
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "attack": attack,
        "metrics": metrics or {},
        **(extra or {}),
    }
    write_json(sidecar_path(p), meta)
    return p


def read_sidecar(weights: Path) -> dict[str, Any]:
    side = sidecar_path(weights)
    if not side.exists():
        raise ModeconnError(
            f"{weights} has no sidecar {side.name}: modeconn cannot tell its architecture"
        )
    try:
        meta = read_json(side)
    except json.JSONDecodeError as err:
        raise ModeconnError(f"{side} is not valid JSON: {err}") from None
    if meta.get("format") != FORMAT:
        raise ModeconnError(f"{side} is not a modeconn checkpoint sidecar")
    return meta


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    spec: ModelSpec | None = None,
    dataset: str | None = None,
) -> Checkpoint:
    """Rebuild a model from its checkpoint. ``spec`` is needed only for bare ``.pt`` files."""
    weights = resolve_weights_path(path)
    if spec is None:
        meta = read_sidecar(weights)
        if meta.get("kind", "model") != "model":
            raise ModeconnError(
                f"{weights} is a {meta.get('kind')} checkpoint, not a model "
                "(use `modeconn extract` to take a model from it)"
            )
        spec = ModelSpec.from_dict(meta["model"])
        dataset = meta.get("dataset", dataset)
    else:
        meta = {"format": FORMAT, "kind": "model", "model": spec.to_dict(), "dataset": dataset}
    model = build_model(spec)
    load_weights(model, read_state_dict(weights), weights)
    model.to(device).eval()
    return Checkpoint(model=model, spec=spec, dataset=dataset, meta=meta, path=weights)
