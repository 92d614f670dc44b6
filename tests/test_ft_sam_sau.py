"""The FT-SAM and SAU baselines: the sharpness-aware step, the shared adversarial examples, and
both built through the repair's baseline registry."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from modeconn.checkpoints import load_model
from modeconn.defenses.baselines import perturbed_model
from modeconn.defenses.ft_sam import FTSAMConfig, SharpnessAwareObjective
from modeconn.defenses.sau import SAUConfig, SharedAdversarialObjective, shared_perturbation
from modeconn.errors import ModeconnError
from modeconn.training import evaluate_model


def test_the_sam_gradient_is_taken_at_the_worst_nearby_point_and_the_step_lands_at_theta():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for adaptive in (False, True):
        start = copy.deepcopy(model)
        objective = SharpnessAwareObjective(rho=0.5, adaptive=adaptive)
        loss, _ = objective.loss(model, x, y)
        loss.backward()
        sam_grads = [p.grad.clone() for p in model.parameters()]
        # the same gradient by hand: g at θ, ε = ρ·g/‖g‖ (ρ·θ²g/‖|θ|g‖ adaptive), g at θ + ε
        probe = copy.deepcopy(start)
        nn.functional.cross_entropy(probe(x), y).backward()
        theta = [p.detach().clone() for p in probe.parameters()]
        scaled = [
            p.grad * t.abs() if adaptive else p.grad
            for p, t in zip(probe.parameters(), theta, strict=True)
        ]
        norm = torch.sqrt(sum((s * s).sum() for s in scaled))
        with torch.no_grad():
            for p, s, t in zip(probe.parameters(), scaled, theta, strict=True):
                p.add_(0.5 * s * (t.abs() if adaptive else 1.0) / norm)
                p.grad = None
        shifted = nn.functional.cross_entropy(probe(x), y)
        shifted.backward()
        assert loss.item() == pytest.approx(shifted.item(), rel=1e-5)
        assert loss.item() > nn.functional.cross_entropy(start(x), y).item()  # uphill
        for mine, by_hand in zip(sam_grads, [p.grad for p in probe.parameters()], strict=True):
            assert torch.allclose(mine, by_hand, atol=1e-6)
        plain = [p.grad for p in _plain_grads(start, x, y)]
        assert not all(
            torch.allclose(a, b, atol=1e-4) for a, b in zip(sam_grads, plain, strict=True)
        )
        with torch.no_grad():  # the optimiser's step, taken at θ + ε, then ε is taken off
            for p in model.parameters():
                p.sub_(0.1 * p.grad)
                p.grad = None
        objective.after_step(model)
        for p, t, g in zip(model.parameters(), theta, sam_grads, strict=True):
            assert torch.allclose(p, t - 0.1 * g, atol=1e-6)


def _plain_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[nn.Parameter]:
    plain = copy.deepcopy(model)
    nn.functional.cross_entropy(plain(x), y).backward()
    return list(plain.parameters())


def test_the_second_sam_pass_leaves_batchnorm_statistics_alone():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    x, y = torch.randn(16, 4), torch.randint(0, 6, (16,))
    once = copy.deepcopy(model)
    once(x)  # one plain training forward pass
    SharpnessAwareObjective(rho=1.0).loss(model, x, y)
    assert torch.allclose(model[1].running_mean, once[1].running_mean)
    assert torch.allclose(model[1].running_var, once[1].running_var)
    assert model[1].momentum == once[1].momentum


def test_shared_adversarial_examples_stay_in_budget_and_fool_both_models_alike(
    digits_backdoor: Path, digits_bonafide
):
    reference = load_model(digits_backdoor).model.eval()
    # SAU's model starts as the tampered one and stays near it: a slightly perturbed copy
    model = perturbed_model(reference, 0.05, torch.Generator().manual_seed(0))
    x, y = next(iter(digits_bonafide.eval_loader("bonafide", 256)))
    config = SAUConfig(eps=0.2, pgd_steps=5, pgd_step_size=0.2)
    delta = shared_perturbation(model, reference, x, y, config)
    assert delta.abs().max().item() <= config.eps + 1e-7

    def shared_wrong(d: torch.Tensor) -> float:
        with torch.no_grad():
            a, b = model(x + d).argmax(1), reference(x + d).argmax(1)
        return ((a == b) & (a != y)).float().mean().item()

    noise = config.eps * torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0))
    noise = noise * 2 - config.eps
    assert shared_wrong(delta) > shared_wrong(noise) + 0.3  # measured 0.53 against 0.03


def test_the_sau_loss_is_clean_cross_entropy_plus_the_shared_risk():
    torch.manual_seed(0)
    tampered = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    x, y = torch.rand(32, 2, 2, 2), torch.randint(0, 3, (32,))
    clean_only = SharedAdversarialObjective(tampered, SAUConfig(w_shared=0.0))
    model = copy.deepcopy(tampered).train()
    loss, _ = clean_only.loss(model, x, y)
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(tampered(x), y).item())
    assert model.training  # the objective's eval mode ends with the step
    config = SAUConfig(eps=1.0, pgd_step_size=1.0)  # a budget that moves this tiny model
    full, _ = SharedAdversarialObjective(tampered, config).loss(model, x, y)
    delta = shared_perturbation(model.eval(), tampered, x, y, config)
    with torch.no_grad():
        clean, adv = tampered(x).argmax(1), tampered(x + delta).argmax(1)
        changed = (adv != y) & (adv != clean)
        p = model(x + delta).softmax(1).gather(1, adv[:, None]).squeeze(1).clamp(0.001, 0.999)
    assert changed.any()  # the tampered model itself gives wrong answers it shares
    risk = -torch.log1p(-p[changed]).sum() / len(y)
    assert full.item() == pytest.approx(loss.item() + risk.item(), rel=1e-5)
    full.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ModeconnError, match="PGD step"):
        SAUConfig(pgd_steps=0).validate()
    with pytest.raises(ModeconnError, match="rho"):
        FTSAMConfig(rho=-1.0).validate()


@pytest.mark.slow
def test_both_baselines_build_through_the_registry(digits_backdoor: Path, digits_bonafide):
    from modeconn.attacks.metrics import metric_from_attack_spec
    from modeconn.defenses.repair import BASELINES, RepairConfig, with_budget
    from modeconn.defenses.repair.context import RepairContext

    assert list(BASELINES)[-2:] == ["FT-SAM", "SAU"]
    ckpt = load_model(digits_backdoor)
    config = with_budget(RepairConfig(baselines=True), batch_size=32, unlearn_epochs=5)
    # SAU at lr 1e-3: 5 epochs of 8 steps are too few to move it at the published 1e-4
    config = dataclasses.replace(config, sau=dataclasses.replace(config.sau, lr=1e-3))
    context = RepairContext(
        ckpt, None, digits_bonafide, config, ckpt.attack, torch.device("cpu"), progress=False
    )
    before = copy.deepcopy(ckpt.model.state_dict())
    metric = metric_from_attack_spec(ckpt.attack)
    tampered_asr = metric(ckpt.model, digits_bonafide, "cpu")["asr"]
    test = digits_bonafide.eval_loader("test")
    for name in ("FT-SAM", "SAU"):
        built = BASELINES[name].build(context)
        assert "5 epochs on bonafide" in built.detail
        assert all(torch.equal(v, ckpt.model.state_dict()[k]) for k, v in before.items())
        moved = built.model.state_dict()
        assert not all(torch.equal(v, moved[k]) for k, v in before.items())
        assert evaluate_model(built.model, test)["acc"] > 0.9  # measured 0.97 and 0.95
    # SAU unlearns part of the digits backdoor at this budget (measured ASR 0.69); FT-SAM does
    # not (1.0, as on the Fashion-MNIST demo model)
    assert metric(built.model, digits_bonafide, "cpu")["asr"] < tampered_asr
