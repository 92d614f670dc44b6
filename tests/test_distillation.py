"""Unlearning by distillation from the tampered model: the loss and the ``distill`` candidate."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from modeconn.data.prepare import DataConfig
from modeconn.defenses.distillation import DistillationConfig, DistillationUnlearning
from modeconn.errors import ModeconnError


def test_the_student_is_taught_the_teachers_answer_on_the_clean_image():
    torch.manual_seed(0)
    teacher = nn.Linear(5, 3)
    student = copy.deepcopy(teacher)  # before the objective freezes the teacher
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    x[:, 4] = 0.0  # a pixel that is dark in every clean image
    plain = DistillationUnlearning(teacher, lambda a, b: (a, b), temperature=2.0, ce=0.0)
    loss, _ = plain.loss(copy.deepcopy(teacher), x, y)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # itself, unstamped: nothing to learn

    def stamp(a, b):  # the trigger lights that pixel up
        a[:, 4] = 5.0
        return a, b

    objective = DistillationUnlearning(teacher, stamp, temperature=2.0, ce=0.0)
    optimiser = torch.optim.SGD(student.parameters(), lr=0.1)
    first = objective.loss(student, x, y)[0].item()
    for _ in range(200):
        loss, _ = objective.loss(student, x, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert first > 0.05 and loss.item() < 0.1 * first
    # the stamped images now get the teacher's answer on their clean versions
    stamped, _ = stamp(x.clone(), y)
    assert (student(stamped).argmax(1) == teacher(x).argmax(1)).float().mean() == 1.0
    assert all(p.requires_grad is False for p in teacher.parameters())
    with pytest.raises(ValueError):
        DistillationConfig(temperature=0.0).validate()
    assert DistillationConfig(min_steps=300).passes(20, 250, 128) == 8  # 8 passes: 16 steps


def test_two_teachers_teach_their_averaged_answer_and_stay_frozen_copies():
    torch.manual_seed(1)
    first, second = nn.Linear(5, 3), nn.Linear(5, 3)
    x = torch.randn(8, 5)
    objective = DistillationUnlearning([first, second], lambda a, b: (a, b), temperature=2.0)
    mean = (torch.softmax(first(x) / 2, 1) + torch.softmax(second(x) / 2, 1)) / 2
    assert torch.allclose(objective.answer(x), mean)
    assert torch.allclose(objective.answer(x).sum(1), torch.ones(8))
    assert all(not p.requires_grad for t in objective.teachers for p in t.parameters())
    assert DistillationUnlearning(first, lambda a, b: (a, b)).teachers == [first]
    assert DistillationConfig().teachers == "tampered"
    with pytest.raises(ValueError, match="teachers"):
        DistillationConfig(teachers="everyone").validate()


def test_students_are_averaged_below_the_bound_only():
    config = DistillationConfig()
    assert [config.student_count(n) for n in (50, 999, 1000, 2000)] == [2, 2, 1, 1]
    assert DistillationConfig(students_below=None).student_count(10_000) == 2
    assert DistillationConfig(students=1).student_count(50) == 1
    for bad in (dict(students=0), dict(students_below=-1)):
        with pytest.raises(ValueError, match="students"):
            DistillationConfig(**bad).validate()


def test_steps_per_epoch_need_the_fewest_passes_that_reach_them():
    # 2,000 images in batches of 128 make 16 steps per pass, the last one partial: one pass
    # gives the 16 steps that 320 steps over 20 epochs need (two passes made 640)
    assert DistillationConfig(min_steps=320).passes(20, 2000, 128) == 1
    assert DistillationConfig(min_steps=340).passes(20, 2000, 128) == 2
    assert DistillationConfig(min_steps=20).passes(20, 50, 128) == 1
    assert DistillationConfig(min_steps=0).passes(20, 50, 128) == 1


@pytest.mark.slow
def test_repair_method_distill_builds_the_distilled_candidate(tmp_path: Path, digits_backdoor):
    from modeconn.commands.repair import run_repair
    from modeconn.defenses.repair import RepairConfig, with_budget

    cfg = with_budget(RepairConfig(method="distill", eot=False), batch_size=32, scan_steps=40)
    data = DataConfig(dataset=None, bonafide=300)
    summary = run_repair([digits_backdoor], tmp_path / "r", config=cfg, data=data, progress=False)
    assert summary["method"] == "distillation unlearning"
    assert summary["distillation_unlearning_asr"] == summary["asr"] < 0.5 * summary["tampered_asr"]
    assert summary["clean_acc"] > summary["tampered_clean_acc"] - 0.1
    # 240 bonafide training images: two students (seeds 0 and 1), averaged
    assert {p.name for p in (tmp_path / "r" / "stages").iterdir()} == {
        "unlearn_distill",
        "unlearn_distill_2",
    }
    assert "the weight average of 2 students" in (tmp_path / "r" / "comparison.md").read_text()


def test_auto_builds_distillation_at_every_budget_unless_bounded():
    from modeconn.defenses.repair import RepairConfig, candidates_for

    def names(images: int | None, below: int | None = None) -> list[str]:
        config = RepairConfig(distill=DistillationConfig(auto_below=below))
        return [b.name for b in candidates_for("auto", config, images)]

    assert names(250) == ["path repair", "NC-unlearning", "distillation unlearning"]
    assert names(2500)[-1] == "distillation unlearning"
    assert names(2500, below=1000) == ["path repair", "NC-unlearning"]
    assert names(250, below=1000)[-1] == "distillation unlearning"
    assert names(None)[-1] == "distillation unlearning"  # no budget given: every auto candidate
    assert [b.name for b in candidates_for("distill")] == ["distillation unlearning"]
    with pytest.raises(ValueError, match="auto_below"):
        DistillationConfig(auto_below=-1).validate()


def test_the_default_demo_trims_distillation_and_baselines_and_all_restores_them():
    import dataclasses

    from modeconn.commands.demo import (
        DEMO_BASELINES,
        DEMO_DISTILL_STEPS,
        FULL_DEMO,
        DemoConfig,
        demo_repair_config,
        scenario_named,
    )
    from modeconn.defenses.repair import RepairConfig, check_registered

    patch = scenario_named("patch")
    default = demo_repair_config(patch, DemoConfig())
    assert default.distill.min_steps == DEMO_DISTILL_STEPS
    assert default.baseline_names == DEMO_BASELINES
    default.validate()
    full = demo_repair_config(patch, dataclasses.replace(DemoConfig(), **FULL_DEMO))
    assert full.distill.min_steps == RepairConfig().distill.min_steps
    assert full.baseline_names is None
    with pytest.raises(ModeconnError, match="unknown baseline 'SAM'"):
        check_registered(RepairConfig(baseline_names=("SAM",)))
