"""End-to-end CLI: ``poison``, ``inject`` and ``attack`` on digits, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from modeconn.attacks.backdoor import TriggerSpec
from modeconn.checkpoints import load_model

TINY = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--quiet"]


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modeconn.cli import main

    out = tmp_path_factory.mktemp("cli_attack") / "poisoned"
    main(
        [
            "poison",
            "--trigger",
            "patch",
            "--target",
            "0",
            "--rate",
            "0.1",
            "--model",
            "mlp",
            "--out",
            str(out),
            *TINY,
        ]
    )
    return out


def test_poison_writes_summary_and_sidecar(poisoned: Path):
    summary = summary_of(poisoned)
    assert {"clean_acc", "asr", "poisoned_acc", "poisoned_samples"} <= set(summary)
    ckpt = load_model(poisoned)
    spec = TriggerSpec.from_dict(ckpt.attack)
    assert (spec.type, spec.target, spec.rate, spec.label_mode) == ("patch", 0, 0.1, "all-to-one")
    config = json.loads((poisoned / "config.json").read_text())
    assert config["command"] == "poison" and config["attack"]["type"] == "backdoor"


def test_poison_blend_all_to_all(tmp_path: Path, capsys):
    out = tmp_path / "blend"
    res = run_cli(
        capsys,
        "poison",
        "--trigger",
        "blend",
        "--blend-alpha",
        "0.3",
        "--label-mode",
        "all-to-all",
        "--model",
        "mlp",
        "--out",
        out,
        *TINY,
    )
    assert res.code == 0, res.err
    assert "asr" in res.out
    spec = TriggerSpec.from_dict(load_model(out).attack)
    assert (spec.type, spec.alpha, spec.label_mode) == ("blend", 0.3, "all-to-all")


def test_inject_end_to_end(poisoned: Path, tmp_path: Path, capsys):
    out = tmp_path / "inj"
    res = run_cli(
        capsys,
        "inject",
        poisoned,
        "--out",
        out,
        "--num-targets",
        "2",
        "--num-keep",
        "300",
        "--steps",
        "300",
    )
    assert res.code == 0, res.err
    summary = summary_of(out)
    assert {"injection_success", "clean_acc", "changed_weights", "change_l2"} <= set(summary)
    attack = load_model(out).attack
    assert attack["type"] == "injection" and len(attack["targets"]) == 2
    res = run_cli(
        capsys,
        "inject",
        poisoned,
        "--out",
        tmp_path / "explicit",
        "--targets",
        "0,1",
        "--labels",
        "5,5",
        "--num-keep",
        "100",
        "--steps",
        "50",
    )
    assert res.code == 0, res.err
    attack = load_model(tmp_path / "explicit").attack
    assert attack["targets"] == [0, 1] and attack["labels"] == [5, 5]


@pytest.mark.parametrize(
    "extra",
    [
        ["--attack", "pgd", "--eps", "0.1", "--steps", "5"],
        ["--attack", "fgsm", "--eps", "8/255"],
        ["--attack", "apgd-ce", "--eps", "0.1", "--steps", "5"],
        ["--attack", "apgd-t", "--eps", "0.1", "--steps", "3"],
        ["--attack", "pgd", "--norm", "l2", "--eps", "0.5", "--restarts", "2", "--steps", "3"],
    ],
)
def test_attack_end_to_end(poisoned: Path, tmp_path: Path, capsys, extra):
    out = tmp_path / "atk"
    res = run_cli(capsys, "attack", poisoned, "--out", out, "--test-limit", "60", *extra)
    assert res.code == 0, res.err
    summary = summary_of(out)
    assert set(summary) >= {"robust_acc", "robust_loss", "clean_acc", "clean_loss"}
    assert summary["robust_acc"] <= summary["clean_acc"]
    assert summary["robust_loss"] >= summary["clean_loss"] - 1e-6


def test_attack_refuses_to_overwrite(poisoned: Path, tmp_path: Path, capsys):
    out = tmp_path / "atk"
    args = ["attack", poisoned, "--out", out, "--test-limit", "20", "--steps", "1"]
    assert run_cli(capsys, *args).code == 0
    assert_one_line_error(run_cli(capsys, *args), "--force")
    assert run_cli(capsys, *args, "--force").code == 0


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["attack", "{missing}", "--out", "{out}"], ["not found"]),
        (["attack", "{model}", "--out", "{out}", "--eps", "abc"], ["--eps", "8/255"]),
        (["attack", "{model}", "--out", "{out}", "--attack", "cw"], ["unknown attack"]),
        (
            ["attack", "{model}", "--out", "{out}", "--norm", "l1"],
            ["unknown norm 'l1'", "(--norm)"],
        ),
        (["attack", "{model}", "--out", "{out}", "--restarts", "0"], ["restarts"]),
        (["inject", "{model}", "--out", "{out}", "--norm", "l3"], ["unknown norm"]),
        (["inject", "{model}", "--out", "{out}", "--targets", "a,b"], ["--targets"]),
        (["inject", "{model}", "--out", "{out}", "--targets", "99999"], ["target image"]),
        (["inject", "{model}", "--out", "{out}", "--param", "net.x.weight"], ["no parameter"]),
        (["poison", "--out", "{out}", "--trigger", "sticker", *TINY], ["unknown trigger"]),
        (["poison", "--out", "{out}", "--target", "10", *TINY], ["target class 10"]),
        (["poison", "--out", "{out}", "--rate", "1.5", *TINY], ["rate"]),
        (["poison", "--out", "{out}", "--patch-size", "9", *TINY], ["does not fit"]),
        (["poison", "--out", "{out}", "--label-mode", "x", *TINY], ["label mode"]),
    ],
)
def test_bad_input_gives_one_line_errors(poisoned: Path, tmp_path: Path, capsys, args, fragments):
    subst = {
        "{missing}": str(tmp_path / "nope"),
        "{model}": str(poisoned),
        "{out}": str(tmp_path / "o"),
    }
    result = run_cli(capsys, *[subst.get(a, a) for a in args])
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "o" / "summary.json").exists()
