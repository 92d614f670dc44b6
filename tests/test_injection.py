"""Error injection (fault sneaking): the spec, the chosen sets, and an injection on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from modeconn.attacks.injection import (
    InjectionSpec,
    _logits_fn,
    choose_injection_sets,
    cw_hinge,
    inject_errors,
    injection_success,
    resolve_param,
)
from modeconn.attacks.metrics import InjectionMetric, metric_from_attack_spec
from modeconn.checkpoints import load_model
from modeconn.commands.attack import run_inject
from modeconn.errors import ModeconnError


def test_spec_round_trips_through_json():
    spec = InjectionSpec(targets=[1, 5], labels=[3, 4], keep=[0, 2, 9], norm="l0", budget=20)
    record = json.loads(json.dumps(spec.to_dict()))
    assert record["type"] == "injection"
    assert InjectionSpec.from_dict(record) == spec


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"norm": "l1"}, "unknown norm"),
        ({"targets": [1, 2], "labels": [3]}, "injected labels"),
        ({"budget": -1.0}, "budget"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_specs_raise_clear_errors(kwargs, fragment):
    with pytest.raises(ModeconnError, match=fragment):
        InjectionSpec(**kwargs)
    with pytest.raises(ModeconnError, match="unknown injection spec fields"):
        InjectionSpec.from_dict({"type": "injection", "colour": 1})


def test_cw_hinge():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 0])
    assert cw_hinge(logits, labels, 0.5).tolist() == [0.0, 3.5]


def test_chosen_sets_are_correct_seeded_and_relabelled(digits_lenet: Path, digits):
    model = load_model(digits_lenet).model
    targets, labels, keep = choose_injection_sets(model, digits, num_keep=300, seed=1)
    assert len(targets) == 4 and len(keep) == 300
    test_x, test_y = digits.raw.test_x, digits.raw.test_y
    with torch.no_grad():
        pred_s = model(test_x[targets].float() / 255).argmax(1)
        pred_r = model(digits.raw.train_x[keep].float() / 255).argmax(1)
    assert torch.equal(pred_s, test_y[targets])
    assert torch.equal(pred_r, digits.raw.train_y[keep])
    assert labels == ((test_y[targets] + 1) % 10).tolist()
    assert set(keep) <= set(digits.indices("train").tolist())
    assert (targets, labels, keep) == choose_injection_sets(model, digits, num_keep=300, seed=1)
    _, random_labels, _ = choose_injection_sets(model, digits, label_mode="random", seed=1)
    assert all(lab != y for lab, y in zip(random_labels, test_y[targets].tolist(), strict=True))


def test_last_layer_shortcut_matches_the_whole_model(digits_lenet: Path, digits):
    model = load_model(digits_lenet).model
    name = resolve_param(model, None)
    assert name.endswith("weight")
    x = digits.raw.test_x[:50].float() / 255
    w = dict(model.named_parameters())[name].detach() + 0.1
    fast = _logits_fn(model, name, x)(w)
    slow = functional_call(model, {name: w}, (x,))
    assert torch.allclose(fast, slow, atol=1e-5)
    with pytest.raises(ModeconnError, match="no parameter"):
        resolve_param(model, "net.nope.weight")


def test_injection_flips_s_and_keeps_accuracy(digits_lenet: Path, digits):
    ckpt = load_model(digits_lenet)
    model = ckpt.model
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    targets, labels, keep = choose_injection_sets(model, digits, seed=0)
    spec = InjectionSpec(targets=targets, labels=labels, keep=keep)
    others = digits.indices("test")[~torch.isin(digits.indices("test"), torch.tensor(targets))]
    x_o = digits.raw.test_x[others].float() / 255
    y_o = digits.raw.test_y[others]
    with torch.no_grad():
        acc_before = (model(x_o).argmax(1) == y_o).float().mean().item()
    assert injection_success(model, digits, spec) == 0.0
    figures = inject_errors(model, digits, spec)
    assert figures["injection_success"] == 1.0
    assert injection_success(model, digits, spec) == 1.0
    with torch.no_grad():
        acc_after = (model(x_o).argmax(1) == y_o).float().mean().item()
    assert abs(acc_after - acc_before) < 0.01
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before_state[k])]
    assert changed == [spec.param]
    assert figures["changed_weights"] > 0 and figures["change_l2"] > 0
    assert InjectionMetric(spec)(model, digits, "cpu") == {"injection_success": 1.0}


def test_l0_injection_respects_its_budget(digits_lenet: Path, digits):
    model = load_model(digits_lenet).model
    targets, labels, keep = choose_injection_sets(model, digits, num_targets=2, seed=2)
    keep = keep[:300]
    spec = InjectionSpec(targets=targets, labels=labels, keep=keep, norm="l0", budget=60, steps=400)
    figures = inject_errors(model, digits, spec)
    assert 0 < figures["changed_weights"] <= 60
    assert figures["injection_success"] == 1.0


def test_inject_model_writes_the_spec_and_summary(digits_lenet: Path, tmp_path: Path, digits):
    summary = run_inject(
        digits_lenet, tmp_path / "inj", num_targets=2, num_keep=500, seed=3, device="cpu"
    )
    assert summary["injection_success"] == 1.0
    assert summary["clean_acc"] < summary["clean_acc_before"]  # S are test images
    assert summary["others_acc"] > summary["others_acc_before"] - 0.02
    assert summary["changed_weights"] > 0 and summary["change_l2"] > 0
    ckpt = load_model(tmp_path / "inj")
    spec = InjectionSpec.from_dict(ckpt.attack)
    assert len(spec.targets) == 2 and len(spec.keep) == 500
    metric = metric_from_attack_spec(ckpt.attack)
    data = digits
    assert metric(ckpt.model, data, "cpu") == {"injection_success": 1.0}
    clean = load_model(digits_lenet)
    assert metric(clean.model, data, "cpu") == {"injection_success": 0.0}
