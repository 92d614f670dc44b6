"""path-eval with metrics: the robust-loss barrier columns and the segment between two models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from modeconn.commands.train import run_train
from modeconn.data.prepare import DataConfig
from modeconn.io import read_table
from modeconn.training import TrainConfig


@pytest.mark.slow
def test_robust_path_eval_of_a_segment(tmp_path: Path, capsys, digits_lenet: Path):
    other = tmp_path / "other"
    run_train(
        other,
        model="lenet",
        data=DataConfig(dataset="digits"),
        config=TrainConfig(epochs=2, batch_size=64, seed=1),
        progress=False,
    )
    out = tmp_path / "path"
    res = run_cli(
        capsys,
        "path-eval",
        digits_lenet,
        other,
        "--out",
        out,
        "--points",
        "3",
        "--robust",
        "--eps",
        "8/255",
        "--attack-steps",
        "3",
        "--robust-limit",
        "40",
        "--hessian-limit",
        "10",
        "-q",
    )
    assert res.code == 0, res.err
    rows = read_table(out / "path.csv")
    assert [r["t"] for r in rows] == [0.0, 0.5, 1.0]
    for row in rows:
        assert 0.0 <= row["robust_acc"] <= row["test_acc"] + 1e-9  # PGD never helps
        assert row["robust_loss"] >= row["test_loss"] - 0.5
        assert row["input_hessian_lmax"] >= 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert {"robust_barrier", "test_barrier", "pcc_robust_loss_lmax"} <= set(summary)
    assert (out / "robust_path.png").exists()
    assert (out / "segment_curve.safetensors").exists()
    assert_one_line_error(
        run_cli(capsys, "path-eval", digits_lenet, other, "--out", out, "--points", "3"),
        "finished run",
    )
    assert_one_line_error(
        run_cli(capsys, "path-eval", digits_lenet, other, digits_lenet, "--out", tmp_path / "x"),
        "two models",
    )
