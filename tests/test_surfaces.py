"""Bezier surfaces: coefficients, corners, bilinear start, gradients, checkpoints, evaluation."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest
import torch

from modeconn.connectivity import (
    Surface,
    bezier_coefficients,
    evaluate_surface,
    load_surface,
    save_surface,
    surface_coefficients,
    update_bn,
)
from modeconn.connectivity.surfaces import CORNERS_UV
from modeconn.connectivity.train import curve_train_config, train_family
from modeconn.experiment import model_spec_for
from modeconn.models import build_model


def _corners(data, arch="lenet", kwargs=None):
    spec = model_spec_for(arch, data.info, kwargs)
    models = []
    for seed in range(4):
        torch.manual_seed(seed)
        models.append(build_model(spec).eval())
    return spec, models


def test_surface_coefficients_are_a_tensor_product():
    u, v = torch.rand(5), torch.rand(5)
    coeffs = surface_coefficients(u, v, 2, 3)
    assert coeffs.shape == (5, 12)
    torch.testing.assert_close(coeffs.sum(-1), torch.ones(5))
    expected = torch.outer(bezier_coefficients(u[0], 2), bezier_coefficients(v[0], 3)).flatten()
    torch.testing.assert_close(coeffs[0], expected)


@pytest.mark.parametrize("kwargs", [{}, {"batch_norm": True}])
def test_corners_reproduce_the_four_models(digits, kwargs):
    spec, models = _corners(digits, "lenet", kwargs)
    surface = Surface.from_corners(build_model(spec), [m.state_dict() for m in models], (3, 4))
    x = next(iter(digits.eval_loader("test", 32)))[0]
    bn = list(islice(digits.eval_loader("train", 128), 3))  # a few batches suffice
    for (u, v), model in zip(CORNERS_UV, models, strict=True):
        update_bn(model, bn)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(surface.model_at(u, v, bn)(x), model(x), atol=1e-5, rtol=0)


def test_bilinear_start_and_corner_only_fixing(digits):
    spec, models = _corners(digits, "mlp", {"hidden": [8]})
    states = [m.state_dict() for m in models]
    surface = Surface.from_corners(build_model(spec), states)
    u, v = 0.3, 0.8
    weights = surface.weights_at(u, v)
    for name, value in weights.items():
        blend = (
            (1 - u) * (1 - v) * states[0][name]
            + u * (1 - v) * states[1][name]
            + (1 - u) * v * states[2][name]
            + u * v * states[3][name]
        )
        torch.testing.assert_close(value, blend)
    assert sum(surface.fixed_mask) == 4 and surface.num_points == 9
    surface.train()
    logits, l2 = surface(torch.rand(6, 1, 8, 8), torch.rand(3), torch.rand(3), weight_decay=0.1)
    (logits.sum() + l2).backward()
    assert all(p.grad is None and p.shape[0] == 4 for p in surface.fixed)
    assert all(p.grad is not None and p.shape[0] == 5 for p in surface.free)


def test_surface_checkpoint_round_trip(tmp_path: Path, digits):
    spec, models = _corners(digits, "mlp", {"hidden": [8]})
    surface = Surface.from_corners(build_model(spec), [m.state_dict() for m in models], (2, 3))
    save_surface(tmp_path, surface, spec, "digits", {"endpoint_attacks": [None] * 4})
    loaded, spec2, meta = load_surface(tmp_path)
    assert meta["kind"] == "surface" and meta["surface"]["degrees"] == [1, 2]
    assert spec2 == spec and loaded.degrees == (1, 2)
    for name, value in surface.weights_at(0.2, 0.9).items():
        assert torch.equal(loaded.weights_at(0.2, 0.9)[name], value)


def test_training_and_grid_evaluation(digits):
    spec, models = _corners(digits, "mlp", {"hidden": [16]})
    surface = Surface.from_corners(build_model(spec), [m.state_dict() for m in models])
    before = surface.control_point(4)["net.1.weight"].clone()
    config = curve_train_config(epochs=1, batch_size=64, lr=0.05)
    train_family(surface, digits.train_loader(64), config, stratified=True, progress=False)
    assert not torch.equal(surface.control_point(4)["net.1.weight"], before)
    result = evaluate_surface(surface, digits, grid=3)
    assert len(result.rows) == 9 and set(result.rows[0]) >= {"u", "v", "train_loss", "test_acc"}
    for key in ("ensemble_grid_acc", "ensemble_corners_acc", "best_u", "corner_d_test_acc"):
        assert key in result.summary
    best = min(result.rows, key=lambda r: r["train_loss"])
    assert (result.summary["best_u"], result.summary["best_v"]) == (best["u"], best["v"])
