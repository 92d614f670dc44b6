"""End to end on tiny settings: connect, path-eval, extract, surface, and their one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from modeconn.checkpoints import load_model
from modeconn.commands.train import run_train
from modeconn.data.prepare import DataConfig
from modeconn.training import TrainConfig

TINY = ["--epochs", "1", "--batch-size", "64", "--lr", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small digits MLPs from different seeds, with the attack field of one filled in."""
    paths = []
    for seed in (1, 2):
        out = tmp_path_factory.mktemp(f"mlp{seed}")
        run_train(
            out,
            model="mlp",
            model_kwargs={"hidden": [32]},
            data=DataConfig(dataset="digits"),
            config=TrainConfig(epochs=2, batch_size=64, seed=seed),
            attack={"type": "backdoor", "target": 0} if seed == 2 else None,
            progress=False,
        )
        paths.append(out / "model.safetensors")
    return paths[0], paths[1]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_connect_path_eval_extract(tmp_path: Path, capsys, two_models):
    a, b = two_models
    curve_dir = tmp_path / "curve"
    res = run_cli(capsys, "connect", a, b, "--out", curve_dir, "--t-per-batch", "2", *TINY)
    assert res.code == 0, res.err
    meta = json.loads((curve_dir / "curve.json").read_text())
    assert meta["kind"] == "curve" and meta["curve"]["num_bends"] == 3
    assert meta["dataset"] == "digits" and meta["train_split"] == "train"
    assert meta["endpoint_attacks"] == [None, {"type": "backdoor", "target": 0}]
    assert "mid_test_acc" in json.loads((curve_dir / "summary.json").read_text())

    ev = tmp_path / "eval"
    res = run_cli(capsys, "path-eval", curve_dir, "--out", ev, "--points", "3", "--quiet")
    assert res.code == 0, res.err
    rows = _rows(ev / "path.csv")
    assert [float(r["t"]) for r in rows] == [0.0, 0.5, 1.0]
    assert list(rows[0])[:5] == ["t", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert "asr" in rows[0]  # endpoint B's sidecar names a backdoor: path-eval measures it
    assert (ev / "segment.csv").exists() and (ev / "path.png").stat().st_size > 0
    summary = json.loads((ev / "summary.json").read_text())
    acc_a = load_model(a).meta["metrics"]["clean_acc"]
    assert summary["endpoint_a_test_error"] == pytest.approx(1 - acc_a, abs=1e-6)
    for key in ("max_test_error", "segment_mid_test_error", "endpoint_b_test_error"):
        assert 0 <= summary[key] <= 1

    ex = tmp_path / "extract"
    res = run_cli(capsys, "extract", curve_dir / "curve.safetensors", "--t", "0.3", "--out", ex)
    assert res.code == 0, res.err
    model = load_model(ex)
    assert model.meta["source"]["t"] == 0.3
    assert model.meta["endpoint_attacks"][1]["type"] == "backdoor"
    from modeconn.connectivity import load_curve

    curve, _, _ = load_curve(curve_dir)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.model(x), curve.model_at(0.3)(x))


@pytest.mark.slow
def test_connect_on_bonafide_data(tmp_path: Path, capsys, two_models):
    a, b = two_models
    out = tmp_path / "c"
    args_curve = ["--kind", "polychain", "--num-bends", "4"]
    args = ["--bonafide", "200", *args_curve, "--stratified"]
    res = run_cli(capsys, "connect", a, b, "--out", out, *args, *TINY)
    assert res.code == 0, res.err
    config = json.loads((out / "config.json").read_text())
    assert config["train_split"] == "bonafide" and config["data"]["bonafide"] == 200
    ev = tmp_path / "e"
    args = ["--points", "2", "--no-segment", "--train-eval-limit", "50", "-q"]
    res = run_cli(capsys, "path-eval", out, "--out", ev, *args)
    assert res.code == 0, res.err
    ev_config = json.loads((ev / "config.json").read_text())
    assert ev_config["bn_split"] == "bonafide" and ev_config["train_eval_limit"] == 50
    assert not (ev / "segment.csv").exists()

    again = tmp_path / "again"  # continue from the first curve's bends
    res = run_cli(capsys, "connect", a, b, "--out", again, "--init", out, *args_curve, *TINY)
    assert res.code == 0, res.err
    res = run_cli(capsys, "connect", a, b, "--out", tmp_path / "bad", "--init", out, *TINY)
    assert_one_line_error(res, "4-bend polychain, not a 3-bend bezier")


@pytest.mark.slow
def test_surface_end_to_end(tmp_path: Path, capsys, two_models):
    a, b = two_models
    out = tmp_path / "s"
    res = run_cli(capsys, "surface", a, b, b, a, "--out", out, "--grid", "3", *TINY)
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert {"ensemble_grid_acc", "ensemble_corners_acc", "best_u", "best_v"} <= set(summary)
    assert len(_rows(out / "grid.csv")) == 9
    assert (out / "surface.png").exists() and (out / "best.safetensors").exists()
    best = load_model(out / "best.safetensors")
    assert best.meta["source"]["kind"] == "surface"
    ex = tmp_path / "x"
    res = run_cli(capsys, "extract", out, "--u", "0.5", "--v", "0.25", "--out", ex)
    assert res.code == 0, res.err
    assert json.loads((ex / "summary.json").read_text())["v"] == 0.25


def test_clear_errors(tmp_path: Path, capsys, two_models, digits_lenet):
    a, b = two_models
    res = run_cli(capsys, "connect", a, digits_lenet, "--out", tmp_path / "x", *TINY)
    assert_one_line_error(res, "architectures of A and B differ", "arch")
    res = run_cli(capsys, "connect", a, tmp_path / "missing", "--out", tmp_path / "x", *TINY)
    assert_one_line_error(res, "not found")
    res = run_cli(capsys, "path-eval", a, "--out", tmp_path / "y")
    assert_one_line_error(res, "model checkpoint, not a curve")
    res = run_cli(capsys, "connect", a, b, "--out", tmp_path / "z", "--kind", "spline", *TINY)
    assert_one_line_error(res, "unknown curve kind")
    curve_dir = tmp_path / "c"
    assert run_cli(capsys, "connect", a, b, "--out", curve_dir, *TINY).code == 0
    res = run_cli(capsys, "extract", curve_dir, "--u", "0.1", "--v", "0.2", "--out", tmp_path / "e")
    assert_one_line_error(res, "--t")
    res = run_cli(capsys, "extract", curve_dir, "--t", "1.5", "--out", tmp_path / "e")
    assert_one_line_error(res, "[0, 1]")
    res = run_cli(capsys, "connect", a, b, "--out", curve_dir, *TINY)
    assert_one_line_error(res, "--force")
