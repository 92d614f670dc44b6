"""PGD-AT, TRADES and AWP as objectives of the one training loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from modeconn.attacks.config import AttackConfig
from modeconn.commands.train import run_train
from modeconn.data.prepare import DataConfig
from modeconn.defenses.adversarial import (
    TRADES,
    AdversarialConfig,
    AdversarialWeightPerturbation,
    PGDAdversarialTraining,
    RobustEvaluation,
    trades_kl,
)
from modeconn.errors import ModeconnError
from modeconn.models import build_model
from modeconn.models.sizing import model_spec_for
from modeconn.training import TrainConfig

ATTACK = AttackConfig(eps=0.1, alpha=0.025, steps=5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors this small train fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(digits, arch: str = "mlp", **kwargs):
    torch.manual_seed(0)
    return build_model(model_spec_for(arch, digits.info, kwargs or {"hidden": [32]}))


def _batch(digits, n: int = 32):
    return next(iter(digits.train_loader(n, seed=0)))


def test_awp_perturbs_each_weight_by_gamma_norm_and_restores_exactly(digits):
    model = _model(digits).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objective = PGDAdversarialTraining(ATTACK, AdversarialWeightPerturbation(gamma=0.01))
    x, y = _batch(digits)
    loss, logits = objective.loss(model, x, y)
    assert loss.ndim == 0 and logits.shape == (32, 10)
    for name, p in model.state_dict().items():
        if p.ndim >= 2:  # conv/linear weights: moved by exactly γ‖w‖
            step = (p - before[name]).norm() / before[name].norm()
            assert float(step) == pytest.approx(0.01, rel=1e-4), name
        else:  # biases untouched
            assert torch.equal(p, before[name]), name
    objective.after_step(model)  # no optimiser step taken: w must come back bit for bit
    for name, p in model.state_dict().items():
        assert torch.equal(p, before[name]), name


def test_awp_keeps_the_update_taken_at_the_perturbed_weights(digits):
    model = _model(digits).train()
    before = [p.detach().clone() for p in model.parameters()]
    objective = PGDAdversarialTraining(ATTACK, AdversarialWeightPerturbation(gamma=0.02))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch(digits)
    loss, _ = objective.loss(model, x, y)
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]  # the gradient at w + v
    optimizer.step()
    objective.after_step(model)
    for p, w, g in zip(model.parameters(), before, grads, strict=True):
        assert torch.allclose(p.detach(), w - 0.1 * g, atol=1e-6)


def test_awp_leaves_batchnorm_statistics_alone(digits):
    model = _model(digits, "lenet", batch_norm=True).train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    awp = AdversarialWeightPerturbation(gamma=0.01)
    x, y = _batch(digits)
    awp.perturb(model, lambda forward: F.cross_entropy(forward(x), y))
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    for name, p in model.named_parameters():
        moved = not torch.equal(p.detach(), params[name])
        assert moved == (p.ndim >= 2), name  # conv/linear weights only; not BN, not biases
    awp.restore()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), params[name]), name


def test_awp_warmup():
    awp = AdversarialWeightPerturbation(gamma=0.01, warmup=2)
    awp.start_epoch(1)
    assert not awp.active
    awp.start_epoch(2)
    assert not awp.active
    awp.start_epoch(3)
    assert awp.active


def test_trades_kl_and_loss(digits):
    logits = torch.randn(4, 10)
    assert torch.allclose(trades_kl(logits, logits), torch.zeros(4), atol=1e-6)
    other = torch.randn(4, 10)
    p, q = F.softmax(logits, 1), F.softmax(other, 1)
    manual = (p * (p.log() - q.log())).sum(1)
    assert torch.allclose(trades_kl(other, logits), manual, atol=1e-5)

    model = _model(digits).train()
    x, y = _batch(digits)
    torch.manual_seed(0)
    loss, clean_logits = TRADES(ATTACK, beta=0.0).loss(model, x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)
    torch.manual_seed(0)
    loss6, _ = TRADES(ATTACK, beta=6.0).loss(model, x, y)
    assert loss6.item() > loss.item()
    assert torch.allclose(clean_logits, model(x))


def test_adversarial_examples_are_crafted_in_eval_mode(digits):
    model = _model(digits, "lenet", batch_norm=True).train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    objective = PGDAdversarialTraining(ATTACK)
    x, y = _batch(digits)
    x_adv = objective.craft
    modes = []
    objective.craft = lambda m, xb, yb: (modes.append(m.training), x_adv(m, xb, yb))[1]
    objective.loss(model, x, y)
    assert modes == [False] and model.training
    # only the training forward pass (one, on x_adv) updated the statistics
    assert int(dict(model.named_buffers())["net.bn1.num_batches_tracked"]) == int(
        buffers["net.bn1.num_batches_tracked"] + 1
    )


def test_config_validation():
    with pytest.raises(ModeconnError, match="unknown adversarial training"):
        AdversarialConfig(method="fgsm").objective()
    with pytest.raises(ModeconnError, match="eps must be positive"):
        AdversarialConfig(attack=AttackConfig(eps=0)).objective()
    with pytest.raises(ModeconnError, match="uses PGD"):
        AdversarialConfig(attack=AttackConfig(name="fgsm")).objective()
    with pytest.raises(ModeconnError, match="gamma must be positive"):
        AdversarialWeightPerturbation(gamma=-1)
    with pytest.raises(ModeconnError, match="beta must be non-negative"):
        TRADES(ATTACK, beta=-1)
    assert AdversarialConfig(method="trades", awp=True).gamma == 5e-3
    assert AdversarialConfig(method="pgd", awp=True).gamma == 1e-2


def test_adversarial_training_raises_robust_accuracy(tmp_path: Path, digits):
    """On digits, PGD-AT and TRADES (+AWP) beat plain training under the same PGD attack."""
    common = dict(
        model="mlp",
        model_kwargs={"hidden": [64]},
        data=DataConfig(dataset="digits", augment=False),
        config=TrainConfig(epochs=6, batch_size=64, lr=0.05),
        robust=RobustEvaluation(attack=ATTACK, limit=None),
        progress=False,
    )
    plain = run_train(tmp_path / "plain", **common)
    pgd_at = run_train(tmp_path / "pgd", adversarial=AdversarialConfig("pgd", ATTACK), **common)
    trades_awp = run_train(
        tmp_path / "trades",
        adversarial=AdversarialConfig("trades", ATTACK, trades_beta=3.0, awp=True),
        **common,
    )
    assert {"clean_acc", "clean_loss", "robust_acc", "robust_loss"} <= set(pgd_at)
    assert pgd_at["robust_acc"] > plain["robust_acc"] + 0.1
    assert trades_awp["robust_acc"] > plain["robust_acc"] + 0.1
    assert pgd_at["robust_loss"] < plain["robust_loss"]
    assert plain["robust_acc"] < plain["clean_acc"]
    config = json.loads((tmp_path / "trades" / "config.json").read_text())
    assert config["adversarial"]["method"] == "trades"
    assert config["adversarial"]["awp_gamma"] == 5e-3
    sidecar = json.loads((tmp_path / "pgd" / "model.json").read_text())
    assert sidecar["metrics"]["robust_acc"] == pytest.approx(pgd_at["robust_acc"])
