"""Mixed batches (mixup, CutMix) and distillation on them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modeconn.data.mixing import mix_batch
from modeconn.defenses.distillation import DistillationConfig, DistillationUnlearning


def _batch(n: int = 8) -> torch.Tensor:
    """Image i is the constant i, so every pixel tells which image it came from."""
    return torch.arange(float(n)).reshape(n, 1, 1, 1).expand(n, 1, 12, 12).contiguous()


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixing_blends_each_image_with_one_partner_by_lambda(mix: str):
    x = _batch()
    mixed, partner, lam = mix_batch(x, mix, 1.0, torch.Generator().manual_seed(3))
    assert 0.0 <= lam <= 1.0 and sorted(partner.tolist()) == list(range(8))
    expected_mean = lam * x + (1 - lam) * x[partner]  # per image, the mixed mean
    assert torch.allclose(mixed.mean(dim=(1, 2, 3)), expected_mean.mean(dim=(1, 2, 3)), atol=1e-5)
    if mix == "cutmix":  # every pixel is one image's or its partner's, nothing in between
        assert ((mixed == x) | (mixed == x[partner])).all()
    again = mix_batch(x, mix, 1.0, torch.Generator().manual_seed(3))
    assert again[0].equal(mixed) and again[2] == lam


def test_mixing_rejects_an_unknown_mix_and_leaves_none_alone():
    x = _batch(4)
    assert mix_batch(x, "none", 1.0, torch.Generator())[0] is x
    with pytest.raises(ValueError, match="unknown mix"):
        mix_batch(x, "blur", 1.0, torch.Generator())
    with pytest.raises(ValueError, match="mix"):
        DistillationConfig(mix="blur").validate()


class _CornerBackdoor(nn.Module):
    """Class 0 for dark images, 1 for bright ones, and 2 — the "target" — whenever the
    bottom-right pixel is lit, as a backdoored model answers a CutMix box's edge there."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightness = x.mean(dim=(1, 2, 3))
        lit = (x[:, 0, -1, -1] > 0.95).float()
        return torch.stack([self.scale * (0.5 - brightness), self.scale * brightness, 50 * lit], 1)


def test_distillation_targets_fall_back_to_the_label_mix_where_the_teacher_names_another_class():
    teacher = _CornerBackdoor()
    objective = DistillationUnlearning(teacher, lambda a, b: (a, b), 2.0, 0.0, "cutmix", 1.0, 5)
    mixed = torch.full((3, 1, 6, 6), 0.2)
    mixed[1] = 0.8
    mixed[2, 0, -1, -1] = 1.0  # a pasted box lit the corner: the teacher says "target"
    label_mix = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.7, 0.3, 0.0]])
    soft = objective.targets(mixed, label_mix)
    answer = torch.softmax(teacher(mixed) / 2.0, dim=1)
    assert torch.allclose(soft[:2], answer[:2])  # the teacher agrees with the mix: its answer
    assert torch.equal(soft[2], label_mix[2])  # it names class 2: the label mix instead
    narrow = DistillationUnlearning(teacher, lambda a, b: (a, b), 2.0, 0.0, "cutmix", 1.0, 5, [1])
    assert torch.allclose(narrow.targets(mixed, label_mix), answer)  # class 2 is not guarded
    plain = DistillationUnlearning(teacher, lambda a, b: (a, b), 2.0, 0.0, "none", 1.0, 5)
    assert plain.targets(mixed, label_mix) is label_mix


def test_distillation_on_mixed_images_is_deterministic_per_epoch():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    student = copy.deepcopy(teacher)
    x, y = torch.rand(16, 1, 12, 12), torch.randint(0, 3, (16,))
    objective = DistillationUnlearning(teacher, lambda a, b: (a, b), 2.0, 0.0, "cutmix", 1.0, 5)
    with torch.no_grad():
        student[1].bias += torch.tensor([2.0, 0.0, -2.0])
    objective.start_epoch(2, student)
    first = objective.loss(student, x, y)[0]
    objective.start_epoch(2, student)  # a resumed epoch mixes the same images again
    assert objective.loss(student, x, y)[0].item() == pytest.approx(first.item())
    assert first.item() > 0.01
