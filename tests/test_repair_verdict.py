"""Honest verdicts: a repair that cannot be verified without the trigger says so first — in the
summary, on the terminal and at the top of the report (built from hand-made results, no training).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from torch import nn

from modeconn.cli.repair import print_verdict
from modeconn.commands.repair import repair_summary
from modeconn.defenses.repair import (
    ATTACK_NOT_MEASURED,
    ENDPOINT_B,
    TAMPERED,
    Candidate,
    RepairResult,
    repair_warnings,
)
from modeconn.defenses.scan import ScanResult
from modeconn.report.html import render_report

PATH, NC = "path repair", "NC-unlearning"


def scan(flagged: list[int], untargeted: float | None = None) -> ScanResult:
    """A scan result by hand: class 0's index is 5 when flagged, 1 otherwise."""
    index = [5.0 if 0 in flagged else 1.0] + [0.0] * 9
    return ScanResult({}, {}, index, flagged, 3.0, untargeted_index=untargeted)


def result(scans: dict[str, ScanResult], chosen: str = NC) -> RepairResult:
    """A repair result with the two default candidates and the given scans."""
    figures = {"clean_acc": 0.9, "clean_loss": 0.3, "asr": 0.01}
    candidates = [Candidate(PATH, dict(figures)), Candidate(NC, dict(figures))]
    return RepairResult(
        chosen=next(c for c in candidates if c.name == chosen),
        chosen_model=nn.Identity(),
        choice_rule=f"{chosen}: the rule",
        candidates=candidates,
        references=[Candidate(TAMPERED, {"clean_acc": 0.91, "asr": 0.99})],
        baselines=[],
        scans=scans,
        path=None,
        path_candidate=PATH,
        noisy_rows=[],
        timings={"scan": 1.0},
    )


def test_a_found_backdoor_that_the_returned_model_passes_is_verified():
    found = result({TAMPERED: scan([0]), PATH: scan([]), NC: scan([])})
    assert repair_warnings(found) == []
    untargeted = result({TAMPERED: scan([], untargeted=1.7), PATH: scan([]), NC: scan([])})
    assert repair_warnings(untargeted) == []  # a label flipper is a finding too
    second = result({TAMPERED: scan([]), ENDPOINT_B: scan([0]), PATH: scan([]), NC: scan([])})
    assert repair_warnings(second) == []  # B's triggers were unlearnt as well


def test_nothing_found_in_the_tampered_model_is_said_first():
    blind = result({TAMPERED: scan([]), PATH: scan([0]), NC: scan([0])})
    warnings = repair_warnings(blind)
    assert len(warnings) == 2
    assert "found no backdoor in the tampered model" in warnings[0]
    assert "nothing was found to unlearn" in warnings[0] and "cannot be verified" in warnings[0]
    assert "every candidate" in warnings[1] and "may not have worked" in warnings[1]
    two = result({TAMPERED: scan([]), ENDPOINT_B: scan([]), PATH: scan([]), NC: scan([])})
    assert repair_warnings(two) == [repair_warnings(two)[0]]
    assert "either tampered model" in repair_warnings(two)[0]
    assert "near the threshold" not in repair_warnings(two)[0]


def test_nothing_found_near_the_threshold_says_a_backdoor_cannot_be_ruled_out():
    near = scan([])
    near.draw_suspicions = [1.1, 0.8, 0.9]
    warning = repair_warnings(result({TAMPERED: near, PATH: scan([]), NC: scan([])}))[0]
    assert "near the threshold" in warning and "over 3 draws" in warning
    assert f"class {near.top_class}" in warning and "cannot be ruled out" in warning


def test_classes_unlearnt_as_a_precaution_are_named_in_the_warning_and_summary():
    blind = result({TAMPERED: scan([]), PATH: scan([]), NC: scan([])})
    blind.precautions = [8]
    (warning,) = repair_warnings(blind)
    assert "nothing was found to unlearn (class 8, near the threshold, was unlearnt" in warning
    assert "cannot be verified" in warning
    assert repair_summary(blind, None, 300)["precaution_classes"] == [8]
    found = result({TAMPERED: scan([0]), PATH: scan([]), NC: scan([])})
    assert "precaution_classes" not in repair_summary(found, None, 300)


def test_a_near_class_beside_a_found_flipper_is_named_and_not_verified():
    flipper = scan([], untargeted=1.7)
    flipper.anomaly_index[0] = 2.5  # class 0 at 0.83 of the threshold
    near = result({TAMPERED: flipper, PATH: scan([]), NC: scan([])})
    near.near_beside_flipper = [0]
    (warning,) = repair_warnings(near)
    assert "label flipper and flagged no class" in warning and "class 0 at 0.83" in warning
    assert "cannot be verified" in warning and "repair again with --unlearn-class 0" in warning
    summary = repair_summary(near, None, 300)
    assert summary["verified"] is False and summary["near_classes_not_unlearnt"] == [0]
    plain = result({TAMPERED: scan([], untargeted=1.7), PATH: scan([]), NC: scan([])})
    assert repair_warnings(plain) == [] and "near_classes_not_unlearnt" not in repair_summary(
        plain, None, 300
    )
    # Repaired again with the class named (--unlearn-class 0): verified, and the summary says so.
    plain.requested = [0]
    asked = repair_summary(plain, None, 300)
    assert asked["verified"] is True and asked["classes_unlearnt_on_request"] == [0]


def test_near_classes_beside_a_flipper_follow_the_scans():
    from modeconn.defenses.unlearning import UnlearningConfig, near_classes_beside_flipper

    config = UnlearningConfig()
    flipper = scan([], untargeted=1.7)
    flipper.anomaly_index[3] = 2.2  # 0.73 of the threshold: near
    flipper.anomaly_index[4] = 2.0  # 0.67: not
    assert near_classes_beside_flipper([flipper], config) == [3]
    flipper.natural_classes = [3]
    assert near_classes_beside_flipper([flipper], config) == []
    flagged = scan([0], untargeted=1.7)
    flagged.anomaly_index[3] = 2.2
    assert near_classes_beside_flipper([flagged], config) == []  # a class was found
    no_flipper = scan([])
    no_flipper.anomaly_index[3] = 2.2
    assert near_classes_beside_flipper([no_flipper], config) == []  # the precaution's case
    flipper.natural_classes = []
    asked = UnlearningConfig(classes=(3,))  # the user unlearns it: no longer left as it was
    assert near_classes_beside_flipper([flipper], asked) == []


def test_summary_carries_the_zoo_uncertainty_of_the_tampered_scan_with_or_without_precaution():
    for precautions in ([], [8]):
        blind = result({TAMPERED: scan([]), PATH: scan([]), NC: scan([])})
        blind.precautions = precautions
        summary = repair_summary(blind, None, 300, dataset="fashion-mnist")
        assert 0.0 < summary["tampered_zoo_clean_share"] <= 1.0
        assert "tampered_zoo_miss_rate" in summary


def test_every_candidate_flagged_is_a_warning():
    flagged = result({TAMPERED: scan([0]), PATH: scan([0]), NC: scan([0])})
    (warning,) = repair_warnings(flagged)
    assert f"the returned {NC} included" in warning
    assert "class 0 (anomaly index 5.00 > 3)" in warning
    one_passes = result({TAMPERED: scan([0]), PATH: scan([0]), NC: scan([])})
    assert repair_warnings(one_passes) == []


def test_summary_leads_with_the_verdict_and_says_when_asr_is_not_measured(capsys):
    blind = result({TAMPERED: scan([]), PATH: scan([]), NC: scan([])})
    summary = repair_summary(blind, None, 300)
    assert list(summary)[:4] == ["verified", "warning", "attack_measured", "attack_note"]
    assert summary["verified"] is False and summary["attack_measured"] is False
    assert summary["attack_note"] == ATTACK_NOT_MEASURED and "asr" not in summary
    assert summary["tampered_backdoor_found"] is False  # the existing keys stay
    print_verdict(summary)
    assert "cannot be verified" in capsys.readouterr().err
    verified = repair_summary(result({TAMPERED: scan([0]), PATH: scan([]), NC: scan([])}), "asr", 1)
    assert verified["verified"] is True and verified["attack_measured"] is True
    assert "warning" not in verified and "attack_note" not in verified and verified["asr"] == 0.01
    print_verdict(verified)
    assert capsys.readouterr().err == ""


def hand_written_run(path: Path, summary: dict) -> Path:
    """A repair's run directory as the command writes it, minus the models and figures."""
    (path / "scans" / "tampered").mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"command": "repair", "models": ["bd.safetensors"], "attack": None})
    )
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "comparison.csv").write_text(
        "model,clean_acc,bonafide_holdout_acc,max_anomaly_index,flagged,detail\n"
        "tampered (A),0.9072,0.928,1.9,0,\n"
        "path repair,0.8906,0.914,0.88,0,t=0.70\n"
        "NC-unlearning,0.8935,0.916,1.14,0,A unlearnt\n"
    )
    verdict = {"model": TAMPERED, "verdict": "no class flagged", "max_anomaly_index": 1.9}
    (path / "scans" / "tampered" / "summary.json").write_text(json.dumps(verdict))
    return path


def test_report_opens_with_the_warning_and_groups_the_keys(tmp_path: Path):
    blind = result({TAMPERED: scan([]), PATH: scan([]), NC: scan([])})
    summary = repair_summary(blind, None, 2500)
    summary.update(t=0.7, t_rule="farthest from both", path_candidate=PATH)
    summary["seconds_unlearning"] = 2.5
    page = render_report(hand_written_run(tmp_path / "run", summary))
    warning = page.index("Not verified.")
    assert warning < page.index("Why this model") < page.index("<h2>Summary</h2>")
    assert html.escape(summary["warning"]) in page and html.escape(ATTACK_NOT_MEASURED) in page
    assert "Chosen point" not in page  # NC-unlearning was returned, not the path's point
    assert "<h3>Candidates and baselines</h3>" in page and "Clean accuracy" in page
    assert "<td>90.7%</td>" in page and "NC-unlearning (returned)" in page
    assert "<h3>Timings</h3>" in page and "<td>NC-unlearning</td><td>2.5</td>" in page
    assert "<h3>Settings</h3>" in page and "unknown (no trigger: ASR not measured)" in page
    folded = page.index("<details>")
    assert folded > page.index("<h3>Settings</h3>") and page.index("seconds_unlearning") > folded
    assert "Classes unlearnt on request" not in page
    summary["classes_unlearnt_on_request"] = [0, 3]
    asked = render_report(hand_written_run(tmp_path / "asked", summary))
    assert "<td>Classes unlearnt on request</td><td class='text'>0, 3</td>" in asked


def test_report_shows_the_chosen_point_only_when_the_path_was_returned(tmp_path: Path):
    found = result({TAMPERED: scan([0]), PATH: scan([]), NC: scan([])}, chosen=PATH)
    summary = repair_summary(found, "asr", 2500)
    summary.update(t=0.7, t_rule="farthest from both", path_candidate=PATH)
    page = render_report(hand_written_run(tmp_path / "run", summary))
    assert "Not verified" not in page and "Verified without the trigger" in page
    assert page.index("<h2>Chosen point</h2>") < page.index("<h2>Summary</h2>")
    assert "<b>t = 0.7000</b> — farthest from both" in page
    assert "attack success 1.0% (tampered" in page and "Attack success</b>:" not in page
