"""How much of the tampered model's clean answers a candidate keeps on held-out bonafide data."""

import copy

import pytest
import torch

from modeconn.defenses.repair.agreement import tampered_divergence
from modeconn.defenses.repair.choice import HOLDOUT_KL
from modeconn.models import build_model
from modeconn.models.sizing import model_spec_for


def test_divergence_is_zero_for_the_tampered_model_and_grows_with_a_change(digits_bonafide):
    torch.manual_seed(0)
    model = build_model(model_spec_for("lenet", digits_bonafide.info, {}))
    cpu = torch.device("cpu")
    same = tampered_divergence(model, [model], digits_bonafide, cpu)[HOLDOUT_KL]
    assert same == pytest.approx(0.0, abs=1e-6)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    moved = tampered_divergence(other, [model], digits_bonafide, cpu)[HOLDOUT_KL]
    assert moved > 0.01
    # Against two tampered models, their averaged answers: between the two single figures' ends.
    both = tampered_divergence(model, [model, other], digits_bonafide, cpu)[HOLDOUT_KL]
    assert 0.0 < both < tampered_divergence(model, [other], digits_bonafide, cpu)[HOLDOUT_KL]
    assert model.training  # the model's mode is left as it was
