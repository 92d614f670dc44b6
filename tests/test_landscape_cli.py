"""End to end: `modeconn train --adversarial`, `modeconn hessian`, `modeconn landscape`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from modeconn.attacks.config import AttackConfig
from modeconn.commands.landscape import run_hessian


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Models this small run fastest on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second small digits model (another architecture) for mismatch errors."""
    from modeconn.commands.train import run_train
    from modeconn.data.prepare import DataConfig
    from modeconn.training import TrainConfig

    out = tmp_path_factory.mktemp("digits_mlp")
    run_train(
        out,
        model="mlp",
        model_kwargs={"hidden": [16]},
        data=DataConfig(dataset="digits"),
        config=TrainConfig(epochs=1, batch_size=64),
        progress=False,
        force=True,
    )
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_adversarial_with_awp(tmp_path: Path, capsys):
    out = tmp_path / "at"
    res = run_cli(
        capsys,
        *("train", "--model", "mlp", "--model-kwargs", '{"hidden": [32]}', "--dataset", "digits"),
        *("--epochs", "2", "--batch-size", "64", "--adversarial", "pgd", "--awp"),
        *("--awp-warmup", "1", "--eps", "0.1", "--alpha", "1/40", "--attack-steps", "3"),
        *("--robust-limit", "60", "--out", out, "-q"),
    )
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert {"clean_acc", "robust_acc", "robust_loss"} <= set(summary)
    assert 0.0 <= summary["robust_acc"] <= summary["clean_acc"] + 0.05
    assert "robust_acc" in res.out
    config = json.loads((out / "config.json").read_text())
    assert config["adversarial"] == {
        "method": "pgd",
        "attack": AttackConfig(eps=0.1, alpha=0.025, steps=3).to_dict(),
        "trades_beta": 6.0,
        "awp": True,
        "awp_gamma": 0.01,
        "awp_warmup": 1,
    }
    assert config["robust_eval"]["limit"] == 60


def test_plain_train_reports_robust_figures_on_request(tmp_path: Path, capsys):
    args = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "-q"]
    res = run_cli(capsys, *args, "--out", tmp_path / "a")
    assert res.code == 0, res.err
    assert "robust_acc" not in json.loads((tmp_path / "a" / "summary.json").read_text())
    res = run_cli(capsys, *args, "--robust", "--robust-limit", "50", "--out", tmp_path / "b")
    assert res.code == 0, res.err
    assert "robust_acc" in json.loads((tmp_path / "b" / "summary.json").read_text())


def test_hessian_command(tmp_path: Path, capsys, digits_lenet):
    out = tmp_path / "h"
    res = run_cli(
        capsys, "hessian", digits_lenet, "--limit", "40", "--method", "lanczos", "--out", out
    )
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 40
    assert summary["input_hessian_lmax_max"] >= summary["input_hessian_lmax"] > 0
    assert summary["input_hessian_converged"] == 1.0
    rows = _rows(out / "eigenvalues.csv")
    assert len(rows) == 40
    mean = sum(float(r["lmax"]) for r in rows) / 40
    assert mean == pytest.approx(summary["input_hessian_lmax"], rel=1e-4)
    assert (out / "input_hessian.png").stat().st_size > 0
    # the power method agrees with Lanczos (same images, same tolerance)
    power = run_hessian(digits_lenet, limit=40, method="power", tol=1e-4)
    assert power["input_hessian_lmax"] == pytest.approx(summary["input_hessian_lmax"], rel=1e-2)


@pytest.mark.slow
def test_landscape_command(tmp_path: Path, capsys, digits_lenet):
    other = tmp_path / "other"
    res = run_cli(
        capsys,
        *("train", "--dataset", "digits", "--epochs", "1", "--seed", "1", "--out", other, "-q"),
    )
    assert res.code == 0, res.err
    out = tmp_path / "land"
    res = run_cli(
        capsys,
        *("landscape", digits_lenet, "--out", out, "--through", other, "--limit", "64"),
        *("--top-k", "2", "--trace-samples", "5", "--density-steps", "8", "--points", "3"),
        *("--grid", "2", "--adversarial", "--eps", "0.05", "--alpha", "0.02"),
        *("--attack-steps", "2", "--robust-limit", "20", "-q"),
    )
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hessian_eig_1"] >= summary["hessian_eig_2"]
    assert summary["hessian_trace"] > 0
    for name in ("hessian_top", "hessian_density", "scan_1d", "scan_2d", "line"):
        assert (out / f"{name}.csv").exists(), name
        assert (out / f"{name}.png").stat().st_size > 0, name
    line = _rows(out / "line.csv")
    assert [float(r["t"]) for r in line] == [-0.25, 0.5, 1.25]
    assert {"loss", "acc", "robust_loss", "robust_acc"} <= set(line[0])
    assert len(_rows(out / "scan_2d.csv")) == 4
    scan = _rows(out / "scan_1d.csv")
    assert all(float(r["robust_loss"]) >= float(r["loss"]) for r in scan)


@pytest.mark.slow
def test_landscape_plane(tmp_path: Path, capsys, digits_lenet):
    others = []
    for seed in (1, 2):
        path = tmp_path / f"m{seed}"
        args = ("train", "--dataset", "digits", "--epochs", "1", "--seed", seed, "--out", path)
        assert run_cli(capsys, *args, "-q").code == 0
        others.append(path)
    out = tmp_path / "plane"
    res = run_cli(
        capsys,
        *("landscape", digits_lenet, "--out", out, "--through", others[0], "--through"),
        *(others[1], "--no-spectrum", "--no-scan-1d", "--no-scan-2d", "--grid", "3"),
        *("--limit", "50", "-q"),
    )
    assert res.code == 0, res.err
    assert len(_rows(out / "plane.csv")) == 9
    assert (out / "plane.png").stat().st_size > 0


def test_clear_errors(tmp_path: Path, capsys, digits_lenet, digits_mlp):
    train = ["train", "--dataset", "digits", "--epochs", "1", "-q"]
    assert_one_line_error(
        run_cli(capsys, *train, "--adversarial", "fgsm", "--out", tmp_path / "a"),
        "unknown adversarial training 'fgsm'",
    )
    assert_one_line_error(
        run_cli(capsys, *train, "--adversarial", "pgd", "--eps", "8/0", "--out", tmp_path / "b"),
        "--eps",
    )
    assert_one_line_error(
        run_cli(capsys, *train, "--awp", "--out", tmp_path / "c"), "--adversarial"
    )
    assert_one_line_error(run_cli(capsys, "hessian", tmp_path / "missing"), "model file not found")
    assert_one_line_error(
        run_cli(capsys, "hessian", digits_lenet, "--method", "qr"),
        "unknown method 'qr'",
        "(--method)",
    )
    assert_one_line_error(
        run_cli(
            capsys,
            "hessian",
            digits_lenet,
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            tmp_path / "none",
        ),
        "train-images-idx3-ubyte",
    )
    assert_one_line_error(
        run_cli(
            capsys, "landscape", digits_lenet, "--out", tmp_path / "l", "--through", digits_mlp
        ),
        "different architecture",
    )
    assert not (tmp_path / "l").exists()
    three = ["--through", digits_lenet] * 3
    assert_one_line_error(
        run_cli(capsys, "landscape", digits_lenet, "--out", tmp_path / "l3", *three),
        "one model (a line) or two (a plane)",
    )
    assert not (tmp_path / "l3").exists()
