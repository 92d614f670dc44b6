"""The natural-feature correction: a repaired model's flags judged against the tampered scan."""

import dataclasses

import pytest
import torch

from modeconn.defenses.repair.choice import HOLDOUT, choose_candidate
from modeconn.defenses.repair.results import Candidate
from modeconn.defenses.scan import ScanResult
from modeconn.defenses.scan.kinds import TriggerSet
from modeconn.defenses.scan.natural import NaturalFeatureRule, discount_natural, size_ratio

RULE = NaturalFeatureRule()


def scan(mask: list[float], pert: list[float], index: list[float]) -> ScanResult:
    """A three-class scan with mask and perturbation sizes and a combined anomaly index."""
    trig = {
        "mask": TriggerSet("mask", torch.tensor(mask), torch.ones(3)),
        "perturbation": TriggerSet("perturbation", torch.tensor(pert), torch.ones(3)),
    }
    flagged = [k for k, v in enumerate(index) if v > 3.0]
    return ScanResult(trig, {"mask": index, "perturbation": index}, index, flagged, 3.0)


# The tampered model: class 0 is the target (tiny trigger), class 2 naturally small.
TAMPERED = scan([7.0, 60.0, 30.0], [1.8, 5.0, 3.2], [4.2, -0.5, 0.9])
# Repaired: the target's trigger grew back to normal; class 2 rose over the threshold only
# because the others evened out — its trigger is 1.25× the tampered model's.
REPAIRED = scan([70.0, 80.0, 37.5], [5.5, 6.0, 4.0], [-0.3, -0.6, 3.6])


def test_size_ratio_is_the_geometric_mean_over_kinds():
    assert size_ratio(REPAIRED, [TAMPERED], 2) == pytest.approx(1.25)
    assert size_ratio(REPAIRED, [TAMPERED], 0) == pytest.approx((10.0 * 5.5 / 1.8) ** 0.5)


def test_a_naturally_small_class_is_discounted_and_explained():
    out = discount_natural(REPAIRED, [TAMPERED], RULE)
    assert out.flagged_classes == [] and out.natural_classes == [2]
    assert not out.backdoor_found
    assert out.suspicion == pytest.approx(-0.3 / 3.0)
    assert "1.25× the tampered model's" in out.notes[-1]
    verdict = out.verdict()
    assert verdict.startswith("no class flagged (largest anomaly index -0.30")
    assert "class 2 over the threshold but discounted as naturally small" in verdict
    assert out.summary()["natural_classes"] == [2]
    assert REPAIRED.flagged_classes == [2]  # the input is not changed


def test_a_class_flagged_in_the_tampered_model_still_counts():
    tampered = scan([7.0, 60.0, 30.0], [1.8, 5.0, 3.2], [4.2, -0.5, 3.1])
    out = discount_natural(REPAIRED, [tampered], RULE)
    assert out.flagged_classes == [2] and out.backdoor_found


def test_a_class_near_the_threshold_in_the_tampered_model_still_counts():
    near = scan([7.0, 60.0, 30.0], [1.8, 5.0, 3.2], [4.2, -0.5, 2.2])  # 0.73 of it
    assert discount_natural(REPAIRED, [near], RULE).flagged_classes == [2]
    # 0.60 of it, under the second look's band: still a natural class
    below = scan([7.0, 60.0, 30.0], [1.8, 5.0, 3.2], [4.2, -0.5, 1.8])
    assert discount_natural(REPAIRED, [below], RULE).natural_classes == [2]


def test_a_smaller_trigger_than_in_the_tampered_model_counts():
    shortcut = scan([70.0, 80.0, 15.0], [5.5, 6.0, 1.6], [-0.3, -0.6, 5.0])
    out = discount_natural(shortcut, [TAMPERED], RULE)
    assert out.flagged_classes == [2] and out.natural_classes == []


def test_two_tampered_models_compare_against_the_smaller_trigger():
    # B reaches class 2 with a trigger of 20 / 2.0: the repaired 37.5 / 4.0 is ~1.9× that.
    b = scan([8.0, 50.0, 20.0], [1.9, 4.0, 2.0], [4.0, -0.2, 1.0])
    assert size_ratio(REPAIRED, [TAMPERED, b], 2) == pytest.approx((37.5 / 20 * 4.0 / 2.0) ** 0.5)
    assert discount_natural(REPAIRED, [TAMPERED, b], RULE).natural_classes == [2]


def test_the_rule_can_be_turned_off_and_needs_references():
    off = dataclasses.replace(RULE, enabled=False)
    assert discount_natural(REPAIRED, [TAMPERED], off) is REPAIRED
    assert discount_natural(REPAIRED, [], RULE) is REPAIRED
    with pytest.raises(ValueError, match="ratio"):
        NaturalFeatureRule(ratio=1.5).validate()


def test_the_choice_takes_a_candidate_whose_only_flag_is_natural():
    better = Candidate("distillation_unlearning", {HOLDOUT: 0.87})
    worse = Candidate("nc_unlearning", {HOLDOUT: 0.76})
    quiet = scan([70.0, 80.0, 40.0], [6.0, 6.0, 5.0], [0.0, 0.0, 1.0])
    plain = {"distillation_unlearning": REPAIRED, "nc_unlearning": quiet}
    assert choose_candidate([better, worse], plain)[0] is worse
    corrected = {**plain, "distillation_unlearning": discount_natural(REPAIRED, [TAMPERED], RULE)}
    assert choose_candidate([better, worse], corrected)[0] is better


def test_a_second_look_reports_the_pooled_suspicion_before_the_correction():
    looked = dataclasses.replace(REPAIRED, draw_suspicions=[1.1, 1.3, 1.2])
    out = discount_natural(looked, [TAMPERED], RULE)
    assert "pooled 1.20, above 1 is flagged" in out.verdict()  # class 2's 3.6 / 3
    assert out.suspicion < 1.0
