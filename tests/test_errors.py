"""Errors by kind: user mistakes are ModeconnError (and the matching built-in), library messages
name parameters, the CLI prints flags, and a broken invariant is a RuntimeError."""

from __future__ import annotations

import pytest
import torch

from modeconn.attacks.config import AttackConfig
from modeconn.checkpoints import load_model
from modeconn.cli import cli_message
from modeconn.connectivity.curves import Curve
from modeconn.defenses.adversarial import AdversarialWeightPerturbation
from modeconn.errors import InvalidArgument, MissingInput, ModeconnError
from modeconn.training import TrainConfig


def test_invalid_argument_is_a_value_error_naming_the_parameter():
    with pytest.raises(ValueError) as info:
        TrainConfig(epochs=0).validate()
    err = info.value
    assert isinstance(err, InvalidArgument) and isinstance(err, ModeconnError)
    assert err.parameter == "epochs"
    assert str(err) == "epochs must be at least 1, got 0"  # a parameter, not a flag


def test_missing_input_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_model(tmp_path / "nothing.safetensors")
    assert isinstance(info.value, MissingInput)
    assert info.value.path == str(tmp_path / "nothing.safetensors")
    assert str(info.value).startswith("model file not found")


def test_broken_invariants_are_runtime_errors_not_user_errors():
    layer = torch.nn.Linear(2, 2)
    awp = AdversarialWeightPerturbation(gamma=0.01)
    awp.add(layer, {"weight": torch.zeros(2, 2)})
    with pytest.raises(RuntimeError) as info:
        awp.add(layer, {"weight": torch.zeros(2, 2)})
    assert not isinstance(info.value, ModeconnError)
    with pytest.raises(RuntimeError):
        Curve(layer, [layer.state_dict()] * 3, "bezier", [True, False])


def test_the_cli_spells_parameters_as_its_own_flags():
    err = InvalidArgument("steps", "steps must be at least 1, got 0")
    assert (
        cli_message(err, ["train", "--attack-steps", "0"])
        == "--attack-steps must be at least 1, got 0"
    )
    assert cli_message(err, ["attack", "m", "--steps", "0"]) == "--steps must be at least 1, got 0"
    done = ModeconnError(
        "runs/a already holds a finished run; pass force=True to overwrite it",
        parameters=("force",),
    )
    assert cli_message(done, ["train"]).endswith("pass --force to overwrite it")
    both = InvalidArgument(
        ("num_targets", "num_keep"), "num_targets must be at least 1 and num_keep non-negative"
    )
    assert (
        cli_message(both, ["inject"])
        == "--num-targets must be at least 1 and --num-keep non-negative"
    )
    assert cli_message(err, []) == str(err)  # no command: the message as the library wrote it
    with pytest.raises(InvalidArgument, match="alpha"):
        AttackConfig(alpha=-1.0).validate()
