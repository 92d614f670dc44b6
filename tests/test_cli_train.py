"""End-to-end CLI: train, evaluate, resume, and the clear one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli
from conftest import needs_fmnist


@pytest.mark.slow
def test_train_and_evaluate_digits(tmp_path: Path, capsys):
    out = tmp_path / "run"
    res = run_cli(
        capsys,
        "train",
        "--model",
        "lenet",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--out",
        out,
        "--quiet",
    )
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clean_acc"] > 0.7
    assert "clean_acc" in res.out
    res = run_cli(capsys, "evaluate", out / "model.safetensors", "--out", tmp_path / "ev")
    assert res.code == 0, res.err
    again = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert abs(again["clean_acc"] - summary["clean_acc"]) < 1e-9


@pytest.mark.slow
def test_resume_flag_continues_interrupted_run(tmp_path: Path, capsys, monkeypatch):
    import modeconn.training as training

    out = tmp_path / "run"
    real_save = training.save_state

    def save_then_interrupt(run, model, optimizer, epoch, history):
        real_save(run, model, optimizer, epoch, history)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_state", save_then_interrupt)
    args = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "2", "--out", out, "-q"]
    res = run_cli(capsys, *args)
    assert res.code == 130 and "--resume" in res.err
    monkeypatch.setattr(training, "save_state", real_save)
    assert_one_line_error(run_cli(capsys, *args), "unfinished run", "--resume")
    res = run_cli(capsys, *args, "--resume")
    assert res.code == 0, res.err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_clear_errors(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("MODECONN_DATA", raising=False)
    assert_one_line_error(
        run_cli(
            capsys,
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            tmp_path / "none",
            "--out",
            tmp_path / "a",
        ),
        "train-images-idx3-ubyte",
    )
    assert_one_line_error(
        run_cli(
            capsys, "train", "--model", "resnet9000", "--dataset", "digits", "--out", tmp_path / "b"
        ),
        "resnet9000",
    )
    assert_one_line_error(
        run_cli(capsys, "train", "--dataset", "imagenet", "--out", tmp_path / "c"), "imagenet"
    )
    assert not (tmp_path / "c").exists()  # the data set is checked before the run directory
    # A model option the architecture does not take: one line, and no half-written run.
    bad_kwargs = ["--model", "lenet", "--model-kwargs", '{"hidden": [3]}', "--dataset", "digits"]
    assert_one_line_error(
        run_cli(capsys, "train", *bad_kwargs, "--out", tmp_path / "d"), "takes no option hidden"
    )
    assert not (tmp_path / "d").exists()
    assert_one_line_error(
        run_cli(capsys, "evaluate", tmp_path / "missing.safetensors"), "not found"
    )


def test_mismatched_weights_via_cli(tmp_path: Path, capsys, digits_lenet: Path):
    side = json.loads((digits_lenet / "model.json").read_text())
    side["model"]["arch"] = "mlp"
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes((digits_lenet / "model.safetensors").read_bytes())
    (fake / "model.json").write_text(json.dumps(side))
    assert_one_line_error(run_cli(capsys, "evaluate", fake), "does not match", "tensor '")


@pytest.mark.slow
def test_console_script_prints_one_line_without_traceback(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "modeconn.cli", "evaluate", str(tmp_path / "x.safetensors")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


@pytest.mark.slow
@needs_fmnist
def test_lenet_on_fashion_mnist_tiny(tmp_path: Path, capsys):
    res = run_cli(
        capsys,
        "train",
        "--model",
        "lenet",
        "--epochs",
        "1",
        "--train-limit",
        "2000",
        "--test-limit",
        "1000",
        "--out",
        tmp_path / "f",
        "-q",
    )
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "f" / "summary.json").read_text())["clean_acc"] > 0.6
