"""The backdoor-connected path: the line from a model back to the tampered one, and a repair that
reports it (depth.csv, depth.png, backdoor_t) next to a clean reference under the same attacks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from modeconn.attacks.backdoor import TriggerSpec, backdoor_metrics
from modeconn.checkpoints import load_model
from modeconn.defenses.repair.depth import backdoor_connected_path, backdoor_t

SPEC = TriggerSpec(type="patch", size=2, target=0, rate=0.2)  # the digits_backdoor fixture's


def test_backdoor_t_is_the_first_t_above_one_half():
    rows = [{"t": t / 4, "asr": a} for t, a in enumerate([0.01, 0.3, 0.5, 0.7, 0.99])]
    assert backdoor_t(rows) == 0.75  # 0.5 itself does not exceed one half
    assert backdoor_t(rows, threshold=0.2) == 0.25
    assert backdoor_t([{"t": 0.0, "asr": 0.1}, {"t": 1.0, "asr": 0.4}]) is None


def test_the_line_from_a_clean_model_to_the_tampered_one(
    digits_lenet: Path, digits_backdoor: Path, digits_bonafide
):
    data = digits_bonafide
    clean, tampered = load_model(digits_lenet).model, load_model(digits_backdoor).model
    loader = data.eval_loader("test", limit=200)
    ends = [backdoor_metrics(m, loader, SPEC)["asr"] for m in (clean, tampered)]
    assert ends[0] < 0.5 < ends[1]  # the ASR is known at both ends
    state = torch.random.get_rng_state()
    rows = backdoor_connected_path(clean, tampered, data, SPEC, test_limit=200)
    assert torch.equal(torch.random.get_rng_state(), state)  # no other figure moves
    assert [r["t"] for r in rows] == pytest.approx([i / 10 for i in range(11)])
    assert rows[0]["asr"] == pytest.approx(ends[0]) and rows[-1]["asr"] == pytest.approx(ends[1])
    first = next(r["t"] for r in rows if r["asr"] > 0.5)
    assert backdoor_t(rows) == first and 0.0 < first <= 1.0
    assert {"test_acc", "test_loss", "poisoned_acc"} <= set(rows[0])
    same = backdoor_connected_path(tampered, tampered, data, SPEC, points=3, test_limit=200)
    assert backdoor_t(same) == 0.0  # the tampered model itself is backdoored at once


@pytest.mark.slow
def test_repair_writes_the_depth_table_and_figure_and_the_clean_reference(
    tmp_path: Path, digits_backdoor: Path, digits_lenet: Path
):
    import dataclasses

    from modeconn.commands.repair import run_repair
    from modeconn.data.prepare import DataConfig
    from modeconn.defenses.repair import RepairConfig, with_budget
    from modeconn.report.html import render_report

    cfg = with_budget(
        RepairConfig(method="unlearn", points=5, eot=False, depth_limit=200),
        batch_size=32,
        scan_steps=20,
        unlearn_epochs=2,
    )
    cfg = dataclasses.replace(cfg, retuning=dataclasses.replace(cfg.retuning, sweep=(20,)))
    out = tmp_path / "r"
    summary = run_repair(
        [digits_backdoor],
        out,
        config=cfg,
        data=DataConfig(dataset=None, bonafide=300),
        clean_reference=digits_lenet,
        progress=False,
    )
    assert "backdoor_t" in summary and "nc_unlearning_backdoor_t" in summary
    assert summary["backdoor_t"] == summary["nc_unlearning_backdoor_t"]
    for name in ("clean_acc", "asr", "retuning_asr", "retuning_asr@20", "backdoor_t"):
        assert f"clean_reference_{name}" in summary, name
    assert {"retuning_asr@20", "tampered_retuning_asr@20"} <= set(summary)
    assert summary["seconds_depth"] >= 0
    with (out / "depth.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["NC-unlearning"] * 11 + ["clean reference"] * 11
    assert {"t", "test_acc", "asr"} <= set(table[0])
    assert (out / "depth.png").exists()
    assert "clean reference" in (out / "comparison.md").read_text()
    assert "retuning_asr@20" in (out / "comparison.md").read_text()
    page = render_report(out)
    assert "backdoor-connected path" in page and "Backdoor returns at t" in page
    config = json.loads((out / "config.json").read_text())
    assert config["clean_reference"] == str(digits_lenet)


def test_a_clean_reference_of_another_architecture_is_refused(
    tmp_path: Path, digits_backdoor: Path
):
    from modeconn.commands.repair import run_repair
    from modeconn.commands.train import run_train
    from modeconn.data.prepare import DataConfig
    from modeconn.errors import ModeconnError
    from modeconn.training import TrainConfig

    other = tmp_path / "mlp"
    run_train(
        other,
        model="mlp",
        data=DataConfig(dataset="digits", train_limit=100),
        config=TrainConfig(epochs=1, batch_size=64),
        progress=False,
    )
    data = DataConfig(dataset=None, bonafide=300)
    with pytest.raises(ModeconnError, match="clean reference"):
        run_repair(
            [digits_backdoor], tmp_path / "r", data=data, clean_reference=other, progress=False
        )
    assert not (tmp_path / "r").exists()
