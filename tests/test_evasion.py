"""Evasion attacks: PGD/FGSM/APGD behaviour, agreement with torchattacks, EOT over random models,
and robust accuracy/loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modeconn.attacks.config import AttackConfig, default_eps
from modeconn.attacks.evasion import (
    RandomPointModel,
    apgd,
    apgd_checkpoints,
    dlr_loss,
    fgsm,
    input_gradient,
    pgd,
)
from modeconn.attacks.metrics import robust_metrics
from modeconn.checkpoints import load_model
from modeconn.errors import ModeconnError

EPS = 0.1  # digits are 8×8 and easy: 8/255 barely moves them


@pytest.fixture(scope="module")
def model(digits_lenet: Path) -> nn.Module:
    return load_model(digits_lenet).model.eval()


@pytest.fixture(scope="module")
def batch(digits):
    x, y = next(iter(digits.eval_loader("test", batch_size=360)))
    return x, y


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_pgd_lowers_accuracy_and_stays_in_linf_ball(model, batch):
    x, y = batch
    x_adv = pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=10)
    assert accuracy(model, x_adv, y) < accuracy(model, x, y) - 0.2
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_l2_stays_in_l2_ball(model, batch):
    x, y = batch
    eps = 0.5
    x_adv = pgd(model, x, y, eps=eps, alpha=0.1, steps=10, norm="l2")
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert norms.max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)


def test_pgd_touches_no_parameter_gradient_and_keeps_mode(model, batch):
    x, y = batch
    model.train(False)
    pgd(model, x[:32], y[:32], eps=EPS, steps=2)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    model.train(True)
    pgd(model, x[:32], y[:32], eps=EPS, steps=2)
    assert model.training
    model.eval()


def test_fgsm_is_one_signed_step(model, batch):
    x, y = batch
    x_adv = fgsm(model, x, y, EPS)
    moved = (x_adv - x).abs()
    # Every pixel moves by eps unless the gradient is zero or [0, 1] clips it.
    inside = (x > EPS) & (x < 1 - EPS)
    grad, _, _ = input_gradient(model, x, y, lambda z, t: F.cross_entropy(z, t, reduction="none"))
    assert torch.allclose(moved[inside & (grad != 0)], torch.tensor(EPS), atol=1e-6)
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)


def test_restarts_keep_the_worst_case(model, batch):
    x, y = batch
    one = pgd(model, x, y, eps=EPS / 2, steps=3, generator=torch.Generator().manual_seed(1))
    three = pgd(
        model, x, y, eps=EPS / 2, steps=3, restarts=3, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        fooled_one = model(one).argmax(1) != y
        fooled_three = model(three).argmax(1) != y
    assert bool((fooled_three | ~fooled_one).all())  # nothing fooled once is lost
    assert (three - x).abs().max() <= EPS / 2 + 1e-6


def test_targeted_pgd_reaches_targets(model, batch):
    x, y = batch
    goal = (y + 1) % 10
    x_adv = pgd(model, x, goal, eps=0.3, alpha=0.05, steps=20, targeted=True)
    with torch.no_grad():
        hit = (model(x_adv).argmax(1) == goal).float().mean().item()
    assert hit > 0.5


def test_pgd_agrees_with_torchattacks(model, batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    for norm, eps, alpha, attack in (
        ("linf", EPS, EPS / 4, torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=10)),
        ("l2", 0.5, 0.1, torchattacks.PGDL2(model, eps=0.5, alpha=0.1, steps=10)),
    ):
        torch.manual_seed(3)
        ours = accuracy(model, pgd(model, x, y, eps=eps, alpha=alpha, steps=10, norm=norm), y)
        torch.manual_seed(4)
        theirs = accuracy(model, attack(x, y), y)
        assert abs(ours - theirs) <= 0.01, (norm, ours, theirs)


def test_apgd_ce_agrees_with_torchattacks(model, batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    x, y = x[:200], y[:200]
    ours = accuracy(model, apgd(model, x, y, eps=EPS, steps=20, seed=0), y)
    theirs = accuracy(model, torchattacks.APGD(model, eps=EPS, steps=20, seed=0)(x, y), y)
    assert abs(ours - theirs) <= 0.01, (ours, theirs)
    assert ours < accuracy(model, x, y)


def test_apgd_t_agrees_with_torchattacks(model, batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = batch
    x, y = x[:100], y[:100]
    ours = accuracy(model, apgd(model, x, y, eps=EPS, steps=8, targeted=True), y)
    attack = torchattacks.APGDT(model, eps=EPS, steps=8, n_classes=10, seed=0)
    theirs = accuracy(model, attack(x, y), y)
    assert abs(ours - theirs) <= 0.02, (ours, theirs)  # 100 images: 2 images


def test_apgd_output_is_valid_and_l2_works(model, batch):
    x, y = batch
    x_adv = apgd(model, x[:64], y[:64], eps=0.5, norm="l2", steps=10)
    assert (x_adv - x[:64]).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_apgd_checkpoints_follow_the_paper():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_loss_is_shift_and_scale_invariant():
    logits = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert torch.allclose(dlr_loss(logits, y), dlr_loss(3 * logits + 5, y), atol=1e-5)


def test_eot_on_random_point_model(digits_lenet: Path, batch):
    x, y = batch
    a = load_model(digits_lenet).model.eval()
    b = load_model(digits_lenet).model.eval()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sampler = RandomPointModel([a, b], generator=torch.Generator().manual_seed(0))
    drawn = set()
    for _ in range(20):
        sampler.draw()
        drawn.add(sampler.last_index)
    assert drawn == {0, 1}
    x_adv = pgd(sampler, x, y, eps=EPS, alpha=EPS / 4, steps=10, eot_samples=4)
    for m in (a, b):
        assert accuracy(m, x_adv, y) < accuracy(m, x, y) - 0.2
    # a callable sampler works too
    calls = []
    sampled = RandomPointModel(sample_model=lambda: calls.append(1) or a)
    pgd(sampled, x[:8], y[:8], eps=EPS, steps=2, eot_samples=3)
    assert len(calls) == 6


def test_eot_on_a_deterministic_model_is_plain_pgd(model, batch):
    x, y = batch
    one = pgd(model, x, y, eps=EPS, steps=3, generator=torch.Generator().manual_seed(0))
    avg = pgd(
        model, x, y, eps=EPS, steps=3, eot_samples=3, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(one, avg, atol=1e-6)


def test_robust_metrics(model, digits):
    loader = digits.eval_loader("test", batch_size=128)
    attack = AttackConfig(eps=EPS, alpha=EPS / 4, steps=5)
    res = robust_metrics(model, loader, attack)
    assert set(res) == {"robust_acc", "robust_loss"}
    with torch.no_grad():
        x, y = next(iter(digits.eval_loader("test", batch_size=1000)))
        clean_loss = F.cross_entropy(model(x), y).item()
    assert res["robust_acc"] < accuracy(model, x, y)
    assert res["robust_loss"] > clean_loss
    again = robust_metrics(model, loader, attack)
    assert again == res  # seeded random starts: the same figures twice
    assert robust_metrics(model, loader, attack.replace(seed=1)) != res
    zero = robust_metrics(model, loader, AttackConfig(name="fgsm", eps=0.0))
    assert zero["robust_acc"] == pytest.approx(accuracy(model, x, y))


def test_bad_settings_raise_one_clear_error(model, batch):
    x, y = batch
    with pytest.raises(ModeconnError, match="norm"):
        pgd(model, x, y, norm="l1")
    with pytest.raises(ModeconnError, match="restarts"):
        pgd(model, x, y, restarts=0)
    with pytest.raises(ModeconnError, match="unknown attack"):
        AttackConfig(name="cw").build()
    with pytest.raises(ValueError, match="alpha must be positive"):  # InvalidArgument is both
        AttackConfig(alpha=0).validate()
    with pytest.raises(ModeconnError, match="APGD loss"):
        apgd(model, x, y, loss="hinge")
    with pytest.raises(ModeconnError, match="RandomPointModel"):
        RandomPointModel()


def test_attack_config_round_trips_and_fills_dataset_defaults():
    cfg = AttackConfig(name="apgd-t", norm="l2", eps=0.5, steps=7, restarts=2, seed=3)
    assert AttackConfig.from_dict(cfg.to_dict()) == cfg
    assert AttackConfig.from_dict({"eps": 0.2}) == AttackConfig(eps=0.2)
    with pytest.raises(ModeconnError, match="unknown attack settings"):
        AttackConfig.from_dict({"epsilon": 0.2})
    cifar = AttackConfig.for_dataset("cifar10")
    assert (cifar.eps, cifar.alpha, cifar.steps) == (8 / 255, 2 / 255, 10)
    fmnist = AttackConfig.for_dataset("fashion-mnist", name="apgd-ce", norm="l2")
    assert (fmnist.eps, fmnist.steps) == (1.5, 100)
    assert AttackConfig.for_dataset(None, eps=0.2, steps=3).alpha == pytest.approx(0.05)
    assert default_eps("linf", "unknown-data") == 8 / 255


def test_attack_config_build_matches_the_kernels(model, batch):
    x, y = batch
    cfg = AttackConfig(eps=EPS, alpha=EPS / 4, steps=3, seed=5)
    direct = pgd(
        model, x, y, eps=EPS, alpha=EPS / 4, steps=3, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(cfg.build()(model, x, y), direct)
    assert torch.equal(
        AttackConfig(name="fgsm", eps=EPS).build()(model, x, y), fgsm(model, x, y, EPS)
    )
