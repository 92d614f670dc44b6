"""The FST and ANP baselines on the digits backdoor: what each promises and the numbers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from modeconn.attacks.metrics import metric_from_attack_spec
from modeconn.checkpoints import load_model
from modeconn.defenses.anp import (
    ANPConfig,
    NeuronMask,
    adversarial_neuron_pruning,
    fold_pruning,
    neuron_layers,
    pruning_coefficients,
)
from modeconn.defenses.fst import (
    FeatureShiftObjective,
    FSTConfig,
    feature_shift_tuning,
    reinitialise_head,
)
from modeconn.errors import ModeconnError
from modeconn.models import last_linear_name
from modeconn.training import evaluate_model


@pytest.fixture(scope="module")
def setting(digits_backdoor: Path, digits_bonafide):
    ckpt = load_model(digits_backdoor)
    data = digits_bonafide
    return ckpt, data, metric_from_attack_spec(ckpt.attack)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_fst_removes_the_digits_backdoor_and_keeps_the_head_bounded(setting):
    ckpt, data, metric = setting
    before = copy.deepcopy(ckpt.model)
    assert metric(ckpt.model, data, "cpu")["asr"] > 0.8
    tuned = feature_shift_tuning(
        ckpt.model, data.train_loader(32, split="bonafide"), FSTConfig(epochs=10, batch_size=32)
    )
    assert same_state(ckpt.model, before)  # the input model is untouched
    assert metric(tuned, data, "cpu")["asr"] < 0.1  # measured 0.0
    assert evaluate_model(tuned, data.eval_loader("test"))["acc"] > 0.9  # measured 0.95
    head = last_linear_name(ckpt.model)
    new, old = tuned.get_parameter(head), ckpt.model.get_parameter(head)
    assert new.norm() <= old.norm() * (1 + 1e-5)
    cosine = (new * old).sum() / (new.norm() * old.norm())
    assert cosine < 0.2  # the head turned away from the backdoored one


def test_feature_shift_objective_penalises_the_inner_product_and_projects():
    model = nn.Sequential(nn.Linear(4, 3))
    original = model[0].weight.detach().clone()
    objective = FeatureShiftObjective("0.weight", original, alpha=0.5)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss, logits = objective.loss(model, x, y)
    plain = nn.functional.cross_entropy(logits, y)
    assert loss.item() == pytest.approx(plain.item() + 0.5 * original.pow(2).sum().item(), rel=1e-6)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    objective.after_step(model)
    assert model[0].weight.norm().item() == pytest.approx(original.norm().item(), rel=1e-6)


def test_fst_and_anp_refuse_a_model_without_the_layers_they_need():
    with pytest.raises(ModeconnError, match="linear output layer"):
        reinitialise_head(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), seed=0)
    with pytest.raises(ModeconnError, match="convolutions or hidden linear"):
        neuron_layers(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ModeconnError, match="alpha"):
        ANPConfig(alpha=1.5).validate()
    with pytest.raises(ModeconnError, match="alpha"):
        FSTConfig(alpha=-1).validate()


def test_neuron_masks_at_one_are_the_identity_and_folding_equals_the_hooks(setting):
    ckpt, data, _ = setting
    model = copy.deepcopy(ckpt.model).eval()
    x = next(iter(data.eval_loader("test", 64)))[0]
    reference = model(x)
    masks = NeuronMask(neuron_layers(model), "cpu")
    assert last_linear_name(model).removesuffix(".weight") not in masks.layers  # never the head
    with torch.no_grad(), masks.applied():
        assert torch.allclose(model(x), reference, atol=1e-6)
    with torch.no_grad():
        for i, mask in enumerate(masks.mask.values()):  # a distinct order to prune by
            mask.copy_(torch.linspace(0.1 * i, 1.0, mask.numel()))
    coefficients = pruning_coefficients(masks, masks.order(), 20)
    assert sum(int((c == 0).sum()) for c in coefficients.values()) == 20
    with torch.no_grad(), masks.applied(coefficients):
        hooked = model(x)
    fold_pruning(model, coefficients)
    with torch.no_grad():
        assert torch.allclose(model(x), hooked, atol=1e-5)
        assert not torch.allclose(hooked, reference, atol=1e-3)


def test_anp_prunes_within_the_held_out_tolerance(setting):
    ckpt, data, _ = setting
    before = copy.deepcopy(ckpt.model)
    heldout = data.eval_loader("bonafide_holdout")
    config = ANPConfig(steps=50, batch_size=32, tolerance=0.02)
    pruned, info = adversarial_neuron_pruning(
        ckpt.model, data.train_loader(32, split="bonafide"), heldout, config
    )
    assert same_state(ckpt.model, before)
    assert 0 < info["pruned"] < info["neurons"]
    assert sum(info["per_layer"].values()) == info["pruned"]
    assert info["heldout_acc_after"] >= info["heldout_acc_before"] - config.tolerance
    assert evaluate_model(pruned, heldout)["acc"] == pytest.approx(info["heldout_acc_after"])
    zero = sum(
        int((pruned.get_submodule(n).weight.flatten(1).abs().sum(1) == 0).sum())
        for n in info["per_layer"]
    )
    assert zero == info["pruned"]
    _, strict_info = adversarial_neuron_pruning(
        ckpt.model,
        data.train_loader(32, split="bonafide"),
        heldout,
        ANPConfig(steps=50, batch_size=32, tolerance=0.0),
    )
    assert strict_info["pruned"] <= info["pruned"]
