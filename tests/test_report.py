"""The HTML report: self-contained, and it renders with its figures in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cli_helpers import assert_one_line_error, run_cli

from modeconn.report.html import render_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def fake_run(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(
        json.dumps({"command": "repair", "repair": {"points": 3}, "versions": {"torch": "x"}})
    )
    summary = {"t": 0.4, "t_rule": "farthest from both", "clean_acc": 0.9, "asr": 0.01}
    summary.update(method="path repair", choice_rule="best held-out", tampered_asr=0.99)
    summary.update(tampered_clean_acc=0.91, retuning_asr=0.2)
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "comparison.csv").write_text("model,clean_acc,asr,detail\npath repair,0.9,0.01,t=0.4\n")
    for name, verdict in (("tampered", "backdoor suspected: class 0"), ("path_repair", "no class")):
        (path / "scans" / name).mkdir(parents=True)
        (path / "scans" / name / "summary.json").write_text(json.dumps({"verdict": verdict}))
    for name in ("repair_candidates", "repair_path"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1], color="tab:red")
        fig.savefig(path / f"{name}.png")
        plt.close(fig)
    return path


def test_report_is_self_contained(tmp_path: Path):
    run = fake_run(tmp_path / "run")
    page = render_report(run)
    assert page.count("data:image/png;base64,") == 2
    assert "farthest from both" in page and "path repair" in page
    verdict = page.index("<h2>Verdict</h2>")
    assert verdict < page.index("<h2>Summary</h2>")  # the page leads with the verdict
    assert "backdoor suspected: class 0" in page and "no class" in page
    assert (
        "attack success 1.0% (tampered 99.0%)" in page and "after the retuning attack 20.0%" in page
    )
    assert page.index("repair candidates") < page.index("<h2>Summary</h2>")  # the lead figure
    assert 'src="http' not in page and 'href="http' not in page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path):
    run = fake_run(tmp_path / "run")
    report = write_report(run)
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-figures-rendered="2"' in proc.stdout
    assert "<table>" in proc.stdout
    assert "Verdict" in proc.stdout and "backdoor suspected: class 0" in proc.stdout


@pytest.mark.slow
def test_report_cli(tmp_path: Path, capsys):
    run = fake_run(tmp_path / "run")
    res = run_cli(capsys, "report", run, "--output", tmp_path / "r.html")
    assert res.code == 0, res.err
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert_one_line_error(run_cli(capsys, "report", tmp_path / "nope"), "not found")
    (tmp_path / "unfinished").mkdir()
    assert_one_line_error(run_cli(capsys, "report", tmp_path / "unfinished"), "no summary.json")
