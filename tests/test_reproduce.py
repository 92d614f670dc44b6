"""``modeconn reproduce``: the claims end to end on the quick digits settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from modeconn.io import read_table
from modeconn.landscape.metrics import robust_barrier_figures


def test_robust_barrier_figures_need_an_interior_point():
    rows = [{"t": 0.0, "test_loss": 1.0, "robust_loss": 2.0}] * 2
    with pytest.raises(ValueError, match="inside the path"):
        robust_barrier_figures(rows)


def test_robust_barrier_figures_of_a_monotone_path_show_no_barrier():
    rows = [
        {"t": t, "test_loss": 0.5, "robust_loss": 3.0 - 2.0 * t, "input_hessian_lmax": 9 - 8 * t}
        for t in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    figures = robust_barrier_figures(rows)
    assert figures["robust_excess"] < 0  # the interior stays below the regular endpoint
    assert figures["standard_excess"] == 0.0
    assert figures["pcc_robust_loss_lmax"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def quick_barrier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modeconn.commands.reproduce import run_reproduce

    out = tmp_path_factory.mktemp("reproduce") / "barrier"
    run_reproduce("robust-barrier", out, quick=True, progress=False)
    return out


@pytest.mark.slow
def test_robust_barrier_quick_writes_figure_table_and_verdict(quick_barrier: Path):
    summary = json.loads((quick_barrier / "summary.json").read_text())
    assert isinstance(summary["holds"], bool) and summary["seeds_holding"].endswith("/1")
    assert "robust loss" in summary["claim"]
    for name in ("table.csv", "table.md", "robust_barrier.png", "config.json"):
        assert (quick_barrier / name).exists(), name
    for step in ("regular", "adversarial", "curve", "path"):
        assert (quick_barrier / "seed_0" / step / "summary.json").exists(), step
    # The verdict's figures are those of the path table the experiment measured.
    rows = read_table(quick_barrier / "seed_0" / "path" / "path.csv")
    assert len(rows) == 5 and {"robust_loss", "input_hessian_lmax"} <= set(rows[0])
    figures = robust_barrier_figures(rows)
    assert summary["seed0_robust_excess"] == pytest.approx(figures["robust_excess"])
    assert summary["seed0_standard_excess"] == pytest.approx(figures["standard_excess"])
    # The endpoints are what the claim needs: adversarial training made t = 1 more robust.
    (row,) = read_table(quick_barrier / "table.csv")
    assert row["adversarial_robust_acc"] > row["regular_robust_acc"] + 0.2
    assert rows[-1]["robust_loss"] < rows[0]["robust_loss"]
    assert "| seed |" in (quick_barrier / "table.md").read_text()


@pytest.mark.slow
def test_reproduce_reuses_finished_steps_and_refuses_other_settings(quick_barrier: Path, capsys):
    before = json.loads((quick_barrier / "summary.json").read_text())
    result = run_cli(capsys, "reproduce", "robust-barrier", "--quick", "--out", quick_barrier, "-q")
    assert result.code == 0, result.err
    assert "the claim" in result.out
    after = json.loads((quick_barrier / "summary.json").read_text())
    # Every step reused, nothing retrained; the re-aggregation adds its time to the run's.
    assert before["seconds"] <= after["seconds"] < before["seconds"] * 4 / 3
    assert after["seed0_robust_excess"] == before["seed0_robust_excess"]
    other = run_cli(
        capsys, "reproduce", "robust-barrier", "--quick", "--seeds", "5", "--out", quick_barrier
    )
    assert_one_line_error(other, "options differ")


@pytest.mark.slow
def test_report_leads_with_the_claims_verdict(quick_barrier: Path, capsys):
    result = run_cli(capsys, "report", quick_barrier, "--output", quick_barrier / "r.html")
    assert result.code == 0, result.err
    page = (quick_barrier / "r.html").read_text()
    assert "The claim holds" in page or "The claim does not hold" in page
    assert page.index("Verdict") < page.index("Summary")
    assert "data:image/png;base64" in page


def test_unknown_experiment_is_one_line_and_writes_nothing(tmp_path: Path, capsys):
    result = run_cli(capsys, "reproduce", "nope", "--out", tmp_path / "x")
    assert_one_line_error(result, "unknown experiment 'nope'", "robust-barrier")
    assert result.code == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_awp_quick_measures_the_overfitting_gap_with_and_without_awp(tmp_path: Path):
    from modeconn.commands.reproduce import run_reproduce

    out = tmp_path / "awp"
    summary = run_reproduce("awp", out, quick=True, progress=False)
    assert isinstance(summary["holds"], bool)
    assert summary["at_overfits"] == (summary["gap_at_mean"] <= -0.02)
    narrower = summary["gap_awp_mean"] > summary["gap_at_mean"]
    assert summary["holds"] == (summary["at_overfits"] and narrower)
    for name in ("table.csv", "table.md", "robust_overfitting.png"):
        assert (out / name).exists(), name
    rows = read_table(out / "table.csv")
    assert [r["awp"] for r in rows] == [0.0, 1.0]
    for row, key in zip(rows, ("at", "awp"), strict=True):
        assert row["gap"] <= 0.0  # the last epoch can at best equal the best one
        assert row["gap"] == pytest.approx(
            row["last_robust_acc"] - row["best_robust_acc"], abs=1e-5
        )
        assert summary[f"seed0_{key}_gap"] == pytest.approx(row["gap"], abs=1e-5)
        assert row["train_test_gap"] == pytest.approx(
            row["last_train_robust_acc"] - row["last_robust_acc"], abs=1e-5
        )
        assert summary[f"train_test_gap_{key}_mean"] == pytest.approx(
            row["train_test_gap"], abs=1e-5
        )
        history = [
            json.loads(line)
            for line in (out / "seed_0" / key / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(history) == 10 and all("robust_acc" in r for r in history)
        assert max(r["robust_acc"] for r in history) == pytest.approx(
            row["best_robust_acc"], abs=1e-5
        )
    config = json.loads((out / "seed_0" / "awp" / "config.json").read_text())
    assert config["adversarial"]["awp"] is True and config["robust_each_epoch"] is True
    # the settings reach the training step
    assert config["train"]["batch_size"] == 128 and config["train"]["weight_decay"] == 5e-4
    assert config["adversarial"]["awp_warmup"] == 0 and config["model"] == "lenet"


def test_awp_settings_overfit_by_default_and_keep_the_earlier_setting_reachable():
    """The default trains a wide MLP on few images for many small steps without weight decay
    (where PGD-AT overfits on Fashion-MNIST); the earlier lenet setting is a few --set away."""
    from modeconn.commands.reproduce import AWPSettings, with_overrides

    full = AWPSettings()
    steps = full.epochs * -(-full.train_limit // full.batch_size)
    assert full.model == "mlp" and full.weight_decay == 0.0 and steps >= 1500
    earlier = with_overrides(
        full,
        {
            "model": "lenet",
            "model_kwargs": {},
            "train_limit": 2000,
            "epochs": 20,
            "batch_size": 128,
            "weight_decay": 5e-4,
        },
    ).validate()
    assert (earlier.model, earlier.batch_size, earlier.weight_decay) == ("lenet", 128, 5e-4)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"epochs": 1}, "epochs must be at least 2"),
        ({"awp_warmup": 10}, "awp_warmup must be at least 0 and below epochs"),
        ({"awp_warmup": -1}, "awp_warmup must be at least 0"),
        ({"seeds": ()}, "give at least one seed"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"weight_decay": -0.1}, "weight_decay must be non-negative"),
        ({"awp_gamma": 0.0}, "awp_gamma must be positive"),
        ({"model": "nope"}, "unknown architecture 'nope'"),
    ],
)
def test_awp_settings_reject_bad_values(change: dict, fragment: str):
    from dataclasses import replace

    from modeconn.commands.reproduce import AWPSettings
    from modeconn.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=fragment):
        replace(AWPSettings.quick(), **change).validate()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"grid": 4}, "grid must be odd"),
        ({"num_bends": (2, 3)}, "num_bends counts the control points"),
        ({"no_opt_centre": "middle"}, "unknown centre 'middle'"),
        ({"val_size": 0}, "val_size must be at least 1"),
    ],
)
def test_surface_settings_reject_bad_values(change: dict, fragment: str):
    from dataclasses import replace

    from modeconn.commands.reproduce.surface import SurfaceSettings
    from modeconn.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=fragment):
        replace(SurfaceSettings.quick(), **change).validate()


def test_model_options_are_checked_first_and_another_model_drops_the_settings_ones(
    tmp_path: Path, capsys
):
    out = tmp_path / "x"
    # The quick surface's corners are MLPs with {"hidden": [64]}; --set applies after --model.
    bad = ["--model", "lenet", "--set", 'model_kwargs={"hiden": [3]}', "--out", out]
    result = run_cli(capsys, "reproduce", "surface", "--quick", *bad)
    assert_one_line_error(result, "'lenet' takes no option hiden")
    assert not out.exists()
    # --model lenet alone does not carry the MLP's "hidden" over: the next check is the seeds'.
    result = run_cli(
        capsys, "reproduce", "surface", "--quick", "--model", "lenet", "--seeds", "-1", "--out", out
    )
    assert_one_line_error(result, "seeds must be non-negative")
    assert not out.exists()


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (["--set", "dataset=nope"], "unknown dataset 'nope'"),
        (["--model", "nope"], "unknown architecture 'nope'"),
    ],
)
@pytest.mark.parametrize("name", ["surface", "awp", "robust-barrier"])
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys, name: str, bad: list[str], fragment: str
):
    out = tmp_path / "x"
    result = run_cli(capsys, "reproduce", name, "--quick", *bad, "--out", out)
    assert_one_line_error(result, fragment)
    assert result.code == 2
    assert not out.exists()


@pytest.fixture(scope="module")
def quick_surface(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modeconn.commands.reproduce import run_reproduce

    out = tmp_path_factory.mktemp("reproduce") / "surface"
    run_reproduce("surface", out, quick=True, progress=False)
    return out


@pytest.mark.slow
def test_surface_quick_measures_the_claim_on_trained_and_untrained_surfaces(quick_surface: Path):
    from modeconn.checkpoints import load_model
    from modeconn.connectivity.checkpoints import load_curve, load_surface
    from modeconn.connectivity.surfaces import corner_indices

    out = quick_surface
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "surface" and summary["seeds_holding"].endswith("/1")
    for name in ("table.csv", "table.md", "surface_claim.png", "config.json"):
        assert (out / name).exists(), name
    for step in ("corner_a", "aligned_d", "curve_ab", "curve_bd", "no_opt", "surface"):
        assert (out / "seed_0" / step / "summary.json").exists(), step
    # Four models of different seeds on one split, so the held-out images stay held out for all.
    configs = {
        step: json.loads((out / "seed_0" / step / "config.json").read_text())
        for step in ("corner_a", "corner_b", "corner_c", "corner_d", "curve_ab", "surface")
    }
    assert {c["data"]["seed"] for c in configs.values()} == {0}
    assert {c["data"]["val_size"] for c in configs.values()} == {200}
    assert [configs[f"corner_{k}"]["train"]["seed"] for k in "abcd"] == [0, 1, 2, 3]
    for prefix in ("", "no_opt_"):
        grid = read_table(out / "seed_0" / ("surface" if not prefix else "no_opt") / "grid.csv")
        assert len(grid) == 25 and "holdout_loss" in grid[0]
        corners = [r for r in grid if r["u"] in (0.0, 1.0) and r["v"] in (0.0, 1.0)]
        ratio = max(r["test_loss"] for r in grid) / max(r["test_loss"] for r in corners)
        assert summary[f"seed0_{prefix}loss_ratio"] == pytest.approx(ratio, rel=1e-5)
        assert summary[f"seed0_{prefix}holds"] == (ratio <= 1.25)
        # The best point is the one of lowest loss on held-out training images, not on test.
        best = min(grid, key=lambda r: r["holdout_loss"])
        assert summary[f"seed0_{prefix}best_test_acc"] == pytest.approx(best["test_acc"])
        for comparison in ("best_vs_best_corner", "ensemble_vs_corners_ensemble"):
            difference = summary[f"seed0_{prefix}{comparison}_acc"]
            verdict = summary[f"seed0_{prefix}{comparison}"]
            assert verdict == "tie" or verdict.startswith(
                "surface" if difference > 0 else "corners"
            )
    assert summary["holds"] == summary["seed0_holds"]
    # Real models: the corners and their weight average are far above chance (10 classes).
    assert 0.85 < summary["seed0_best_corner_test_acc"] <= 1.0
    assert 0.5 < summary["seed0_average_test_acc"] <= 1.0
    # Weight matching lowered the straight line's barrier from A to every other corner.
    for name in "bcd":
        assert summary[f"seed0_barrier_aligned_{name}"] < summary[f"seed0_barrier_unaligned_{name}"]
    # The untrained surface is the four trained curves: its edge control point on v = 0 is the
    # middle control point of curve A–B, and its corners are the aligned models.
    surface, _, _ = load_surface(out / "seed_0" / "no_opt_surface")
    curve, _, _ = load_curve(out / "seed_0" / "curve_ab")
    for name, value in curve.control_points()[1].items():
        assert torch.equal(surface.control_point(3)[name], value)
    trained, _, _ = load_surface(out / "seed_0" / "surface")
    for mine, theirs in zip(corner_indices(*trained.degrees), corner_indices(2, 2), strict=True):
        for name, value in trained.control_point(mine).items():
            assert torch.equal(surface.control_point(theirs)[name], value)
    aligned_d = dict(load_model(out / "seed_0" / "aligned_d").model.named_parameters())
    for name, value in trained.control_point(corner_indices(*trained.degrees)[3]).items():
        assert torch.equal(aligned_d[name].detach(), value)
    md = (out / "table.md").read_text()
    assert "weight average of the corners" in md and "no-optimisation surface: best point" in md


@pytest.mark.slow
def test_surface_cli_end_to_end_is_deterministic(quick_surface: Path, tmp_path: Path, capsys):
    out = tmp_path / "surface"
    result = run_cli(capsys, "reproduce", "surface", "--quick", "--out", out, "-q")
    assert result.code == 0, result.err
    assert "surface: the claim" in result.out
    first = json.loads((quick_surface / "summary.json").read_text())
    second = json.loads((out / "summary.json").read_text())
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    assert (out / "table.csv").read_text() == (quick_surface / "table.csv").read_text()


@pytest.mark.parametrize(
    ("assignment", "fragment"),
    [
        ("nope=1", "unknown setting nope"),
        ("grid=4", "grid must be odd"),
        ("align=1", "setting align takes a value like True"),
        ("grid", "--set takes NAME=VALUE"),
    ],
)
def test_reproduce_set_rejects_bad_settings_in_one_line(
    tmp_path: Path, capsys, assignment: str, fragment: str
):
    out = tmp_path / "x"
    result = run_cli(capsys, "reproduce", "surface", "--quick", "--set", assignment, "--out", out)
    assert_one_line_error(result, fragment)
    assert result.code == 2
    assert not out.exists()


def test_with_overrides_replaces_fields_with_their_types():
    from modeconn.commands.reproduce import AWPSettings, with_overrides
    from modeconn.commands.reproduce.surface import SurfaceSettings

    changed = with_overrides(
        SurfaceSettings(), {"num_bends": [4, 4], "model_kwargs": {"hidden": [512]}, "lr": 1}
    )
    assert changed.num_bends == (4, 4) and changed.model_kwargs == {"hidden": [512]}
    assert changed.lr == 1 and changed.align is True
    awp = with_overrides(AWPSettings(), {"attack": {"eps": 0.2}, "train_limit": None})
    assert awp.attack.eps == 0.2 and awp.attack.steps == AWPSettings().attack.steps
    assert awp.train_limit is None
