"""The ``extract`` command: the model at a point of a curve or surface as a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from modeconn.checkpoints import save_model
from modeconn.commands.family import prepare_family_data
from modeconn.connectivity.checkpoints import family_kind, load_family
from modeconn.connectivity.evaluate import PointData
from modeconn.data.prepare import DataConfig
from modeconn.distributed import resolve_device
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.rundir import open_run
from modeconn.training import evaluate_model


def run_extract(
    path: str | Path,
    out: str | Path,
    *,
    t: float | None = None,
    u: float | None = None,
    v: float | None = None,
    data: DataConfig | None = None,
    data_dir: str | None = None,
    test_limit: int | None = None,
    bn_split: str | None = None,
    device: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Write the model at ``t`` on a curve (or ``(u, v)`` on a surface) as an ordinary checkpoint.

    BatchNorm statistics are recomputed at that point from the family's training data. The
    run directory gets ``model.safetensors`` + ``model.json`` (which records the source and the
    endpoints' attack specs) and a summary with the model's test loss and accuracy.
    """
    kind = family_kind(path)
    coords = _coordinates(kind, t, u, v)
    dev = resolve_device(device)
    family, spec, meta = load_family(path, dev)
    prepared = prepare_family_data(meta, spec, path, data, data_dir, test_limit)
    split = bn_split or meta.get("train_split", "train")
    config = {
        "command": "extract",
        "source": str(path),
        **coords,
        "bn_split": split,
        "device": str(dev),
    }
    with open_run(out, config, force=force) as run:
        point_data = PointData(prepared, split, dev)
        model = family.model_from_coefficients(
            family.coefficients(*coords.values()), point_data.own, dev
        )
        res = evaluate_model(model, point_data.test, dev)
        summary = {**coords, "clean_loss": res["loss"], "clean_acc": res["acc"]}
        save_model(
            run.file("model.safetensors"),
            model,
            spec,
            dataset=prepared.config.dataset,
            metrics=summary,
            extra={
                "source": {"kind": kind, "path": str(path), **coords, "bn_split": split},
                "endpoints": meta.get("endpoints"),
                "endpoint_attacks": meta.get("endpoint_attacks"),
            },
        )
        run.finish(summary)
    return summary


def _coordinates(kind: str, t, u, v) -> dict[str, float]:
    if kind == "curve":
        if t is None or u is not None or v is not None:
            raise InvalidArgument(
                ("t", "u", "v"), "a point on a curve is given by t (and not u or v)"
            )
        coords = {"t": float(t)}
    elif kind == "surface":
        if u is None or v is None or t is not None:
            raise InvalidArgument(
                ("u", "v", "t"), "a point on a surface is given by u and v (and not t)"
            )
        coords = {"u": float(u), "v": float(v)}
    else:
        raise ModeconnError(f"this is a {kind} checkpoint, not a curve or surface")
    for name, value in coords.items():
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InvalidArgument(name, f"{name} must lie in [0, 1], got {value}")
    return coords
