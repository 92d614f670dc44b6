"""``modeconn align``: permute B's hidden units onto A's and measure the straight line before and
after.

Loads two models of one architecture, finds the permutation of B's units (weight matching or
activation matching on the training split, see :mod:`modeconn.connectivity.alignment`; with
``mode="misalign"`` the least similar one), and writes into the run directory

* ``model.safetensors`` + ``model.json``: B permuted — the same function as B, B's sidecar (attack
  spec, metrics) with an ``alignment`` entry added;
* ``permutation.safetensors``: the permutation of every group (unit i of the written model is
  unit ``perm[i]`` of B);
* ``path.csv`` and ``path.png``: test loss, accuracy and error at evenly spaced t on the straight
  segment from A to B (``unaligned_*``) and from A to permuted B (``aligned_*``), BatchNorm
  statistics recomputed at every point from the training split;
* ``summary.json``: ``barrier_unaligned``, ``barrier_aligned`` (largest test error on the segment
  minus the larger endpoint error), ``clean_acc_a``, ``clean_acc_b``, ``clean_acc``/``clean_loss``
  of the written model and ``max_log_prob_change`` (how far its outputs are from B's: zero up
  to rounding), and the weight distances to A before and after.

Everything a user can get wrong — a missing file, two architectures, two data sets, a model
without a permutation spec — is checked before the run directory is created.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from modeconn.checkpoints import (
    Checkpoint,
    foreign_record,
    is_foreign,
    load_model,
    load_weights,
    model_input_shape,
    save_model,
    write_tensors,
)
from modeconn.connectivity.alignment import (
    SegmentEvaluation,
    activation_matching,
    segment_barrier,
    weight_distance,
    weight_matching,
)
from modeconn.connectivity.evaluate import EVAL_BATCH, log_probabilities, nll_accuracy, ts_grid
from modeconn.data.prepare import DataConfig, prepare_data
from modeconn.distributed import resolve_device
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.io import write_table
from modeconn.models import build_model
from modeconn.models.foreign import ForeignArchitecture
from modeconn.models.permutation import (
    Permutations,
    PermutationSpec,
    apply_permutation,
    permutation_spec,
)
from modeconn.models.sizing import check_compatible
from modeconn.rundir import RunDir, open_run

METHODS = ("weight", "activation")
MODES = ("align", "misalign")

#: Sidecar keys that :func:`~modeconn.checkpoints.save_model` writes itself; B's other keys are
#: carried over to the permuted copy unchanged.
_SIDECAR_KEYS = {
    "format",
    "kind",
    "version",
    "model",
    "dataset",
    "input_shape",
    "num_classes",
    "normalization",
    "attack",
    "metrics",
}


def check_options(method: str, mode: str, points: int, max_iter: int) -> None:
    """Reject unknown methods and modes, too few points and too few sweeps."""
    if method not in METHODS:
        raise InvalidArgument(
            None, f"unknown alignment method '{method}' (use {', '.join(METHODS)})"
        )
    if mode not in MODES:
        raise InvalidArgument(None, f"unknown alignment mode '{mode}' (use {', '.join(MODES)})")
    ts_grid(points)
    if max_iter < 1:
        raise InvalidArgument("max_iter", f"max_iter must be at least 1, got {max_iter}")


def check_same_architecture(a: Checkpoint, b: Checkpoint, path_a: str, path_b: str) -> None:
    """Two models can only be aligned if they have one architecture, input and data set."""
    spec_a, spec_b = a.spec.to_dict(), b.spec.to_dict()
    for key in ("arch", "kwargs", "in_channels", "image_size", "num_classes", "mean", "std"):
        if spec_a[key] != spec_b[key]:
            raise ModeconnError(
                f"{path_a} and {path_b} differ in {key} ({spec_a[key]} vs {spec_b[key]}): "
                "only two models of one architecture can be aligned"
            )
    if a.dataset and b.dataset and a.dataset != b.dataset:
        raise ModeconnError(
            f"{path_a} was trained on {a.dataset} and {path_b} on {b.dataset}: "
            "align two models of one data set"
        )


def find_permutations(
    method: str,
    misalign: bool,
    spec: PermutationSpec,
    a: Checkpoint,
    b: Checkpoint,
    loader,
    *,
    max_iter: int,
    seed: int,
    device: torch.device,
) -> Permutations:
    """Weight matching on the state dicts, or activation matching on ``loader``."""
    if method == "weight":
        return weight_matching(
            spec,
            a.model.state_dict(),
            b.model.state_dict(),
            max_iter=max_iter,
            seed=seed,
            misalign=misalign,
        )
    return activation_matching(
        a.model,
        b.model,
        spec,
        loader,
        misalign=misalign,
        device=device,
        max_iter=max_iter,
        seed=seed,
    )


def path_rows(unaligned: SegmentEvaluation, aligned: SegmentEvaluation) -> list[dict[str, float]]:
    """One row per t with both segments' test loss, accuracy and error side by side."""
    rows = []
    for before, after in zip(unaligned.rows, aligned.rows, strict=True):
        row = {"t": before["t"]}
        for prefix, source in (("unaligned", before), ("aligned", after)):
            for key in ("test_loss", "test_acc", "test_error"):
                row[f"{prefix}_{key}"] = source[key]
        rows.append(row)
    return rows


def _data_config(data: DataConfig | None, dataset: str | None, seed: int) -> DataConfig:
    """The data config: the one named, else ``dataset`` (A's), no augmentation, the seed."""
    config = data if data is not None else DataConfig(dataset=None)
    dataset = config.dataset or dataset or "fashion-mnist"
    return dataclasses.replace(config, dataset=dataset, augment=False, seed=seed)


def _prepare(data: DataConfig | None, a: Checkpoint, b: Checkpoint, paths, seed: int):
    """The data config (default: A's data set, no augmentation) and the prepared data."""
    config = model_input_shape(_data_config(data, a.dataset or b.dataset, seed), a.spec)
    prepared = prepare_data(config)
    check_compatible(a.spec, prepared, str(paths[0]))
    check_compatible(b.spec, prepared, str(paths[1]))
    return config, prepared


def _load_pair(paths, data: DataConfig | None, seed: int, device, foreign):
    """Models A and B (checked to be one architecture) and the data they are compared on;
    weights without a sidecar are read through ``foreign``, sized by the data set."""
    if not any(is_foreign(p, foreign) for p in paths):
        a, b = (load_model(p, device=device) for p in paths)
        check_same_architecture(a, b, str(paths[0]), str(paths[1]))
        return a, b, *_prepare(data, a, b, paths, seed)
    config = _data_config(data, None, seed)
    prepared = prepare_data(config)
    info = prepared.info
    a, b = (
        load_model(p, device=device, foreign=foreign, data=info, dataset=info.name) for p in paths
    )
    check_same_architecture(a, b, str(paths[0]), str(paths[1]))
    check_compatible(a.spec, prepared, str(paths[0]))
    check_compatible(b.spec, prepared, str(paths[1]))
    return a, b, config, prepared


def _permuted_model(spec: PermutationSpec, b: Checkpoint, perms: Permutations, device):
    model = build_model(b.spec)
    state = apply_permutation(spec, b.model.state_dict(), perms)
    load_weights(model, state, "the permuted model")
    return model.to(device).eval()


def test_figures(a: Checkpoint, b: Checkpoint, permuted, loader, device) -> dict[str, float]:
    """Test accuracy of A, B and permuted B (``clean_acc``/``clean_loss``), all measured the
    same way, and how far the permuted model's outputs are from B's (zero up to rounding)."""
    log_a, labels = log_probabilities(a.model, loader, device)
    log_b, _ = log_probabilities(b.model, loader, device)
    log_p, _ = log_probabilities(permuted, loader, device)
    res = nll_accuracy(log_p, labels)
    return {
        "clean_acc_a": nll_accuracy(log_a, labels)["acc"],
        "clean_acc_b": nll_accuracy(log_b, labels)["acc"],
        "clean_acc": res["acc"],
        "clean_loss": res["loss"],
        "max_log_prob_change": float((log_p - log_b).abs().max()),
    }


def run_align(
    model_a: str | Path,
    model_b: str | Path,
    out: str | Path,
    *,
    method: str = "weight",
    mode: str = "align",
    data: DataConfig | None = None,
    points: int = 11,
    max_iter: int = 100,
    seed: int = 0,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    foreign: ForeignArchitecture | None = None,
) -> dict[str, Any]:
    """Permute B onto A (or, with ``mode="misalign"``, as far from A as it goes); see the module
    doc for what is written to ``out``. Returns the summary. ``foreign`` reads weights without a
    sidecar."""
    check_options(method, mode, points, max_iter)
    dev = resolve_device(device)
    a, b, config, prepared = _load_pair((model_a, model_b), data, seed, dev, foreign)
    spec = permutation_spec(a.model)
    options = {
        "command": "align",
        "model_a": str(model_a),
        "model_b": str(model_b),
        "method": method,
        "mode": mode,
        "points": points,
        "max_iter": max_iter,
        "seed": seed,
        "data": config.to_dict(),
        "device": str(dev),
        **foreign_record(foreign),
    }
    with open_run(out, options, force=force) as run:
        own = prepared.eval_loader("train", EVAL_BATCH, dev)
        test = prepared.eval_loader("test", EVAL_BATCH, dev)
        perms = find_permutations(
            method, mode == "misalign", spec, a, b, own, max_iter=max_iter, seed=seed, device=dev
        )
        permuted = _permuted_model(spec, b, perms, dev)
        state_a, state_b, state_p = (m.state_dict() for m in (a.model, b.model, permuted))
        common = dict(bn_loader=own, points=points, device=dev, progress=progress)
        unaligned = segment_barrier(
            a.model, state_a, state_b, test, description="unaligned", **common
        )
        aligned = segment_barrier(
            a.model, state_a, state_p, test, description=mode + "ed", **common
        )
        params = [name for name, _ in a.model.named_parameters()]
        summary = {
            "method": method,
            "mode": mode,
            "points": points,
            "barrier_unaligned": unaligned.barrier,
            "barrier_aligned": aligned.barrier,
            **test_figures(a, b, permuted, test, dev),
            "weight_distance_unaligned": weight_distance(state_a, state_b, params),
            "weight_distance_aligned": weight_distance(state_a, state_p, params),
            "permutation_groups": len(spec.groups),
        }
        _write_outputs(
            run, b, permuted, perms, path_rows(unaligned, aligned), summary, model_a, model_b
        )
        run.finish(summary)
    return summary


def _write_outputs(run: RunDir, b: Checkpoint, permuted, perms, rows, summary, path_a, path_b):
    """The permuted checkpoint, the permutation, the path table and its plot."""
    from modeconn.report.plots import line_plot

    extra = {k: v for k, v in b.meta.items() if k not in _SIDECAR_KEYS}
    extra["alignment"] = {
        "method": summary["method"],
        "mode": summary["mode"],
        "reference": str(path_a),
        "source": str(path_b),
    }
    save_model(
        run.file("model.safetensors"),
        permuted,
        b.spec,
        dataset=b.dataset,
        attack=b.attack,
        metrics=b.meta.get("metrics"),
        extra=extra,
    )
    write_tensors(run.file("permutation.safetensors"), perms)
    write_table(run.file("path.csv"), rows)
    label = "aligned" if summary["mode"] == "align" else "misaligned"
    line_plot(
        run.file("path.png"),
        [r["t"] for r in rows],
        {
            "unaligned": [100 * r["unaligned_test_error"] for r in rows],
            label: [100 * r["aligned_test_error"] for r in rows],
        },
        ylabel="test error (%)",
        title=f"straight line A → B, {summary['method']} matching ({b.spec.arch})",
    )
