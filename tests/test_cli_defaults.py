"""With no options, every command passes the library's own default settings to the API.

The CLI reads its defaults from the dataclasses and function signatures it calls; these tests fail
if a command re-types a default that then drifts from the Python API's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli

import modeconn.cli.landscape as cli_landscape
import modeconn.commands.attack as attack_commands
import modeconn.commands.connect as connect_commands
import modeconn.commands.repair as repair_commands
import modeconn.commands.train as train_commands
from modeconn.attacks.backdoor import TriggerSpec
from modeconn.attacks.config import AttackConfig
from modeconn.cli.common import fraction_text
from modeconn.commands.landscape import LandscapeConfig
from modeconn.connectivity.train import CURVE_DEFAULTS
from modeconn.defenses.adversarial import AdversarialConfig, RobustEvaluation
from modeconn.defenses.repair import RepairConfig
from modeconn.training import TrainConfig


def _capture(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> dict[str, Any]:
    """Replace ``module.name`` by a recorder of its keyword arguments."""
    seen: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs, args=args)
        return {}

    monkeypatch.setattr(module, name, record)
    return seen


def test_train_defaults_are_the_library_defaults(monkeypatch, capsys, tmp_path: Path):
    seen = _capture(monkeypatch, train_commands, "run_train")
    assert run_cli(capsys, "train", "--out", tmp_path / "r").code == 0
    assert seen["config"] == TrainConfig()
    assert seen["adversarial"] is None and seen["robust"] is None
    assert seen["data"].dataset == "fashion-mnist" and seen["model"] == "lenet"


def test_adversarial_train_defaults_are_the_library_defaults(monkeypatch, capsys, tmp_path: Path):
    seen = _capture(monkeypatch, train_commands, "run_train")
    result = run_cli(capsys, "train", "--out", tmp_path / "r", "--adversarial", "pgd")
    assert result.code == 0
    assert seen["adversarial"] == AdversarialConfig()
    assert seen["robust"] == RobustEvaluation()


def test_poison_defaults_are_the_library_defaults(monkeypatch, capsys, tmp_path: Path):
    seen = _capture(monkeypatch, attack_commands, "run_poison")
    assert run_cli(capsys, "poison", "--out", tmp_path / "r").code == 0
    assert seen["spec"] == TriggerSpec()
    assert seen["config"] == TrainConfig()


def test_repair_defaults_are_the_library_defaults(monkeypatch, capsys, tmp_path: Path):
    seen = _capture(monkeypatch, repair_commands, "run_repair")
    assert run_cli(capsys, "repair", "model.safetensors", "--out", tmp_path / "r").code == 0
    assert seen["config"] == RepairConfig()
    assert seen["attack"] is None


def test_connect_defaults_are_the_reference_curve_settings(monkeypatch, capsys, tmp_path: Path):
    seen = _capture(monkeypatch, connect_commands, "run_connect")
    assert run_cli(capsys, "connect", "a", "b", "--out", tmp_path / "r").code == 0
    config = seen["config"]
    for key, value in CURVE_DEFAULTS.items():
        assert getattr(config, key) == value, key
    assert (seen["kind"], seen["num_bends"], seen["init"]) == ("bezier", 3, "linear")


def test_landscape_defaults_are_the_library_defaults(monkeypatch, capsys, tmp_path: Path):
    seen = _capture(monkeypatch, cli_landscape, "run_landscape")
    assert run_cli(capsys, "landscape", "m", "--out", tmp_path / "r").code == 0
    assert seen["config"] == LandscapeConfig()
    result = run_cli(capsys, "landscape", "m", "--out", tmp_path / "r", "--adversarial")
    assert result.code == 0
    assert seen["config"].adversarial == AttackConfig()


@pytest.mark.parametrize(
    ("value", "text"), [(8 / 255, "8/255"), (2 / 255, "2/255"), (0.1, "0.1"), (0.3, "0.3")]
)
def test_fraction_text_round_trips_through_the_parser(value: float, text: str):
    from modeconn.cli.common import parse_fraction

    assert fraction_text(value) == text
    assert parse_fraction(text, "--eps") == value
