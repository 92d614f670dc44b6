"""Weight-Hessian spectrum against a dense Hessian; filter-normalised directions and scans."""

from __future__ import annotations

import pytest
import torch

from modeconn.landscape.directions import (
    difference,
    displaced,
    dot,
    filter_normalized_direction,
    line_through,
    norm,
    plane_basis,
    scan_1d,
    scan_2d,
)
from modeconn.landscape.metrics import loss_evaluator
from modeconn.landscape.weight_hessian import (
    WeightHessian,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
)
from modeconn.models import build_model
from modeconn.models.sizing import model_spec_for
from modeconn.training import TrainConfig, evaluate_model, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Products on tensors this small run fastest on one thread (no pool to wake or contend)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(digits):
    """A 64-8-10 MLP (610 parameters) trained briefly, its Hessian operator and dense Hessian."""
    torch.manual_seed(0)
    model = build_model(model_spec_for("mlp", digits.info, {"hidden": [8]}))
    train(model, digits.train_loader(64), TrainConfig(epochs=3, batch_size=64), progress=False)
    x, y = next(iter(digits.eval_loader("train", batch_size=300)))
    hessian = WeightHessian(model, [(x[:150], y[:150]), (x[150:], y[150:])])
    dense = hessian.dense().double()
    return model, hessian, dense, torch.linalg.eigvalsh(dense)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalues_match_dense(tiny, method):
    _, hessian, _, exact = tiny
    res = hessian_eigenvalues(hessian, k=3, method=method, iters=300, tol=1e-4)
    assert res.values.shape == (3,)
    assert torch.allclose(res.values.double(), exact[-3:].flip(0), rtol=1e-2)
    assert bool(res.converged.all())


def test_lanczos_uses_fewer_hvps_than_power(tiny):
    _, hessian, _, _ = tiny
    lz = hessian_eigenvalues(hessian, k=1, method="lanczos", iters=300, tol=1e-4)
    pw = hessian_eigenvalues(hessian, k=1, method="power", iters=300, tol=1e-4)
    assert int(lz.matvecs[0]) < int(pw.matvecs[0])


def test_hutchinson_trace_within_five_percent(tiny):
    _, hessian, dense, _ = tiny
    exact = float(dense.trace())
    plain = hessian_trace(hessian, max_samples=400, tol=0.015, seed=1)
    assert plain.trace == pytest.approx(exact, rel=0.05)
    top = hessian_eigenvalues(hessian, k=10, iters=100, tol=1e-3)
    deflated = hessian_trace(hessian, max_samples=60, tol=0.01, eigenvectors=top.vectors, seed=1)
    assert deflated.trace == pytest.approx(exact, rel=0.05)
    assert deflated.samples < plain.samples  # the top-k carry most of Hutchinson's variance


def test_spectral_density(tiny):
    _, hessian, dense, exact = tiny
    density = hessian_density(hessian, steps=40, probes=4, seed=0)
    assert torch.allclose(density.weights.sum(1), torch.ones(4, dtype=density.weights.dtype))
    assert float(density.nodes.max()) == pytest.approx(float(exact[-1]), rel=1e-2)
    assert density.moment(1) * hessian.dim == pytest.approx(float(dense.trace()), rel=0.25)
    grid = torch.linspace(float(exact[0]) - 1, float(exact[-1]) + 1, 2000)
    values, _ = density.evaluate(grid)
    integral = float(torch.trapezoid(values, grid.double()))
    assert integral == pytest.approx(1.0, rel=0.02)


# --- directions -----------------------------------------------------------------------------


def test_filter_normalised_direction(digits):
    torch.manual_seed(0)
    model = build_model(model_spec_for("lenet", digits.info, {"batch_norm": True}))
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        d = direction[name]
        if p.ndim <= 1:  # biases and BatchNorm get no direction
            assert torch.count_nonzero(d) == 0, name
        else:
            assert torch.allclose(d.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))


def test_displaced_restores_weights_exactly(digits):
    torch.manual_seed(0)
    model = build_model(model_spec_for("mlp", digits.info, {"hidden": [16]}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    with displaced(model, [d], [0.37]):
        assert not torch.equal(model.state_dict()["net.1.weight"], before["net.1.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_scans_and_lines(digits, tiny):
    model = tiny[0]
    loader = digits.eval_loader("test")
    evaluate = loss_evaluator(loader, "cpu")
    at_model = evaluate_model(model, loader)
    d1 = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    d2 = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    rows = scan_1d(model, d1, [-1.0, 0.0, 1.0], evaluate)
    assert [r["alpha"] for r in rows] == [-1.0, 0.0, 1.0]
    assert rows[1]["loss"] == pytest.approx(at_model["loss"], rel=1e-6)
    assert rows[0]["loss"] > rows[1]["loss"] and rows[2]["loss"] > rows[1]["loss"]
    grid = scan_2d(model, d1, d2, [-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5], evaluate)
    assert len(grid) == 9
    centre = next(r for r in grid if r["alpha"] == 0.0 and r["beta"] == 0.0)
    assert centre["loss"] == pytest.approx(at_model["loss"], rel=1e-6)

    torch.manual_seed(5)
    other = build_model(model_spec_for("mlp", digits.info, {"hidden": [8]}))
    line = line_through(model, other, [0.0, 0.5, 1.0], evaluate)
    assert line[0]["loss"] == pytest.approx(at_model["loss"], rel=1e-6)
    assert line[2]["loss"] == pytest.approx(evaluate_model(other, loader)["loss"], rel=1e-5)


def test_plane_basis_is_orthonormal(digits):
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(model_spec_for("mlp", digits.info, {"hidden": [8]})))
    plane = plane_basis(models)
    assert norm(plane.e1) == pytest.approx(1.0)
    assert norm(plane.e2) == pytest.approx(1.0)
    assert abs(dot(plane.e1, plane.e2)) < 1e-6
    (x1, y1), (x2, y2) = plane.positions[1], plane.positions[2]
    assert y1 == 0 and x1 == pytest.approx(norm(difference(models[0], models[1])))
    assert x2**2 + y2**2 == pytest.approx(norm(difference(models[0], models[2])) ** 2, rel=1e-6)


def test_hessian_leaves_the_model_unchanged(tiny):
    model, hessian, _, _ = tiny
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    hessian.matvec(torch.randn(2, hessian.dim))
    assert model.training
    for p, w, g in zip(model.parameters(), before, grads, strict=True):
        assert torch.equal(p.detach(), w)
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
