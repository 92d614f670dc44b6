"""The retuning attack's set: the anchor's setting, drawn from the attacker's (train) data."""

from __future__ import annotations

import pytest
import torch

from modeconn.attacks.backdoor import TriggerSpec
from modeconn.cli.repair import parse_retuning
from modeconn.defenses.retuning import (
    RetuningConfig,
    retuning_figures,
    retuning_indices,
    retuning_key,
    retuning_transform,
)
from modeconn.errors import InvalidArgument, ModeconnError

SPEC = TriggerSpec(type="patch", size=2, target=0, rate=0.2)


def test_the_default_is_the_anchors_setting():
    cfg = RetuningConfig()
    assert (cfg.size, cfg.poisoned, cfg.epochs, cfg.lr, cfg.batch_size) == (1000, 5, 5, 0.01, 128)
    train = cfg.train_config()
    assert (train.momentum, train.weight_decay, train.schedule) == (0.9, 0.0, "constant")
    assert cfg.strengths == (5,)


@pytest.mark.parametrize("poisoned", [1, 5, 20, 50])
def test_exactly_n_images_carry_the_trigger_drawn_from_the_train_split(digits_bonafide, poisoned):
    data = digits_bonafide
    subset = retuning_indices(data, 1000, seed=0)
    assert len(subset) == 1000 == len(set(subset.tolist()))
    train = set(data.indices("train").tolist())
    assert set(subset.tolist()) <= train
    bonafide = set(data.indices("bonafide").tolist())
    assert not set(subset.tolist()) <= bonafide  # not the defender's bonafide budget
    stamped = retuning_transform(data, subset, SPEC, poisoned, seed=0).poisoned
    assert len(stamped) == poisoned and set(stamped.tolist()) <= set(subset.tolist())
    _, labels = data.tensors("train")
    assert (labels[stamped] != SPEC.target).all()  # a target-class image would teach nothing
    images, _ = data.tensors("train")
    x, y = images[subset].float().div(255), labels[subset]
    transform = retuning_transform(data, subset, SPEC, poisoned, seed=0)
    _, y_out = transform(x, y, subset)
    assert int((y_out != y).sum()) == poisoned  # the loader's batches relabel exactly those


def test_the_set_is_seeded_and_the_strengths_are_nested(digits_bonafide):
    data = digits_bonafide
    a, b = retuning_indices(data, 1000, 0), retuning_indices(data, 1000, 0)
    assert torch.equal(a, b) and not torch.equal(a, retuning_indices(data, 1000, 1))
    five = set(retuning_transform(data, a, SPEC, 5, seed=0).poisoned.tolist())
    twenty = set(retuning_transform(data, a, SPEC, 20, seed=0).poisoned.tolist())
    assert five < twenty
    assert five != set(retuning_transform(data, a, SPEC, 5, seed=3).poisoned.tolist())
    small = retuning_indices(data, 10**6, 0)  # a train split smaller than the set: used whole
    assert len(small) == len(data.indices("train"))


def test_strengths_keys_and_validation():
    cfg = RetuningConfig(poisoned=5, sweep=(10, 5, 50))
    assert cfg.strengths == (5, 10, 50)
    assert [retuning_key(n, cfg) for n in cfg.strengths] == [
        "retuning_asr",
        "retuning_asr@10",
        "retuning_asr@50",
    ]
    with pytest.raises(InvalidArgument, match="poisoned"):
        RetuningConfig(poisoned=0).validate()
    with pytest.raises(InvalidArgument, match="poisoned"):
        RetuningConfig(size=100, sweep=(200,)).validate()
    parsed = parse_retuning("20,5,50")
    assert (parsed.poisoned, parsed.sweep) == (20, (5, 50))
    assert parse_retuning(None) == RetuningConfig()
    with pytest.raises(ModeconnError, match="--retuning-poisoned"):
        parse_retuning("5,x")
    with pytest.raises(ModeconnError, match="at least 1"):
        parse_retuning("0,5")


def test_retuning_figures_one_key_per_strength(digits_bonafide, digits_backdoor):
    from modeconn.checkpoints import load_model

    model = load_model(digits_backdoor).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RetuningConfig(size=200, poisoned=2, sweep=(20,), epochs=1)
    figures = retuning_figures(model, digits_bonafide, SPEC, cfg)
    assert set(figures) == {"retuning_asr", "retuning_asr@20"}
    assert all(0.0 <= v <= 1.0 for v in figures.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
