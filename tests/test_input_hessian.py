"""Input-Hessian λ_max: batched power iteration and Lanczos against a dense Hessian."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modeconn.checkpoints import load_model
from modeconn.landscape.input_hessian import (
    dense_input_hessian,
    input_hessian_eig,
    input_hessian_stats,
)
from modeconn.landscape.linalg import lanczos, power_iteration, top_eigenvalues
from modeconn.landscape.metrics import InputHessianMetric, pearson


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Products on tensors this small run fastest on one thread (no pool to wake or contend)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(data, n: int = 8):
    return next(iter(data.eval_loader("test", batch_size=n)))


def _dense_lmax(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact largest eigenvalue of each image's input Hessian, in float64."""
    values = []
    for i in range(x.shape[0]):
        hess = dense_input_hessian(model, x[i], y[i]).double()
        values.append(torch.linalg.eigvalsh(hess)[-1])
    return torch.stack(values)


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_batched_lmax_matches_dense_hessian(digits_lenet, digits, method):
    model = load_model(digits_lenet).model
    x, y = _batch(digits)
    res = input_hessian_eig(model, x, y, method=method, iters=200, tol=1e-4)
    dense = _dense_lmax(model, x, y)
    assert bool(res.converged.all())
    assert torch.allclose(res.values.double(), dense, rtol=1e-2)
    # the eigenvector belongs to the eigenvalue: Hv = λv
    hess = dense_input_hessian(model, x[0], y[0])
    v = res.vectors[0]
    assert torch.allclose(hess @ v, res.values[0] * v, atol=2e-2 * float(res.values[0]))


def test_smooth_network_lanczos_finds_the_largest_eigenvalue(digits):
    """With GELU the input Hessian is indefinite; Lanczos still returns the algebraic maximum."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 10))
    x, y = _batch(digits, 4)
    res = input_hessian_eig(model, x, y, method="lanczos", iters=64, tol=1e-5)
    assert torch.allclose(res.values.double(), _dense_lmax(model, x, y), rtol=1e-2)


def test_images_are_independent_and_batched_equals_one_at_a_time(digits_lenet, digits):
    model = load_model(digits_lenet).model
    x, y = _batch(digits, 6)
    batched = input_hessian_eig(model, x, y, iters=300, tol=1e-5).values
    single = torch.cat(
        [
            input_hessian_eig(model, x[i : i + 1], y[i : i + 1], iters=300, tol=1e-5).values
            for i in range(6)
        ]
    )
    assert torch.allclose(batched, single, rtol=1e-3)


def test_model_state_is_restored(digits_lenet, digits):
    model = load_model(digits_lenet).model.train()
    x, y = _batch(digits, 4)
    input_hessian_eig(model, x, y, iters=5)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_zero_hessian_converges_to_zero():
    """A model whose output ignores the input has a zero input Hessian."""

    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.randn(10))

        def forward(self, x):
            return self.bias.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]

    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    for method in ("power", "lanczos"):
        res = input_hessian_eig(Constant(), x, y, method=method)
        assert torch.equal(res.values, torch.zeros(3))
        assert bool(res.converged.all())


def test_stats_and_path_metric(digits_lenet, digits):
    model = load_model(digits_lenet).model
    loader = digits.eval_loader("test", batch_size=16)
    stats = input_hessian_stats(model, [next(iter(loader))], iters=100, tol=1e-3)
    assert stats.eigenvalues.shape == (16,)
    assert stats.max >= stats.mean > 0
    row = InputHessianMetric(limit=16, batch_size=16)(model, digits, "cpu")
    assert set(row) == {"input_hessian_lmax", "input_hessian_lmax_max"}
    assert row["input_hessian_lmax_max"] >= row["input_hessian_lmax"] > 0


def test_lanczos_needs_fewer_matvecs_than_power_iteration():
    """On a spectrum with a small gap, Lanczos converges in far fewer products."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen, dtype=torch.float64))
    eig = torch.linspace(0.0, 1.0, 200, dtype=torch.float64)
    eig[-1] = 1.05
    a = q @ torch.diag(eig) @ q.T

    def matvec(v):
        return v @ a

    kwargs = dict(generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pw = top_eigenvalues(matvec, 1, 200, method="power", iters=2000, tol=1e-6, **kwargs)
    lz = top_eigenvalues(matvec, 1, 200, method="lanczos", iters=200, tol=1e-6, **kwargs)
    assert float(pw.values[0]) == pytest.approx(1.05, rel=1e-6)
    assert float(lz.values[0]) == pytest.approx(1.05, rel=1e-9)
    assert int(lz.matvecs[0]) * 5 < int(pw.matvecs[0])


def test_batched_solvers_on_random_matrices():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 30, 30, generator=gen, dtype=torch.float64)
    a = a @ a.transpose(1, 2)
    exact = torch.linalg.eigvalsh(a)

    def matvec(v):
        return torch.einsum("bij,bj->bi", a, v)

    v0 = torch.randn(4, 30, generator=gen, dtype=torch.float64)
    pw = power_iteration(matvec, v0, iters=5000, tol=1e-8)
    lz = lanczos(matvec, v0, k=3, iters=30, tol=1e-8)
    assert torch.allclose(pw.values, exact[:, -1], rtol=1e-6)
    assert torch.allclose(lz.values, exact[:, -3:].flip(1), rtol=1e-8)


def test_pearson():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    x, y = [0.1, 0.5, 0.2, 0.9], [1.0, 3.0, 1.5, 2.0]
    np_r = torch.corrcoef(torch.tensor([x, y], dtype=torch.float64))[0, 1]
    assert pearson(x, y) == pytest.approx(float(np_r))
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_robust_path_summary():
    from modeconn.landscape.metrics import robust_path_summary

    rows = [
        {"t": 0.0, "test_loss": 0.3, "robust_loss": 2.0, "input_hessian_lmax": 5.0},
        {"t": 0.5, "test_loss": 0.2, "robust_loss": 3.0, "input_hessian_lmax": 9.0},
        {"t": 1.0, "test_loss": 0.4, "robust_loss": 1.0, "input_hessian_lmax": 1.0},
    ]
    summary = robust_path_summary(rows)
    assert summary["robust_barrier"] == pytest.approx(1.0)
    assert summary["robust_loss_max_t"] == 0.5
    assert summary["test_barrier"] == pytest.approx(0.0)
    assert summary["pcc_robust_loss_lmax"] == pytest.approx(1.0)
