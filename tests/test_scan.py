"""Backdoor scan: trigger synthesis, the anomaly index, unlearning batches, ``modeconn scan``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from torch import nn

from modeconn.data.prepare import DataConfig, prepare_data
from modeconn.defenses.scan import (
    ScanConfig,
    TriggerSet,
    UnlearningTransform,
    anomaly_index,
    scan_model,
    synthesize_triggers,
)
from modeconn.errors import ModeconnError


class PixelBackdoor(nn.Module):
    """Class k's logit is the mean of image row k; one pixel (bottom-right) forces class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x[:, 0].mean(dim=2)[:, :4]  # 4 classes from rows 0..3
        rows = rows.clone()
        rows[:, 0] = rows[:, 0] + 50.0 * x[:, 0, -1, -1]
        return 10.0 * rows


def _images(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.2
    y = torch.arange(n) % 4
    for i in range(n):
        x[i, 0, y[i]] += 0.6  # the true class's row is bright
    x[:, 0, -1, -1] = 0.0
    return x, y


def test_mask_trigger_of_the_backdoor_class_is_one_pixel():
    x, y = _images()
    model = PixelBackdoor()
    assert (model(x).argmax(1) == y).all()
    trig = synthesize_triggers(model, x, y, 4, "mask", ScanConfig(steps=120, batch_size=32))
    assert trig.success[0] >= 0.95
    assert trig.size[0] < 3.0  # about one pixel
    assert trig.size[0] < 0.5 * trig.size[1:].min()
    assert int(trig.mask[0].flatten().argmax()) == 63  # it found the pixel (bottom-right)
    stamped = trig.apply(x[y != 0], 0)
    assert (model(stamped).argmax(1) == 0).float().mean() >= 0.95


def test_scan_flags_the_backdoor_class_against_a_clean_reference():
    x, y = _images()

    class Clean(PixelBackdoor):
        def forward(self, x):
            return 10.0 * x[:, 0].mean(dim=2)[:, :4]

    cfg = ScanConfig(steps=120, batch_size=32)
    result = scan_model(PixelBackdoor(), x, y, 4, cfg, reference=Clean())
    assert result.flagged_classes == [0]
    assert result.anomaly_index[0] > cfg.threshold
    assert result.reference_sizes is not None and set(result.reference_sizes) == set(cfg.kinds)
    clean = scan_model(Clean(), x, y, 4, cfg, reference=Clean())
    assert clean.flagged_classes == []
    summary = result.summary()
    assert summary["flagged_classes"] == [0] and len(summary["anomaly_index"]) == 4
    assert "class 0" in result.verdict() and "no class" in clean.verdict()


class PixelAllToAll(nn.Module):
    """Row-mean classes as in :class:`PixelBackdoor`; the bottom-right pixel sends y → y+1 mod 4
    (the all-to-all backdoor: no class is the target, every class is pushed off its label)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x[:, 0].mean(dim=2)[:, :4]
        shifted = torch.roll(rows, shifts=1, dims=1)  # class j gets row j−1's brightness
        on = x[:, 0, -1, -1].unsqueeze(1).clamp(0, 1)
        return 10.0 * ((1 - on) * rows + on * (shifted + 0.5))


def test_untargeted_trigger_finds_the_all_to_all_pixel_and_the_index_flags_it():
    x, y = _images()
    backdoored, clean = PixelAllToAll(), PixelAllToAll()
    clean.forward = lambda x: 10.0 * x[:, 0].mean(dim=2)[:, :4]  # no pixel pathway
    assert (backdoored(x).argmax(1) == y).all()
    # the pixel kinds: a row model ignores where along a row its brightness sits (no warp signal)
    cfg = ScanConfig(steps=120, batch_size=32, untargeted_batch=64, kinds=("mask", "perturbation"))
    trig = synthesize_triggers(backdoored, x, y, 4, "mask", cfg, untargeted=True)
    assert trig.untargeted and trig.num_classes == 1
    assert trig.size[0] < 3.0 and int(trig.mask[0].flatten().argmax()) == 63
    assert (backdoored(trig.apply(x, y)).argmax(1) != y).float().mean() >= 0.9
    result = scan_model(backdoored, x, y, 4, cfg)
    # no class stands out (every class is a target) but the label flipper does
    assert result.flagged_classes == [] and result.untargeted_flagged and result.backdoor_found
    assert "universal label-flipping" in result.verdict()
    reference = scan_model(clean, x, y, 4, cfg)
    assert not reference.backdoor_found
    assert reference.untargeted_index < cfg.untargeted_threshold < result.untargeted_index
    summary = result.summary()
    assert summary["untargeted_flagged"] is True and summary["backdoor_found"] is True
    assert summary["untargeted_mask_size"] < 3.0


def test_unlearning_transform_stamps_the_untargeted_share_with_true_labels():
    k, n = 4, 1000
    per_class = TriggerSet(
        "mask",
        torch.ones(k),
        torch.ones(k),
        mask=torch.zeros(k, 1, 8, 8),
        pattern=torch.zeros(k, 1, 8, 8),
    )
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, -1, -1] = 1.0
    universal = TriggerSet(
        "mask",
        torch.ones(1),
        torch.ones(1),
        mask=mask,
        pattern=torch.ones(1, 1, 8, 8),
        untargeted=True,
    )
    x, y = torch.zeros(n, 1, 8, 8), torch.arange(n) % k
    torch.manual_seed(0)
    transform = UnlearningTransform(
        [per_class], rate=0.0, untargeted=[universal], untargeted_rate=0.3
    )
    xs, ys = transform(x, y)
    assert torch.equal(ys, y)
    share = (xs[:, 0, -1, -1] == 1.0).float().mean()
    assert 0.25 < share < 0.35
    assert xs[:, 0, :-1].abs().sum() == 0  # nothing else was stamped
    with pytest.raises(ModeconnError, match="untargeted triggers"):
        UnlearningTransform([per_class], rate=0.0, untargeted_rate=0.3)


def test_anomaly_index_uses_the_low_side_and_the_reference():
    assert anomaly_index([5.0, 5.0, 5.0, 5.0]) == [0.0, 0.0, 0.0, 0.0]
    idx = anomaly_index([50.0, 60.0, 55.0, 5.0, 500.0])
    assert idx[3] > 2 and idx[4] < 0  # a huge trigger is not suspicious
    # a class that is naturally small is small in the reference too: no anomaly
    natural = anomaly_index([50.0, 60.0, 55.0, 5.0, 52.0], reference=[50.0, 60.0, 55.0, 5.0, 52.0])
    assert max(natural) == 0.0
    with pytest.raises(ModeconnError, match="same classes"):
        anomaly_index([1.0, 2.0], reference=[1.0, 2.0, 3.0])


def test_unlearning_transform_keeps_labels_and_never_uses_the_own_class():
    k, n = 4, 400
    mask = torch.zeros(k, 1, 8, 8)
    pattern = torch.zeros(k, 1, 8, 8)
    for c in range(k):  # class c's trigger writes value (c+1)/10 into pixel (0, 0)
        mask[c, 0, 0, 0] = 1.0
        pattern[c, 0, 0, 0] = (c + 1) / 10
    trig = TriggerSet("mask", torch.ones(k), torch.ones(k), mask=mask, pattern=pattern)
    x = torch.zeros(n, 1, 8, 8)
    y = torch.arange(n) % k
    torch.manual_seed(0)
    xs, ys = UnlearningTransform([trig], rate=0.5)(x, y)
    assert torch.equal(ys, y)
    stamped = xs[:, 0, 0, 0] > 0
    assert 0.4 < stamped.float().mean() < 0.6
    used = (xs[stamped, 0, 0, 0] * 10).round().long() - 1
    assert (used != y[stamped]).all()
    xs, _ = UnlearningTransform([trig], rate=1.0, classes=[2])(x, y)
    assert torch.allclose(xs[:, 0, 0, 0], torch.full((n,), 0.3))
    # flagged class 2 on 30%, any other class on 20% more
    xs, _ = UnlearningTransform([trig], rate=0.3, classes=[2], uniform_rate=0.2)(x, y)
    value = (xs[:, 0, 0, 0] * 10).round()
    assert 0.2 < (value == 3).float().mean() < 0.45
    assert 0.4 < (value > 0).float().mean() < 0.6
    with pytest.raises(ModeconnError, match="rate"):
        UnlearningTransform([trig], rate=0.0)
    with pytest.raises(ModeconnError, match="rate"):
        UnlearningTransform([trig], rate=-0.1, uniform_rate=0.5)
    with pytest.raises(ModeconnError, match="rate"):
        UnlearningTransform([trig], rate=0.8, uniform_rate=0.4)


def test_perturbation_trigger_clamps_to_the_image_range():
    delta = torch.full((2, 1, 4, 4), 0.8)
    trig = TriggerSet("perturbation", torch.ones(2), torch.ones(2), delta=delta)
    out = trig.apply(torch.full((3, 1, 4, 4), 0.5), torch.tensor([0, 1, 0]))
    assert out.max() == 1.0 and out.min() == 1.0
    assert trig.image(0).shape == (1, 4, 4)


@pytest.fixture(scope="module")
def digits_scan(digits_backdoor: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scan") / "scan"
    from modeconn.commands import run_scan

    run_scan(
        digits_backdoor,
        out,
        config=ScanConfig(images=300, steps=100, batch_size=24),
        data=DataConfig(dataset=None, bonafide=600),
        progress=False,
    )
    return out


@pytest.mark.slow
def test_scan_command_flags_the_digits_backdoor(digits_scan: Path):
    summary = json.loads((digits_scan / "summary.json").read_text())
    assert summary["flagged_classes"] == [0], summary
    assert len(summary["anomaly_index"]) == 10
    for name in ("triggers_mask.png", "triggers_perturbation.png", "scan.csv", "scan.md"):
        assert (digits_scan / name).stat().st_size > 0
    config = json.loads((digits_scan / "config.json").read_text())
    assert config["reference"] is None and config["data"]["bonafide"] == 600


@pytest.mark.slow
def test_scan_command_passes_a_clean_digits_model(digits_lenet: Path, tmp_path: Path, capsys):
    result = run_cli(
        capsys,
        "scan",
        digits_lenet,
        "--out",
        tmp_path / "clean",
        "--bonafide",
        600,
        "--images",
        300,
        "--steps",
        100,
        "--batch-size",
        24,
        "--reference",
        "scratch",
        "--quiet",
    )
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "clean" / "summary.json").read_text())
    assert summary["flagged_classes"] == [], summary
    config = json.loads((tmp_path / "clean" / "config.json").read_text())
    assert config["reference"] == "scratch" and config["reference_training"]["epochs"] == 30
    header = (tmp_path / "clean" / "scan.csv").read_text().splitlines()[0]
    assert "mask_reference_size" in header
    assert "no class flagged" in result.out


def test_scan_bad_input_is_one_line(digits_lenet: Path, tmp_path: Path, capsys):
    result = run_cli(capsys, "scan", tmp_path / "missing", "--out", tmp_path / "a")
    assert_one_line_error(result)
    result = run_cli(
        capsys, "scan", digits_lenet, "--out", tmp_path / "b", "--bonafide", 12, "--quiet"
    )
    assert_one_line_error(result, "fewer than 2 images of class")
    assert not (tmp_path / "b" / "summary.json").exists()
    result = run_cli(capsys, "scan", digits_lenet, "--out", tmp_path / "c", "--kinds", "blob")
    assert_one_line_error(result, "unknown trigger kind")


def test_scan_images_are_bonafide_only():
    from modeconn.commands.scan import scan_images

    data = prepare_data(DataConfig("digits", bonafide=200, seed=0))
    x, y = scan_images(data, 100)
    bonafide = data.tensors("bonafide")[0][data.indices("bonafide")].float().div(255)
    flat = {tuple(row.tolist()) for row in (bonafide.flatten(1) * 255).round().int()}
    assert all(tuple(row.tolist()) in flat for row in (x.flatten(1) * 255).round().int())
    assert len(y) == 100 and x.max() <= 1.0


def test_unlearning_follows_the_confidence_of_the_verdict():
    from modeconn.defenses.scan import ScanResult
    from modeconn.defenses.unlearning import UnlearningConfig, unlearning_transform

    k = 4
    trig = TriggerSet(
        "mask",
        torch.ones(k),
        torch.ones(k),
        mask=torch.zeros(k, 1, 8, 8),
        pattern=torch.zeros(k, 1, 8, 8),
    )

    def result(index: list[float], flagged: list[int]) -> ScanResult:
        return ScanResult({"mask": trig}, {"mask": index}, index, flagged, 3.0)

    cfg = UnlearningConfig()
    strong = unlearning_transform([result([9.0, 0, 0, 0], [0])], cfg)
    assert strong.classes == [0] and strong.uniform_rate == 0.0
    weak = unlearning_transform([result([3.3, 0, 0, 0], [0])], cfg)
    assert weak.classes == [0] and weak.uniform_rate == cfg.uniform_rate
    none = unlearning_transform([result([1.0, 0, 0, 0], [])], cfg)
    assert none.classes is None and none.rate + none.uniform_rate == cfg.rate + cfg.uniform_rate
    assert strong.triggers[0].mask.shape == (k, 1, 8, 8)
    # A weak flag next to a confident one (a naturally small class) is not stamped.
    mixed = unlearning_transform([result([9.0, 0, 0, 3.4], [0, 3])], cfg)
    assert mixed.classes == [0] and mixed.uniform_rate == 0.0
    # Two scans (the two endpoints): one confident verdict decides for both; every scan's
    # triggers are stamped.
    both = unlearning_transform([result([3.3, 0, 0, 0], [0]), result([0, 0, 5.0, 0], [2])], cfg)
    assert both.classes == [2] and both.uniform_rate == 0.0 and len(both.triggers) == 2
    # Two flags of similar size (an all-to-all model: 4.43 and 3.61) are no confident verdict:
    # the flagged classes and the uniform part are stamped.
    close = unlearning_transform([result([0, 3.61, 0, 4.43], [1, 3])], cfg)
    assert close.classes == [1, 3] and close.uniform_rate == cfg.uniform_rate
    # With universal label flippers (the scan's untargeted triggers): no confident class means
    # the flippers are stamped, plus the flagged classes' triggers when some class is flagged.
    flipper = TriggerSet(
        "mask",
        torch.ones(1),
        torch.ones(1),
        mask=torch.zeros(1, 1, 8, 8),
        pattern=torch.zeros(1, 1, 8, 8),
        untargeted=True,
    )

    def with_flipper(index: list[float], flagged: list[int]) -> ScanResult:
        scan = result(index, flagged)
        scan.untargeted, scan.untargeted_index = {"mask": flipper}, 2.0
        return scan

    quiet = unlearning_transform([with_flipper([1.0, 0, 0, 0], [])], cfg)
    assert quiet.rate == 0.0 and quiet.untargeted_rate == cfg.untargeted_rate
    assert len(quiet.untargeted) == 1 and quiet.uniform_rate == 0.0
    flagged = unlearning_transform([with_flipper([0, 3.61, 0, 4.43], [1, 3])], cfg)
    assert flagged.classes == [1, 3] and flagged.rate == cfg.rate
    assert flagged.untargeted_rate == cfg.untargeted_rate
    sure = unlearning_transform([with_flipper([9.0, 0, 0, 0], [0])], cfg)
    assert sure.classes == [0] and sure.untargeted_rate == 0.0

    # Nothing found, but a class within 0.7 of the threshold (2.4 of 3): its trigger is
    # stamped as a precaution beside the flippers; one under 0.7 (2.0) is not, nor a class
    # discounted as natural, nor any near class once the scans found a backdoor (a flagged
    # class or a label flipper).
    def quiet_flipper(index: list[float]) -> ScanResult:
        scan = with_flipper(index, [])
        scan.untargeted_index = 0.2
        return scan

    near = unlearning_transform([quiet_flipper([2.4, 0, 2.0, 0])], cfg)
    assert near.classes == [0] and near.rate == cfg.rate
    assert near.untargeted_rate == cfg.untargeted_rate
    natural = quiet_flipper([2.4, 0, 2.0, 0])
    natural.natural_classes = [0]
    assert unlearning_transform([natural], cfg).rate == 0.0
    beside = [quiet_flipper([2.4, 0, 0, 0]), with_flipper([0, 0, 0, 3.3], [3])]
    assert unlearning_transform(beside, cfg).classes == [3]
    assert unlearning_transform([with_flipper([2.4, 0, 0, 0], [])], cfg).rate == 0.0

    # Classes the user names are stamped whatever the verdict: beside a flipper (the near class
    # the warning named), beside a confident class, and when nothing was found.
    asked = replace(cfg, classes=(2,))
    beside_flipper = unlearning_transform([with_flipper([2.4, 0, 0, 0], [])], asked)
    assert beside_flipper.classes == [2] and beside_flipper.rate == cfg.rate
    assert beside_flipper.untargeted_rate == cfg.untargeted_rate
    assert unlearning_transform([result([9.0, 0, 0, 0], [0])], asked).classes == [0, 2]
    assert unlearning_transform([quiet_flipper([2.4, 0, 0, 0])], asked).classes == [0, 2]


def test_trigger_figure_shows_the_untargeted_flipper_framed_when_it_is_a_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from modeconn.defenses.scan import ScanResult
    from modeconn.report import scan_plots

    figures = []
    monkeypatch.setattr(scan_plots, "save_figure", lambda fig, path: figures.append(fig) or path)
    k = 3

    def triggers(n: int, untargeted: bool = False) -> TriggerSet:
        return TriggerSet(
            "mask",
            torch.full((n,), 2.0),
            torch.ones(n),
            mask=torch.zeros(n, 1, 8, 8),
            pattern=torch.zeros(n, 1, 8, 8),
            untargeted=untargeted,
        )

    index = [0.5, 0.2, 0.1]
    plain = ScanResult({"mask": triggers(k)}, {"mask": index}, index, [], 3.0)
    scan_plots.plot_triggers(tmp_path / "a.png", plain, "mask")
    flagged = ScanResult(
        {"mask": triggers(k)},
        {"mask": index},
        index,
        [],
        3.0,
        untargeted={"mask": triggers(1, untargeted=True)},
        untargeted_index=1.6,
    )
    scan_plots.plot_triggers(tmp_path / "b.png", flagged, "mask")
    (without,), (with_flipper,) = (fig.axes for fig in figures)
    assert len(without.texts) == k and len(with_flipper.texts) == k + 1
    last = with_flipper.texts[-1]
    assert "any → other" in last.get_text() and "idx 1.6" in last.get_text()
    assert last.get_color() == "red" and without.texts[0].get_color() == "black"
    # The finding is framed, nothing else is.
    assert len(with_flipper.patches) == 1 and not without.patches
    # Colour triggers tile the same way (CIFAR-sized, three channels).
    colour = scan_plots.tiled_figure([scan_plots.Panel(torch.rand(3, 32, 32), "a", False)] * 3, "t")
    (tiles,) = colour.axes[0].images
    assert tiles.get_array().shape == (53, 120, 3)  # 3 tiles of 40 × 51, 2 rows below
