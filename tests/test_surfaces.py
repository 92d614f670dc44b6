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
from modeconn.connectivity.surfaces import CORNERS_UV, grid_from_curves
from modeconn.connectivity.train import curve_train_config, train_family
from modeconn.errors import InvalidArgument
from modeconn.models import build_model
from modeconn.models.sizing import model_spec_for


@pytest.fixture(scope="module")
def digits_val():
    """digits with 200 training images held out as a validation split."""
    from modeconn.data.prepare import DataConfig, prepare_data

    return prepare_data(DataConfig(dataset="digits", val_size=200, augment=False))


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


def test_grid_from_curves_has_the_curves_as_edges_and_the_coons_centre(digits):
    spec, models = _corners(digits, "mlp", {"hidden": [8]})
    a, b, c, d = [dict(m.named_parameters()) for m in models]
    torch.manual_seed(9)
    edges = [{n: torch.randn_like(t) for n, t in a.items()} for _ in range(4)]
    points = grid_from_curves([a, b, c, d], edges, "coons")
    surface = Surface(build_model(spec), points, (2, 2))
    # Each edge of the surface is its quadratic Bezier curve: (1-s)^2 P0 + 2s(1-s) P1 + s^2 P2.
    s = 0.3
    curves = {(None, 0.0): (a, edges[0], b), (None, 1.0): (c, edges[1], d)}
    curves |= {(0.0, None): (a, edges[2], c), (1.0, None): (b, edges[3], d)}
    for (u, v), (p0, p1, p2) in curves.items():
        on_surface = surface.weights_at(s if u is None else u, s if v is None else v)
        for name, value in on_surface.items():
            expected = (1 - s) ** 2 * p0[name] + 2 * s * (1 - s) * p1[name] + s**2 * p2[name]
            torch.testing.assert_close(value, expected)
    name = "net.1.weight"
    coons = 0.5 * sum(e[name] for e in edges) - 0.25 * (a[name] + b[name] + c[name] + d[name])
    torch.testing.assert_close(surface.control_point(4)[name], coons)
    mean = grid_from_curves([a, b, c, d], edges, "mean")[4][name]
    torch.testing.assert_close(mean, sum(e[name] for e in edges) / 4)
    with pytest.raises(InvalidArgument, match="unknown centre 'middle'"):
        grid_from_curves([a, b, c, d], edges, "middle")


def test_grid_best_point_is_chosen_on_held_out_training_data(digits_val):
    spec, models = _corners(digits_val, "mlp", {"hidden": [16]})
    surface = Surface.from_corners(build_model(spec), [m.state_dict() for m in models])
    result = evaluate_surface(surface, digits_val, grid=3, holdout_split="val")
    assert {"holdout_loss", "holdout_acc"} <= set(result.rows[0])
    best = min(result.rows, key=lambda r: r["holdout_loss"])
    assert (result.summary["best_u"], result.summary["best_v"]) == (best["u"], best["v"])
    assert result.summary["chosen_on_holdout"] == 1.0
    assert result.summary["max_test_loss"] == max(r["test_loss"] for r in result.rows)
    with pytest.raises(InvalidArgument, match="held-out training data"):
        evaluate_surface(surface, digits_val, grid=3, holdout_split="test")
