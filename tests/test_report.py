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
    (path / "summary.json").write_text(
        json.dumps({"t": 0.4, "t_rule": "farthest from both", "clean_acc": 0.9, "asr": 0.01})
    )
    (path / "comparison.csv").write_text("model,clean_acc,asr,detail\npath repair,0.9,0.01,t=0.4\n")
    for name in ("repair_path", "other"):
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
    assert 'src="http' not in page and 'href="http' not in page


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


def test_report_cli(tmp_path: Path, capsys):
    run = fake_run(tmp_path / "run")
    res = run_cli(capsys, "report", run, "--output", tmp_path / "r.html")
    assert res.code == 0, res.err
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert_one_line_error(run_cli(capsys, "report", tmp_path / "nope"), "not found")
    (tmp_path / "unfinished").mkdir()
    assert_one_line_error(run_cli(capsys, "report", tmp_path / "unfinished"), "no summary.json")
