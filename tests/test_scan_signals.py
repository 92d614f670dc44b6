"""The scan's margin statistic (MM-BD) and the zoo figures a detector is judged by."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from modeconn.defenses.scan import ScanConfig, ScanResult, scan_model
from modeconn.defenses.scan.anomaly import combine_kinds, margin_index
from modeconn.defenses.scan.calibration import (
    ZooScore,
    auroc,
    family_figures,
    threshold_at_fpr,
    tpr_at_fpr,
    zoo_table,
)
from modeconn.defenses.scan.draws import draw_seeds, needs_second_look, pool_draws
from modeconn.defenses.scan.margin import class_margins, margins_of
from modeconn.errors import InvalidArgument


class RowModel(nn.Module):
    """Class k's logit is 10 × the mean of image row k (4 classes); with ``backdoor`` one
    bottom-right pixel adds 50 to class 0 — a shortcut far stronger than any natural feature."""

    def __init__(self, backdoor: bool) -> None:
        super().__init__()
        self.backdoor = backdoor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x[:, 0].mean(dim=2)[:, :4].clone()
        if self.backdoor:
            rows[:, 0] = rows[:, 0] + 5.0 * x[:, 0, -1, -1]
        return 10.0 * rows


def _images(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.2
    y = torch.arange(n) % 4
    x[torch.arange(n), 0, y] += 0.6
    x[:, 0, -1, -1] = 0.0
    return x, y


def test_margins_of_excludes_the_own_class():
    logits = torch.tensor([[1.0, 4.0, 2.0], [5.0, 5.0, 0.0]])
    assert margins_of(logits, torch.tensor([1, 0])).tolist() == [2.0, 0.0]


def test_class_margins_find_the_backdoor_shortcut():
    clean = class_margins(RowModel(False), (1, 8, 8), 4, steps=60, starts=4)
    bad = class_margins(RowModel(True), (1, 8, 8), 4, steps=60, starts=4)
    # a clean row model reaches margin 10 at most (one row all ones, the others zero)
    assert clean.max() <= 10.0 + 1e-4 and clean.min() > 8.0
    # the pixel adds 50/8 to class 0's margin; the other classes are unchanged
    assert bad[0] > clean[0] + 5.0
    assert torch.allclose(bad[1:], clean[1:], atol=0.5)
    assert margin_index([10.0, 10.0, 10.0, 10.0])[0] == pytest.approx(0.0)


def test_class_margins_are_seeded_and_leave_the_model_unchanged():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    before = [p.detach().clone() for p in model.parameters()]
    a = class_margins(model, (1, 8, 8), 4, steps=10, starts=3, seed=5)
    b = class_margins(model, (1, 8, 8), 4, steps=10, starts=3, seed=5)
    assert torch.equal(a, b)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    assert all(p.requires_grad for p in model.parameters())


def test_scan_reports_the_margin_and_flags_by_either_signal():
    x, y = _images()
    config = ScanConfig(steps=60, batch_size=32, margin=True, margin_steps=60, margin_starts=4)
    result = scan_model(RowModel(True), x, y, 4, config)
    assert result.margins is not None and len(result.margin_index) == 4
    assert result.top_class == 0 and 0 in result.flagged_classes
    summary = result.summary()
    assert summary["max_margin_index"] == pytest.approx(max(result.margin_index), abs=1e-4)
    assert summary["suspicion"] == pytest.approx(result.suspicion, abs=1e-4)
    off = scan_model(RowModel(True), x, y, 4, ScanConfig(steps=5, margin=False))
    assert off.margins is None and "margins" not in off.summary()


def test_auroc_threshold_and_tpr_on_known_scores():
    assert auroc([0.9, 0.8, 0.3], [0.1, 0.2, 0.3]) == pytest.approx((3 + 3 + 2.5) / 9)
    assert math.isnan(auroc([], [1.0]))
    negatives = [float(v) for v in range(20)]  # 0 … 19
    assert threshold_at_fpr(negatives, 0.05) == 18.0  # one negative (19) above it
    assert tpr_at_fpr([18.5, 30.0, 17.0, 1.0], negatives, 0.05) == 0.5


def test_zoo_table_counts_detections_false_flags_and_targets():
    scores = [
        ZooScore("c1", "clean", 0.5, False),
        ZooScore("c2", "clean", 1.2, True),
        ZooScore("p1", "patch", 3.0, True, true_target=2, top_class=2, seconds=2.0),
        ZooScore("p2", "patch", 2.0, True, true_target=5, top_class=1, seconds=4.0),
        ZooScore("a1", "all-to-all", 0.8, False),
    ]
    table = zoo_table(scores)
    assert set(table) == {"patch", "all-to-all", "overall"}
    assert table["patch"]["auroc"] == 1.0 and table["patch"]["detected"] == 2
    assert table["patch"]["target_right"] == 0.5
    assert table["all-to-all"]["auroc"] == 0.5
    overall = family_figures(scores)
    assert overall["false_flags"] == 1 and overall["backdoored"] == 3 and overall["clean"] == 2
    assert overall["seconds_per_model"] == pytest.approx(6.0 / 5)


@pytest.mark.slow
def test_quick_zoo_benchmark_trains_once_scans_and_tables(tmp_path):
    bench = pytest.importorskip("benchmarks.bench_scan_zoo")
    zoo_mod = pytest.importorskip("benchmarks.scan_zoo")
    config = ScanConfig(steps=30, margin=True, margin_steps=30, margin_starts=4)
    zoo = zoo_mod.quick_members()
    result = bench.run_zoo(tmp_path, zoo, zoo_mod.QUICK, config=config)
    assert {"calibration", "held-out", "models", "unstable_verdicts"} <= set(result)
    rows = result["models"]
    assert set(rows) | set(result["not_learnt"]) == {m.name for m in zoo}
    for m in zoo:
        assert (tmp_path / m.name / "summary.json").exists()
    backdoored = [r for r in rows.values() if r["family"] != "clean"]
    assert all(r["asr"] >= 0.5 for r in backdoored)
    overall = result["calibration"]["overall"]
    assert overall["clean"] == 1 and 0.0 <= overall["auroc"] <= 1.0
    # a second run reuses every trained model and cached scan
    stamp = {p: p.stat().st_mtime for p in tmp_path.glob("*/scan@0.json")}
    again = bench.run_zoo(tmp_path, zoo, zoo_mod.QUICK, config=config)
    assert again["models"] == rows
    assert {p: p.stat().st_mtime for p in tmp_path.glob("*/scan@0.json")} == stamp


def test_warp_trigger_geometry():
    from modeconn.defenses.scan.kinds import WarpTrigger

    kind = WarpTrigger()
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, :, 3] = 1.0  # a vertical bar at column 3
    zero = {"flow": torch.zeros(1, 2, 4, 4)}
    assert torch.allclose(kind.stamp(x[:1], zero), x[:1], atol=1e-6)
    right = torch.zeros(3, 2, 4, 4)
    right[1, 0] = 1.0  # sample one pixel to the right: the bar moves one pixel left
    moved = kind.stamp_all(x, {"flow": right})
    assert moved.shape == (3, 2, 1, 8, 8)
    assert torch.allclose(moved[1, :, 0, :, 2], torch.ones(2, 8), atol=1e-5)
    assert torch.allclose(moved[0], x, atol=1e-6)
    assert kind.size({"flow": right}).tolist() == pytest.approx([0.0, 4.0, 0.0])
    assert kind.scaled({"flow": right}, 2.0)["flow"][1, 0, 0, 0] == 2.0
    assert kind.image({"flow": right}, 1).max() == pytest.approx(1.0)


class ShiftBackdoor(RowModel):
    """RowModel on images with a bar at column 5; class 0 also fires when column 6 is bright
    — a bar moved by one pixel, which a warp does with a tiny flow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        logits[:, 0] = logits[:, 0] + 40.0 * x[:, 0, :4, 6].mean(1)
        return logits


def test_warp_kind_finds_a_shift_backdoor():
    from modeconn.defenses.scan import synthesize_triggers

    x, y = _images()
    x[:, 0, :, 5] = 0.9
    x[:, 0, :, 6] = 0.0
    model = ShiftBackdoor(False)
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    config = ScanConfig(steps=80, batch_size=32, warp_lr=0.1)
    trig = synthesize_triggers(model, x, y, 4, "warp", config)
    assert trig.success[0] >= 0.95
    assert trig.size[0] < 0.5 * trig.size[1:].min()


def test_zoo_reference_gives_figures_only_for_the_settings_it_measured(tmp_path):
    import json as _json

    from modeconn.defenses.scan.zoo_reference import zoo_reference

    path = tmp_path / "zoo_reference.json"
    record = {
        "config": ScanConfig().to_dict(),
        "clean_scores": [0.2, 0.4, 0.6, 0.9],
        "miss_rate": {"patch": 0.0, "warp": 0.5},
        "description": "4 test models",
    }
    path.write_text(_json.dumps(record))
    reference = zoo_reference(path)
    x, y = _images()
    result = scan_model(RowModel(True), x, y, 4, ScanConfig(steps=5, kinds=("mask",)))
    assert reference.figures(result, ScanConfig(steps=5, kinds=("mask",))) == {}
    figures = reference.figures(result, ScanConfig(seed=7))  # the seed does not matter
    expected = (sum(s >= result.suspicion for s in record["clean_scores"]) + 1) / 5
    assert figures["zoo_clean_share"] == pytest.approx(expected, abs=1e-4)
    assert figures["zoo_miss_rate"] == {"patch": 0.0, "warp": 0.5}
    assert reference.figures(result, ScanConfig(), "digits") == {}
    assert reference.figures(result, ScanConfig(), "fashion-mnist")["zoo"] == "4 test models"
    assert zoo_reference(tmp_path / "missing.json") is None


def _result(index: dict[str, list[float]], untargeted: float) -> ScanResult:
    config = ScanConfig()
    combined = combine_kinds(index, config)
    return ScanResult({}, index, combined, [], config.threshold, untargeted_index=untargeted)


def test_a_verdict_near_the_threshold_says_that_another_seed_may_flip_it():
    config = ScanConfig()
    # patch-lenet-23 of the fresh zoo: pooled 0.98 (not flagged) on one seed, 1.16 on another
    for pixels, flagged in ((2.94, False), (3.48, True)):
        draws = [_result({"mask": [pixels, 0.0], "perturbation": [pixels, 0.0]}, 0)] * 3
        pooled = pool_draws(draws, config)
        assert pooled.backdoor_found is flagged and pooled.near_threshold
        assert "another seed may decide the other way" in pooled.verdict()
        assert pooled.summary()["near_threshold"] is True
    clear = _result({"mask": [6.0, 0.0], "perturbation": [6.0, 0.0]}, 0)
    quiet = _result({"mask": [1.5, 0.0], "perturbation": [1.5, 0.0]}, 0)
    for far in (clear, quiet):  # suspicion 2.0 and 0.5
        assert not far.near_threshold and "another seed" not in far.verdict()


def test_second_look_pools_the_draws_indices_and_flags_on_the_mean():
    config = ScanConfig()
    # the target's pixel index straddles the threshold of 3 across three draws: 2.8, 3.6, 3.4
    draws = [
        _result({"mask": [m, 0.0], "perturbation": [m, 0.5], "warp": [0.0, 1.0]}, 0.1)
        for m in (2.8, 3.6, 3.4)
    ]
    # A target that leads in another kind group in each draw (blend-lenet-22, seed 2: pixels
    # 3.55 once, blend 4.7 of its 4.5 twice) keeps its lead when the draws' combined indices are
    # pooled: 1.09 of the threshold, where averaging the kinds first gave 0.95.
    alternating = [
        _result({"mask": [pixels, 0.0], "perturbation": [pixels, 0.0], "blend": [blend, 0.0]}, 0)
        for pixels, blend in ((3.55, 3.4), (2.65, 4.7), (2.2, 4.7))
    ]
    assert pool_draws(alternating, config).suspicion == pytest.approx(1.091, abs=1e-3)
    assert pool_draws(alternating, config).flagged_classes == [0]
    assert [d.suspicion < 1 for d in draws] == [True, False, False]
    pooled = pool_draws(draws, config)
    assert pooled.anomaly_index[0] == pytest.approx(3.2667, abs=1e-4)
    assert pooled.flagged_classes == [0] and pooled.untargeted_index == pytest.approx(0.1)
    assert pooled.draw_suspicions == pytest.approx([d.suspicion for d in draws])
    assert "decided on 3 draws" in pooled.verdict()
    assert pooled.summary()["draw_suspicions"] == [round(d.suspicion, 4) for d in draws]
    assert draw_seeds(replace(config, seed=2)) == [1002, 2002]
    low, high = config.confirm_band
    assert needs_second_look(low, config) and not needs_second_look(high, config)
    assert not needs_second_look(1.0, replace(config, confirm_draws=0))


def test_scan_model_takes_a_second_look_only_inside_the_band():
    x, y = _images()
    base = ScanConfig(steps=20, batch_size=16, kinds=("mask", "perturbation"), untargeted=False)
    once = scan_model(RowModel(False), x, y, 4, replace(base, confirm_band=(50.0, 60.0)))
    assert once.draw_suspicions == []
    looked = scan_model(RowModel(False), x, y, 4, replace(base, confirm_band=(1e-9, 60.0)))
    assert len(looked.draw_suspicions) == 3
    assert looked.draw_suspicions[0] == pytest.approx(once.suspicion)
    with pytest.raises(InvalidArgument):
        ScanConfig(confirm_band=(2.0, 1.0)).validate()


def test_zoo_repair_benchmark_calls_a_verified_repair_with_a_live_backdoor_a_failure():
    from benchmarks.bench_zoo_repair import judged

    base = {"clean_acc": 0.88, "tampered_clean_acc": 0.9, "tampered_asr": 0.99}
    removed = judged("m", {**base, "asr": 0.02, "verified": True})
    assert removed["removed"] and not removed["silent_failure"]
    flagged = judged("m", {**base, "asr": 0.3, "verified": False, "warning": "nothing found"})
    assert not flagged["removed"] and not flagged["silent_failure"]
    assert judged("m", {**base, "asr": 0.3, "verified": True})["silent_failure"]
    near = judged("m", {**base, "asr": 0.01, "verified": False, "precaution_classes": [8]})
    assert near["precaution_classes"] == [8] and flagged["precaution_classes"] == []


def test_blend_trigger_is_one_opacity_per_class():
    from modeconn.defenses.scan.kinds import BlendTrigger

    kind = BlendTrigger()
    x = torch.full((2, 1, 4, 4), 0.5)
    alpha = torch.tensor([0.0, 0.25]).view(2, 1, 1, 1)
    trigger = {"mask": alpha, "pattern": torch.ones(2, 1, 4, 4)}
    stamped = kind.stamp_all(x, trigger)
    assert stamped.shape == (2, 2, 1, 4, 4)
    assert torch.allclose(stamped[0], x) and torch.allclose(stamped[1], torch.full_like(x, 0.625))
    assert kind.size(trigger).tolist() == [0.0, 0.25]
    assert kind.scaled(trigger, 8.0)["mask"].flatten().tolist() == [0.0, 1.0]
    assert torch.allclose(kind.image(trigger, 1), torch.ones(1, 4, 4))
    params = kind.init_params(3, torch.Size((1, 4, 4)), torch.Generator().manual_seed(0), x.device)
    assert params[0].shape == (3, 1, 1, 1) and params[1].shape == (3, 1, 4, 4)


class BlendBackdoor(RowModel):
    """RowModel whose class 0 also fires on images that correlate with a fixed checkerboard
    — a dense pattern that a blend at low opacity carries and no small patch does."""

    pattern = (torch.arange(64).view(8, 8) + torch.arange(8).view(8, 1)) % 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        board = self.pattern.to(x.dtype)
        contrast = (x[:, 0] * board).mean((1, 2)) - (x[:, 0] * (1 - board)).mean((1, 2))
        logits[:, 0] = logits[:, 0] + 200.0 * contrast
        return logits


def test_blend_kind_finds_a_blended_backdoor_with_the_smallest_opacity():
    from modeconn.defenses.scan import synthesize_triggers

    x, y = _images()
    clean = RowModel(False)
    model = BlendBackdoor(False)
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    config = ScanConfig(steps=80, batch_size=32, blend_lr=0.1)
    trig = synthesize_triggers(model, x, y, 4, "blend", config)
    natural = synthesize_triggers(clean, x, y, 4, "blend", config)
    assert trig.success[0] >= 0.95
    assert trig.size[0] < 0.5 * trig.size[1:].min()
    assert trig.size[0] < 0.5 * natural.size[0]


def test_zoo_draw_cached_before_a_kind_was_added_is_extended_to_the_whole_scans_draw(tmp_path):
    bench = pytest.importorskip("benchmarks.bench_scan_zoo")
    zoo_mod = pytest.importorskip("benchmarks.scan_zoo")
    member = next(m for m in zoo_mod.quick_members() if m.trigger is not None)
    zoo_mod.train_member(member, tmp_path, zoo_mod.QUICK)
    full = ScanConfig(steps=20, kinds=("mask", "blend"), untargeted_kinds=("mask", "blend"))
    old = replace(full, kinds=("mask",), untargeted_kinds=("mask",))
    first = bench.cached_scan(member, tmp_path, old, zoo_mod.QUICK)
    assert bench.added_kinds(first["config"], replace(full, steps=21)) is None
    extended = bench.cached_scan(member, tmp_path, full, zoo_mod.QUICK)
    assert extended["index"]["mask"] == first["index"]["mask"]
    assert set(extended["untargeted_groups"]) == {"pixels", "blend"}
    whole, _ = bench.scan_member(member, tmp_path, replace(full, confirm_draws=0), zoo_mod.QUICK)
    assert extended["index"]["blend"] == pytest.approx(whole.index["blend"])
    assert extended["untargeted_index"] == pytest.approx(whole.untargeted_index)
    again = bench.cached_scan(member, tmp_path, full, zoo_mod.QUICK)  # read back, not scanned
    assert again["index"] == extended["index"] and again["seconds"] == extended["seconds"]
