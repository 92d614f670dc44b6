"""Curve and surface checkpoints: ``curve.safetensors`` / ``surface.safetensors`` + JSON sidecar.

A curve is a checkpoint like a model: the safetensors file holds the control points
(``point{i}.<param>`` for a curve, ``point{i}_{j}.<param>`` for a surface) and the base model's
buffers (``buffer.<name>``); the sidecar says ``"kind": "curve"`` (or ``"surface"``), the model
spec, the curve's kind, degree and which points are fixed, the endpoints' source paths and their
``attack`` specs (``endpoint_attacks``), and the data the family was trained on. Nothing is ever
unpickled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modeconn import __version__
from modeconn.checkpoints import (
    DEFAULT_NAME,
    FORMAT,
    Checkpoint,
    read_sidecar,
    read_state_dict,
    write_tensors,
)
from modeconn.connectivity.curves import ControlPointModel, Curve, load_buffers
from modeconn.connectivity.surfaces import Surface
from modeconn.errors import MissingInput, ModeconnError
from modeconn.io import write_json
from modeconn.models import ModelSpec, build_model

CURVE_FILE = "curve.safetensors"
SURFACE_FILE = "surface.safetensors"
_FILES = {"curve": CURVE_FILE, "surface": SURFACE_FILE}


def endpoint_meta(checkpoints: Sequence[Checkpoint]) -> dict[str, Any]:
    """Where the endpoints (corners) came from and their attack specs, for a family's sidecar."""
    return {
        "endpoints": [str(c.path) if c.path is not None else None for c in checkpoints],
        "endpoint_attacks": [c.attack for c in checkpoints],
    }


def check_same_architecture(checkpoints: Sequence[Checkpoint], names: Sequence[str]) -> ModelSpec:
    """All models must share one architecture (spec); name the first that differs."""
    first = checkpoints[0].spec
    for name, ckpt in zip(names[1:], checkpoints[1:], strict=True):
        if ckpt.spec != first:
            a, b = first.to_dict(), ckpt.spec.to_dict()
            diff = [k for k in a if a[k] != b[k]]
            detail = ", ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in diff)
            raise ModeconnError(
                f"architectures of {names[0]} and {name} differ ({detail}); "
                "a path joins models of one architecture"
            )
    return first


def _tensors(family: ControlPointModel, key) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for i, point in enumerate(family.control_points()):
        for name, value in point.items():
            tensors[f"{key(i)}.{name}"] = value
    persistent = set(family.base.state_dict())
    for name, buf in family.base.named_buffers():
        if name in persistent:  # not the normalisation constants, which come from the spec
            tensors[f"buffer.{name}"] = buf
    return tensors


def _save(
    path: str | Path,
    kind: str,
    family: ControlPointModel,
    key,
    shape: dict[str, Any],
    spec: ModelSpec,
    dataset: str | None,
    meta: dict[str, Any] | None,
) -> Path:
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / _FILES[kind]
    write_tensors(p, _tensors(family, key))
    sidecar = {
        "format": FORMAT,
        "kind": kind,
        "version": __version__,
        "model": spec.to_dict(),
        "dataset": dataset,
        "input_shape": [spec.in_channels, spec.image_size, spec.image_size],
        "num_classes": spec.num_classes,
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        kind: {**shape, "fixed": list(family.fixed_mask)},
        **(meta or {}),
    }
    write_json(p.with_suffix(".json"), sidecar)
    return p


def save_curve(
    path: str | Path,
    curve: Curve,
    spec: ModelSpec,
    dataset: str | None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``curve`` as ``path`` (a ``.safetensors`` file or a directory) plus its sidecar.

    ``meta`` goes into the sidecar as is (endpoints, endpoint_attacks, data, train_split, metrics).
    """
    shape = {"kind": curve.kind, "num_bends": curve.num_bends, "degree": curve.degree}
    return _save(path, "curve", curve, lambda i: f"point{i}", shape, spec, dataset, meta)


def save_surface(
    path: str | Path,
    surface: Surface,
    spec: ModelSpec,
    dataset: str | None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``surface`` as ``path`` (a ``.safetensors`` file or a directory) plus its sidecar."""
    m1 = surface.degrees[1] + 1
    shape = {"degrees": list(surface.degrees), "num_bends": list(surface.num_bends)}
    key = lambda i: f"point{i // m1}_{i % m1}"  # noqa: E731
    return _save(path, "surface", surface, key, shape, spec, dataset, meta)


def resolve_family_path(path: str | Path) -> Path:
    """Accept a run directory (holding a curve, surface or model), the file, or its sidecar."""
    p = Path(path)
    if p.is_dir():
        names = (CURVE_FILE, SURFACE_FILE, DEFAULT_NAME)
        found = [p / name for name in names if (p / name).exists()]
        if not found:
            raise ModeconnError(f"{p} holds none of {', '.join(names)}")
        p = found[0]
    elif p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.exists():
        raise MissingInput(f"file not found: {p}", p)
    return p


def family_kind(path: str | Path) -> str:
    """``"curve"``, ``"surface"`` or ``"model"``: what a checkpoint holds, from its sidecar."""
    return read_sidecar(resolve_family_path(path)).get("kind", "model")


def _points(tensors: dict[str, torch.Tensor], pattern: str) -> dict[str, dict[str, torch.Tensor]]:
    points: dict[str, dict[str, torch.Tensor]] = {}
    regex = re.compile(pattern)
    for key, value in tensors.items():
        match = regex.fullmatch(key)
        if match:
            points.setdefault(match.group(1), {})[match.group(2)] = value
    return points


def _load(path: str | Path, kind: str, device: torch.device | str):
    weights = resolve_family_path(path)
    meta = read_sidecar(weights)
    if meta.get("kind", "model") != kind:
        raise ModeconnError(f"{weights} is a {meta.get('kind', 'model')} checkpoint, not a {kind}")
    spec = ModelSpec.from_dict(meta["model"])
    tensors = read_state_dict(weights)
    base = build_model(spec)
    load_buffers(
        base, {k[len("buffer.") :]: v for k, v in tensors.items() if k.startswith("buffer.")}
    )
    return weights, meta, spec, tensors, base


def load_curve(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[Curve, ModelSpec, dict]:
    """Rebuild a curve saved by :func:`save_curve`; returns (curve, model spec, sidecar)."""
    weights, meta, spec, tensors, base = _load(path, "curve", device)
    info = meta["curve"]
    found = _points(tensors, r"point(\d+)\.(.+)")
    num_bends = int(info["num_bends"])
    if sorted(int(i) for i in found) != list(range(num_bends)):
        raise ModeconnError(f"{weights} does not hold control points 0..{num_bends - 1}")
    points = [found[str(i)] for i in range(num_bends)]
    curve = Curve(base, points, kind=info["kind"], fixed=info["fixed"])
    return curve.to(device), spec, meta


def load_surface(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[Surface, ModelSpec, dict]:
    """Rebuild a surface saved by :func:`save_surface`; returns (surface, model spec, sidecar)."""
    weights, meta, spec, tensors, base = _load(path, "surface", device)
    n, m = (int(d) for d in meta["surface"]["degrees"])
    found = _points(tensors, r"point(\d+_\d+)\.(.+)")
    keys = [f"{i}_{j}" for i in range(n + 1) for j in range(m + 1)]
    if sorted(found) != sorted(keys):
        raise ModeconnError(f"{weights} does not hold the {n + 1}×{m + 1} control grid")
    surface = Surface(base, [found[k] for k in keys], (n, m), fixed=meta["surface"]["fixed"])
    return surface.to(device), spec, meta


def load_family(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[Curve | Surface, ModelSpec, dict]:
    """Load a curve or a surface, whichever ``path`` holds."""
    kind = family_kind(path)
    if kind == "curve":
        return load_curve(path, device)
    if kind == "surface":
        return load_surface(path, device)
    raise ModeconnError(f"{path} is a {kind} checkpoint, not a curve or surface")
