"""``modeconn reproduce``: the claims end to end on the quick digits settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
    assert after["seconds"] < before["seconds"] / 3  # every step reused, nothing retrained
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
