"""TSC (two-stage symmetry connectivity) on the digits backdoor, tiny settings."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from modeconn.attacks.metrics import metric_from_attack_spec
from modeconn.checkpoints import load_model
from modeconn.defenses.tsc import TSCConfig, symmetry_connectivity
from modeconn.errors import ModeconnError
from modeconn.training import TrainConfig, evaluate_model


def test_tsc_moves_away_and_back_and_keeps_the_input_untouched(
    digits_backdoor: Path, digits_bonafide
):
    ckpt = load_model(digits_backdoor)
    data = digits_bonafide
    before = copy.deepcopy(ckpt.model.state_dict())
    config = TSCConfig(curve=TrainConfig(epochs=6, batch_size=32, lr=0.02, schedule="cosine"))
    stages: list[str] = []

    def stage(name: str, cfg: TrainConfig):
        stages.append(name)
        return None

    model, log = symmetry_connectivity(
        ckpt.model,
        data.train_loader(32, split="bonafide"),
        data.eval_loader("bonafide"),
        config,
        stage=stage,
    )
    assert all(torch.equal(v, before[k]) for k, v in ckpt.model.state_dict().items())
    assert stages == ["tsc_r0_away", "tsc_r0_back"]
    (row,) = log
    # The misaligned copy is far away; θ₁ lies part of the way there, θ₂ comes back nearer.
    assert row["misalignment"] > 0.5
    assert 0 < row["stage2_distance_from_start"] < row["stage1_distance_from_start"]
    assert evaluate_model(model, data.eval_loader("test"))["acc"] > 0.8
    metric = metric_from_attack_spec(ckpt.attack)
    assert metric(model, data, "cpu")["asr"] < metric(ckpt.model, data, "cpu")["asr"]


def test_tsc_refuses_bad_settings_and_models_without_a_spec():
    with pytest.raises(ModeconnError, match="strictly between 0 and 1"):
        TSCConfig(t=1.0).validate()
    with pytest.raises(ModeconnError, match="at least one round"):
        TSCConfig(rounds=0).validate()

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    with pytest.raises(ModeconnError, match="no permutation spec"):
        symmetry_connectivity(Custom(), [], [], TSCConfig())
