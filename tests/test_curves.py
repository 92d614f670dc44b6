"""Curves: coefficients, endpoints, gradients, BatchNorm along the path, checkpoints, training."""

from __future__ import annotations

import math
import os
from itertools import islice
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from modeconn.commands.connect import run_connect
from modeconn.connectivity import (
    Curve,
    bezier_coefficients,
    evaluate_path,
    fit_curve,
    load_curve,
    path_integral,
    path_summary,
    polychain_coefficients,
    save_curve,
    segment,
    update_bn,
)
from modeconn.connectivity.train import PointObjective, curve_train_config
from modeconn.data.prepare import DataConfig, prepare_data
from modeconn.errors import ModeconnError
from modeconn.models import build_model
from modeconn.models.sizing import model_spec_for
from modeconn.training import TrainConfig, train


def _models(data, arch="lenet", kwargs=None, seeds=(1, 2)):
    spec = model_spec_for(arch, data.info, kwargs)
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(spec).eval())
    return spec, models


def _batch(data, n=64):
    return next(iter(data.eval_loader("test", n)))[0]


# --- coefficients ----------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [1, 2, 3, 5])
def test_bezier_coefficients_closed_form_and_sum(degree):
    ts = torch.linspace(0, 1, 11)
    coeffs = bezier_coefficients(ts, degree)
    assert coeffs.shape == (11, degree + 1)
    torch.testing.assert_close(coeffs.sum(-1), torch.ones(11))
    for t, row in zip(ts.tolist(), coeffs, strict=True):
        expected = [
            math.comb(degree, i) * t**i * (1 - t) ** (degree - i) for i in range(degree + 1)
        ]
        torch.testing.assert_close(row, torch.tensor(expected), atol=1e-6, rtol=0)
    assert bezier_coefficients(0.0, degree)[0] == 1 and bezier_coefficients(1.0, degree)[-1] == 1


def test_polychain_coefficients_hat_functions():
    n = 4
    for i in range(n):
        torch.testing.assert_close(polychain_coefficients(i / (n - 1), n), torch.eye(n)[i])
    ts = torch.rand(50)
    coeffs = polychain_coefficients(ts, n)
    torch.testing.assert_close(coeffs.sum(-1), torch.ones(50))
    assert ((coeffs > 0).sum(-1) <= 2).all()  # only the two neighbouring knots
    torch.testing.assert_close(polychain_coefficients(1 / 6, n), torch.tensor([0.5, 0.5, 0, 0]))


def test_polychain_passes_through_its_knots(digits):
    spec, models = _models(digits, "mlp", {"hidden": [16]}, seeds=(1, 2, 3))
    points = [m.state_dict() for m in models]
    curve = Curve(build_model(spec), points, kind="polychain")
    for i, t in enumerate((0.0, 0.5, 1.0)):
        for name, value in curve.weights_at(t).items():
            assert torch.equal(value, points[i][name]), name
    mid = curve.weights_at(0.25)
    for name, value in mid.items():
        torch.testing.assert_close(value, 0.5 * (points[0][name] + points[1][name]))


# --- endpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
@pytest.mark.parametrize("kwargs", [{}, {"batch_norm": True}])
def test_endpoints_reproduce_the_models(digits, kind, kwargs):
    spec, (a, b) = _models(digits, "lenet", kwargs)
    x = _batch(digits)
    curve = Curve.from_endpoints(
        build_model(spec), a.state_dict(), b.state_dict(), kind=kind, num_bends=4, init="noise"
    )
    bn = list(islice(digits.eval_loader("train", 128), 3))  # a few batches suffice
    for t, model in ((0.0, a), (1.0, b)):
        update_bn(model, bn)  # the endpoint with statistics recomputed from the same data
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(curve.model_at(t, bn)(x), model(x), atol=1e-5, rtol=0)
    if not kwargs:  # without BatchNorm the functional forward is the model itself
        curve.eval()
        with torch.no_grad():
            torch.testing.assert_close(curve(x, 0.0), a(x), atol=1e-5, rtol=0)
            torch.testing.assert_close(curve(x, 1.0), b(x), atol=1e-5, rtol=0)


def test_base_model_is_left_untouched(digits):
    _, (a, b) = _models(digits)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    curve = Curve.from_endpoints(a, a.state_dict(), b.state_dict())
    assert curve.base is not a and all(p.requires_grad for p in a.parameters())
    for k, v in a.state_dict().items():
        assert torch.equal(v, before[k])


def test_architecture_mismatch_is_named(digits):
    spec, (a,) = _models(digits, "lenet", seeds=(1,))
    _, (m,) = _models(digits, "mlp", {"hidden": [16]}, seeds=(1,))
    with pytest.raises(ModeconnError, match=r"model B does not match.*net"):
        Curve.from_endpoints(build_model(spec), a.state_dict(), m.state_dict())


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("fix_endpoints", [True, False])
def test_only_trainable_control_points_get_gradients(digits, fix_endpoints):
    spec, (a, b) = _models(digits, "lenet", {"batch_norm": True})
    curve = Curve.from_endpoints(
        build_model(spec), a.state_dict(), b.state_dict(), num_bends=4, fix_endpoints=fix_endpoints
    )
    curve.train()
    logits, l2 = curve(_batch(digits, 16), torch.tensor([0.3, 0.8]), weight_decay=0.1)
    (logits.square().mean() + l2).backward()  # l2 is a detached value
    assert all(p.grad is None for p in curve.base.parameters())
    assert all(p.grad is None and not p.requires_grad for p in curve.fixed)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in curve.free)
    trainable = sum(p.numel() for p in curve.parameters() if p.requires_grad)
    per_point = sum(p.numel() for p in a.parameters())
    assert trainable == per_point * (2 if fix_endpoints else 4)


def test_weight_decay_hook_gives_the_gradient_of_the_penalty(digits):
    spec, (a, b) = _models(digits, "mlp", {"hidden": [16]})
    curve = Curve.from_endpoints(build_model(spec), a.state_dict(), b.state_dict(), num_bends=4)
    x, y = next(iter(digits.eval_loader("test", 10)))
    ts, wd = torch.tensor([0.3, 0.8]), 0.1
    logits, penalty = curve(x, ts, weight_decay=wd)
    (F.cross_entropy(logits, y) + penalty).backward()
    hooked = [p.grad.clone() for p in curve.free]
    curve.zero_grad()
    squares = [sum(w.square().sum() for w in curve.weights_at(t).values()) for t in ts]
    explicit = 0.5 * wd * torch.stack(squares).mean()
    (F.cross_entropy(curve(x, ts), y) + explicit).backward()
    torch.testing.assert_close(penalty, explicit.detach())
    for got, want in zip(hooked, (p.grad for p in curve.free), strict=True):
        torch.testing.assert_close(got, want)


def test_several_t_per_batch_split_the_batch(digits):
    spec, (a, b) = _models(digits, "mlp", {"hidden": [16]})
    curve = Curve.from_endpoints(build_model(spec), a.state_dict(), b.state_dict()).eval()
    x = _batch(digits, 10)
    with torch.no_grad():
        both = curve(x, torch.tensor([0.0, 1.0]))
        torch.testing.assert_close(both[:5], a(x[:5]))
        torch.testing.assert_close(both[5:], b(x[5:]))


# --- BatchNorm -------------------------------------------------------------------------------


def test_update_bn_is_a_cumulative_average_in_train_mode():
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(3, momentum=0.3)).eval()
    data = torch.randn(40, 3, 1, 1) * 2 + 5
    loader = [(data[i : i + 10], None) for i in range(0, 40, 10)]
    update_bn(model, loader)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, data.flatten(1).mean(0))
    batch_vars = torch.stack([data[i : i + 10].flatten(1).var(0) for i in range(0, 40, 10)])
    torch.testing.assert_close(bn.running_var, batch_vars.mean(0))
    assert bn.momentum == 0.3 and not model.training


def test_update_bn_without_batchnorm_reads_no_data():
    class Exploding:
        def __iter__(self):
            raise AssertionError("read")

    update_bn(nn.Linear(2, 2), Exploding())


# --- training --------------------------------------------------------------------------------


def test_stratified_points_cover_each_stratum_once():
    objective = PointObjective(1, 0.0, points_per_batch=2, stratified=True, steps_per_epoch=5)
    torch.manual_seed(0)
    objective.start_epoch(1, nn.Identity())
    ts = torch.cat([objective.sample() for _ in range(5)]).flatten()
    assert sorted((ts * 10).floor().long().tolist()) == list(range(10))


def _trained_pair(data, epochs=2):
    spec = model_spec_for("mlp", data.info, {"hidden": [32]})
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_model(spec)
        train(
            model,
            data.train_loader(64, seed=seed),
            TrainConfig(epochs=epochs, seed=seed),
            progress=False,
        )
        out.append(model.eval())
    return spec, out


def test_fit_curve_finds_a_lower_path_than_the_segment(digits):
    spec, (a, b) = _trained_pair(digits)
    config = curve_train_config(epochs=3, batch_size=64, lr=0.05)
    curve = fit_curve(
        build_model(spec),
        a.state_dict(),
        b.state_dict(),
        digits.train_loader(64),
        config,
        t_per_batch=2,
        stratified=True,
    )
    rows = evaluate_path(curve, digits, [0.0, 0.5, 1.0])
    seg = evaluate_path(segment(curve), digits, [0.0, 0.5, 1.0])
    assert rows[0]["test_acc"] == pytest.approx(seg[0]["test_acc"])
    assert rows[1]["train_loss"] < seg[1]["train_loss"]
    summary = path_summary(rows, seg)
    assert summary["segment_mid_test_error"] == pytest.approx(1 - seg[1]["test_acc"])
    assert set(rows[0]) == {"t", "step_length", "train_loss", "train_acc", "test_loss", "test_acc"}
    # Lengths: the segment is as long as ||B - A|| over the trainable parameters, and the bent
    # curve (through a trained middle point) is longer; the integrals are length-weighted means.
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    distance = torch.cat([(pb - pa).detach().flatten() for pa, pb in pairs]).norm()
    assert summary["segment_path_length"] == pytest.approx(float(distance), rel=1e-5)
    assert [r["step_length"] for r in seg] == pytest.approx(
        [0.0, summary["segment_path_length"] / 2, summary["segment_path_length"] / 2], rel=1e-5
    )
    assert summary["path_length"] > summary["segment_path_length"]
    losses = [r["test_loss"] for r in rows]
    assert min(losses) <= summary["test_loss_integral"] <= max(losses)
    steps = [r["step_length"] for r in rows]
    expected = ((losses[0] + losses[1]) / 2 * steps[1] + (losses[1] + losses[2]) / 2 * steps[2]) / (
        steps[1] + steps[2]
    )
    assert summary["test_loss_integral"] == pytest.approx(expected)
    assert summary["test_error_integral"] == pytest.approx(
        path_integral([1 - r["test_acc"] for r in rows], steps)
    )


def test_path_metrics_add_columns(digits):
    spec, (a, b) = _models(digits, "mlp", {"hidden": [16]})
    curve = Curve.from_endpoints(build_model(spec), a.state_dict(), b.state_dict())

    class Norm:
        name = "norm"

        def __call__(self, model, data, device):
            return {"weight_norm": sum(p.norm().item() ** 2 for p in model.parameters())}

    rows = evaluate_path(curve, digits, [0.0, 1.0], metrics=[Norm()])
    assert list(rows[0])[-1] == "weight_norm"
    assert rows[0]["weight_norm"] == pytest.approx(
        sum(p.norm().item() ** 2 for p in a.parameters())
    )


def test_path_test_columns_on_a_test_subset(digits):
    from modeconn.training import evaluate_model

    spec, (a, b) = _models(digits, "mlp", {"hidden": [16]})
    curve = Curve.from_endpoints(build_model(spec), a.state_dict(), b.state_dict())
    rows = evaluate_path(curve, digits, [0.0, 1.0], test_limit=60)
    subset = evaluate_model(a, digits.eval_loader("test", limit=60))
    full = evaluate_model(a, digits.eval_loader("test"))
    assert rows[0]["test_acc"] == pytest.approx(subset["acc"])
    assert rows[0]["test_loss"] == pytest.approx(subset["loss"], rel=1e-5)
    assert subset["loss"] != pytest.approx(full["loss"])  # a different set of images indeed


# --- checkpoints -----------------------------------------------------------------------------


def test_curve_checkpoint_round_trip(tmp_path: Path, digits):
    spec, (a, b) = _models(digits, "lenet", {"batch_norm": True})
    curve = Curve.from_endpoints(
        build_model(spec),
        a.state_dict(),
        b.state_dict(),
        num_bends=4,
        kind="polychain",
        fix_endpoints=False,
        init="noise",
    )
    meta = {"endpoints": ["a", "b"], "endpoint_attacks": [{"type": "backdoor"}, None]}
    path = save_curve(tmp_path / "c", curve, spec, "digits", meta)
    loaded, spec2, meta2 = load_curve(tmp_path / "c")
    assert spec2 == spec and meta2["kind"] == "curve" and meta2["curve"]["kind"] == "polychain"
    assert meta2["endpoint_attacks"][0] == {"type": "backdoor"}
    assert loaded.fixed_mask == curve.fixed_mask and loaded.num_bends == 4
    for name, value in curve.weights_at(0.37).items():
        assert torch.equal(loaded.weights_at(0.37)[name], value)
    for name, buf in curve.base.named_buffers():
        assert torch.equal(dict(loaded.base.named_buffers())[name], buf)
    with pytest.raises(ModeconnError, match="not a model"):
        from modeconn.checkpoints import load_model

        load_model(path)


def _interrupt_after_first(model, epoch, record):
    raise KeyboardInterrupt


def test_train_curve_resumes_exactly(tmp_path: Path, digits_lenet: Path, monkeypatch):
    import modeconn.training as training

    data = DataConfig(dataset="digits", bonafide=300)
    config = curve_train_config(epochs=2, batch_size=64, lr=0.05)
    kwargs = dict(data=data, config=config, progress=False, t_per_batch=2)
    a = digits_lenet / "model.safetensors"
    full = run_connect(a, a, tmp_path / "full", **kwargs)
    assert full["epochs"] == 2
    real = training.save_state

    def save_then_stop(run, model, optimizer, epoch, history):
        real(run, model, optimizer, epoch, history)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_connect(a, a, tmp_path / "part", **kwargs)
    monkeypatch.setattr(training, "save_state", real)
    run_connect(a, a, tmp_path / "part", resume=True, **kwargs)
    c1, _, m1 = load_curve(tmp_path / "full")
    c2, _, _ = load_curve(tmp_path / "part")
    assert m1["train_split"] == "bonafide"
    for (n, p1), p2 in zip(c1.weights_at(0.4).items(), c2.weights_at(0.4).values(), strict=True):
        assert torch.equal(p1, p2), n


# --- DDP -------------------------------------------------------------------------------------


def _ddp_curve_worker(rank: int, world: int, init_file: str, out: str) -> None:

    from modeconn.checkpoints import write_tensors
    from modeconn.connectivity.train import train_family
    from modeconn.distributed import init_distributed, shutdown_distributed

    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    ctx, _ = init_distributed("cpu", f"file://{init_file}")
    data = prepare_data(DataConfig(dataset="digits"))
    spec = model_spec_for("mlp", data.info, {"hidden": [16]})
    torch.manual_seed(rank)  # different starts: DDP must broadcast rank 0's curve
    a, b = build_model(spec), build_model(spec)
    curve = Curve.from_endpoints(build_model(spec), a.state_dict(), b.state_dict(), init="noise")
    config = curve_train_config(epochs=1, batch_size=32, lr=0.05)
    train_family(
        curve,
        data.train_loader(32, dist_ctx=ctx),
        config,
        t_per_batch=2,
        dist_ctx=ctx,
        progress=False,
    )
    write_tensors(Path(out) / f"rank{rank}.safetensors", curve.weights_at(0.3))
    shutdown_distributed()  # what the at-exit hook does under torchrun


@pytest.mark.slow
def test_curve_training_under_ddp(tmp_path: Path):
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_ddp_curve_worker, args=(r, 2, str(tmp_path / "init"), str(tmp_path)))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        if p.is_alive():
            p.kill()
            pytest.fail("DDP worker hung")
        assert p.exitcode == 0
    from modeconn.checkpoints import read_state_dict

    w0 = read_state_dict(tmp_path / "rank0.safetensors")
    w1 = read_state_dict(tmp_path / "rank1.safetensors")
    for name, tensor in w0.items():
        torch.testing.assert_close(tensor, w1[name])


def test_step_benchmark_runs_on_a_tiny_model():
    bench = pytest.importorskip("benchmarks.bench_curve_step")
    result = bench.measure("mlp", 1, 8, 10, 16, steps=2, repeats=1)
    assert result["ratio"] > 0 and len(result["pair_ratios"]) == 1
