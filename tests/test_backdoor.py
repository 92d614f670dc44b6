"""Backdoor poisoning: triggers, labels, the poisoned subset, ASR's definition, a poisoned run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modeconn.attacks.backdoor import (
    PoisonTransform,
    TriggerSpec,
    apply_trigger,
    attack_success_rate,
    backdoor_metrics,
    poison_transform,
    poisoned_accuracy,
    poisoned_indices,
    target_labels,
)
from modeconn.attacks.metrics import AttackSuccessMetric, metric_from_attack_spec
from modeconn.checkpoints import load_model
from modeconn.commands.attack import run_poison
from modeconn.data import TensorLoader
from modeconn.data.prepare import DataConfig
from modeconn.errors import ModeconnError
from modeconn.training import TrainConfig


class ConstantModel(nn.Module):
    """Predicts one class for every input."""

    def __init__(self, cls: int, num_classes: int = 10) -> None:
        super().__init__()
        self.cls, self.num_classes = cls, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.num_classes)
        logits[:, self.cls] = 1.0
        return logits


class IgnoresPatch(nn.Module):
    """A fixed random linear classifier that blanks the bottom-right 3×3 corner first."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, :, -3:, -3:] = 0
        return self.fc(x.flatten(1))


def test_spec_round_trips_through_json():
    spec = TriggerSpec(type="blend", alpha=0.1, target=3, label_mode="all-to-all", rate=0.05)
    record = json.loads(json.dumps(spec.to_dict()))
    assert record["type"] == "backdoor" and record["trigger"] == "blend"
    assert TriggerSpec.from_dict(record) == spec
    patch = TriggerSpec(position=(1, 2))
    assert TriggerSpec.from_dict(json.loads(json.dumps(patch.to_dict()))) == patch


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"type": "sticker"}, "unknown trigger"),
        ({"label_mode": "one-to-one"}, "label mode"),
        ({"rate": 1.5}, "rate"),
        ({"size": 0}, "patch size"),
        ({"position": "middle"}, "position"),
        ({"pattern": "stripes"}, "patch pattern"),
        ({"type": "blend", "alpha": 0.0}, "alpha"),
        ({"type": "blend", "pattern": "/nonexistent.npy"}, "not found"),
    ],
)
def test_bad_specs_raise_clear_errors(kwargs, fragment):
    with pytest.raises(ModeconnError, match=fragment):
        TriggerSpec(**kwargs)


def test_spec_must_fit_the_data():
    with pytest.raises(ModeconnError, match="does not exist"):
        TriggerSpec(target=10).check_for(10, 8)
    with pytest.raises(ModeconnError, match="does not fit"):
        TriggerSpec(size=9).check_for(10, 8)


def test_default_patch_is_a_max_square_in_the_bottom_right_corner():
    x = torch.full((2, 1, 8, 8), 0.3)
    out = apply_trigger(x, TriggerSpec())
    assert torch.equal(out[:, :, 5:, 5:], torch.ones(2, 1, 3, 3))
    out[:, :, 5:, 5:] = 0.3
    assert torch.equal(out, x)
    assert torch.equal(x, torch.full((2, 1, 8, 8), 0.3))  # input untouched


def test_patch_position_pattern_and_value():
    x = torch.zeros(1, 3, 10, 10)
    out = apply_trigger(x, TriggerSpec(position=[2, 4], pattern="checkerboard", value=0.5))
    square = out[0, :, 2:5, 4:7]
    assert torch.equal(square[:, 0, 0], torch.full((3,), 0.5))
    assert torch.equal(square[:, 0, 1], torch.zeros(3))
    assert out.sum() == pytest.approx(3 * 5 * 0.5)
    top_left = apply_trigger(x, TriggerSpec(position="top-left"))
    assert top_left[0, :, :3, :3].min() == 1 and top_left.sum() == 27


def test_blend_mixes_a_seeded_pattern(tmp_path: Path):
    x = torch.rand(4, 1, 8, 8)
    spec = TriggerSpec(type="blend", alpha=0.25, seed=1)
    out = apply_trigger(x, spec)
    pattern = (out - 0.75 * x) / 0.25
    assert torch.allclose(pattern, pattern[0].expand_as(pattern), atol=1e-5)
    assert torch.allclose(apply_trigger(x, spec), out)
    assert not torch.allclose(apply_trigger(x, TriggerSpec(type="blend", seed=2)), out)
    image = np.full((16, 16), 255, dtype=np.uint8)
    np.save(tmp_path / "white.npy", image)
    white = apply_trigger(
        x, TriggerSpec(type="blend", alpha=0.5, pattern=str(tmp_path / "white.npy"))
    )
    assert torch.allclose(white, 0.5 * x + 0.5, atol=1e-6)


def test_warp_is_subtle_deterministic_and_in_range():
    x = torch.rand(3, 1, 28, 28)
    spec = TriggerSpec(type="warp")
    out = apply_trigger(x, spec)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, apply_trigger(x, spec))
    assert 0 < (out - x).abs().mean() < 0.2


def test_target_labels():
    y = torch.tensor([0, 3, 9])
    assert target_labels(y, TriggerSpec(target=2), 10).tolist() == [2, 2, 2]
    assert target_labels(y, TriggerSpec(label_mode="all-to-all"), 10).tolist() == [1, 4, 0]


def test_poisoned_subset_is_a_fixed_seeded_fraction_of_samples():
    pool = torch.arange(100, 1100)
    chosen = poisoned_indices(pool, 0.1, seed=0)
    assert len(chosen) == 100 and len(set(chosen.tolist())) == 100
    assert bool(torch.isin(chosen, pool).all())
    assert torch.equal(chosen, poisoned_indices(pool, 0.1, seed=0))
    assert not torch.equal(chosen, poisoned_indices(pool, 0.1, seed=1))


def test_loader_poisons_exactly_the_chosen_samples_every_epoch(digits):
    spec = TriggerSpec(rate=0.1, target=0)
    pool = digits.indices("train")
    transform = poison_transform(spec, 10, pool=pool)
    chosen = set(transform.poisoned.tolist())
    assert len(chosen) == round(0.1 * len(pool))
    loader = digits.train_loader(64, transform=transform, augment=False)
    images, labels = digits.tensors("train")
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        order = loader.epoch_indices()
        for start, (x, y) in zip(range(0, len(order), 64), loader, strict=True):
            idx = order[start : start + 64]
            hit = torch.tensor([i in chosen for i in idx.tolist()])
            clean = images[idx].float() / 255
            assert torch.equal(x[~hit], clean[~hit]) and torch.equal(y[~hit], labels[idx][~hit])
            assert torch.equal(x[hit], apply_trigger(clean[hit], spec))
            assert bool((y[hit] == 0).all())


def test_transform_without_indices_poisons_a_fraction_of_each_batch():
    transform = PoisonTransform(TriggerSpec(rate=0.25), 10)
    torch.manual_seed(0)
    x, y = torch.zeros(4000, 1, 8, 8), torch.full((4000,), 5)
    _, y2 = transform(x, y)
    assert abs((y2 == 0).float().mean().item() - 0.25) < 0.03
    assert torch.equal(y, torch.full((4000,), 5))  # inputs untouched
    loader = TensorLoader(x[:10], y[:10], transform=PoisonTransform(TriggerSpec(rate=0.0), 10))
    assert torch.equal(next(iter(loader))[1], y[:10])


def test_asr_excludes_target_class_images(digits):
    loader = digits.eval_loader("test")
    spec = TriggerSpec(target=0)
    assert (digits.raw.test_y == 0).any()
    always_target = ConstantModel(0)
    assert attack_success_rate(always_target, loader, spec) == 1.0
    assert poisoned_accuracy(always_target, loader, spec) == 0.0
    never = ConstantModel(3)
    res = backdoor_metrics(never, loader, spec)
    y = digits.raw.test_y
    assert res["asr"] == 0.0
    # poisoned accuracy: the share of class 3 among non-target images
    assert res["poisoned_acc"] == pytest.approx(((y == 3).sum() / (y != 0).sum()).item())


def test_asr_of_a_model_that_ignores_the_trigger(digits):
    model = IgnoresPatch().eval()
    loader = digits.eval_loader("test")
    x, y = next(iter(digits.eval_loader("test", batch_size=10_000)))
    with torch.no_grad():
        pred = model(x).argmax(1)
    non_target = y != 0
    expected = ((pred == 0) & non_target).sum().item() / non_target.sum().item()
    assert attack_success_rate(model, loader, TriggerSpec(target=0)) == pytest.approx(expected)


def test_all_to_all_asr(digits):
    loader = digits.eval_loader("test")
    spec = TriggerSpec(label_mode="all-to-all")
    y = digits.raw.test_y
    # predicting 1 everywhere is a success exactly for the images of class 0
    expected = ((y == 0).sum() / len(y)).item()
    assert attack_success_rate(ConstantModel(1), loader, spec) == pytest.approx(expected)


def test_poison_model_on_digits(tmp_path: Path, digits):
    spec = TriggerSpec(rate=0.1, target=0)
    summary = run_poison(
        tmp_path / "run",
        spec=spec,
        model="mlp",
        data=DataConfig(dataset="digits"),
        config=TrainConfig(epochs=8, batch_size=64, lr=0.05),
        progress=False,
        device="cpu",
    )
    assert summary["asr"] >= 0.9
    assert summary["clean_acc"] >= 0.85
    assert summary["poisoned_samples"] == round(0.1 * 1437)
    ckpt = load_model(tmp_path / "run")
    assert TriggerSpec.from_dict(ckpt.attack) == spec
    assert ckpt.meta["metrics"]["asr"] == summary["asr"]
    metric = metric_from_attack_spec(ckpt.attack)
    assert isinstance(metric, AttackSuccessMetric)
    data = digits
    assert metric(ckpt.model, data, "cpu")["asr"] == pytest.approx(summary["asr"])
    # On a test subset: the same figure as backdoor_metrics on those images.
    subset = AttackSuccessMetric(spec, limit=90)(ckpt.model, data, "cpu")
    loader = data.eval_loader("test", limit=90)
    assert subset == pytest.approx(backdoor_metrics(ckpt.model, loader, spec))
