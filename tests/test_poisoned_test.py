"""ASR on the user's own triggered test images (``modeconn repair --poisoned-test DIR --target N``):
the folder's two layouts, the metric against the known trigger's, the repair end to end, and every
bad input as one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from PIL import Image

from modeconn.attacks.backdoor import TriggerSpec, apply_trigger
from modeconn.attacks.metrics import (
    AttackSuccessMetric,
    PoisonedTestSpec,
    TriggeredImagesMetric,
    metric_from_attack_spec,
)
from modeconn.checkpoints import load_model
from modeconn.data.prepare import PreparedData
from modeconn.data.triggered import read_triggered_folder

#: The trigger of conftest's ``digits_backdoor``.
TRIGGER = TriggerSpec(type="patch", size=2, target=0, rate=0.2)
#: Tiny repair settings (no EOT: a poisoned-test repair has none either).
TINY = (
    "--bonafide",
    "200",
    "--epochs",
    "2",
    "--finetune-epochs",
    "1",
    "--unlearn-epochs",
    "2",
    "--points",
    "5",
    "--no-eot",
    "--batch-size",
    "32",
    "--scan-steps",
    "20",
    "-q",
)


def stamped_test_images(data: PreparedData) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split with the trigger stamped, as uint8 (the patch is 255: exact), and labels."""
    images, labels = data.tensors("test")
    idx = data.indices("test")
    triggered = apply_trigger(images[idx].float() / 255, TRIGGER)
    return (triggered * 255).round().to(torch.uint8), labels[idx]


def write_pngs(root: Path, images: torch.Tensor, labels: torch.Tensor | None) -> Path:
    """Save grayscale images as PNGs, flat or in one folder per true label."""
    for i, image in enumerate(images):
        folder = root if labels is None else root / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def unknown_trigger(tmp_path_factory: pytest.TempPathFactory, digits_backdoor: Path) -> Path:
    """``digits_backdoor``'s model with no attack in its sidecar: a suspect whose trigger the
    repair is not told (as for a model modeconn did not train)."""
    from modeconn.checkpoints import DEFAULT_NAME, resolve_weights_path, sidecar_path

    weights = resolve_weights_path(digits_backdoor)
    out = tmp_path_factory.mktemp("suspect") / DEFAULT_NAME
    out.write_bytes(weights.read_bytes())
    meta = json.loads(sidecar_path(weights).read_text())
    meta["attack"] = None
    sidecar_path(out).write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def triggered_dir(tmp_path_factory: pytest.TempPathFactory, digits: PreparedData) -> Path:
    """Every digits test image with the backdoor's trigger, one folder per true class."""
    images, labels = stamped_test_images(digits)
    return write_pngs(tmp_path_factory.mktemp("triggered") / "poisoned", images, labels)


def test_folder_reads_back_the_stamped_images_with_their_true_labels(triggered_dir, digits):
    images, labels = stamped_test_images(digits)
    read = read_triggered_folder(triggered_dir, digits.info)
    order = torch.argsort(labels, stable=True)  # the folder lists class 0's images first
    assert read.images.dtype == torch.uint8 and read.images.shape[1:] == (1, 8, 8)
    assert torch.equal(read.images, images[order]) and torch.equal(read.labels, labels[order])


def test_metric_equals_the_known_triggers_asr(triggered_dir, digits, digits_backdoor: Path):
    model = load_model(digits_backdoor).model.eval()
    known = AttackSuccessMetric(TRIGGER)(model, digits, "cpu")
    read = read_triggered_folder(triggered_dir, digits.info)
    assert TriggeredImagesMetric(read, target=0)(model, digits, "cpu") == known
    spec = PoisonedTestSpec.for_folder(triggered_dir, 0).to_dict()
    assert json.loads(json.dumps(spec)) == spec  # the spec that goes into config.json
    assert metric_from_attack_spec(spec)(model, digits, "cpu") == known  # read at first use


def test_flat_folder_counts_every_image(tmp_path: Path, digits, digits_backdoor: Path):
    model = load_model(digits_backdoor).model.eval()
    images, labels = stamped_test_images(digits)
    keep = labels != TRIGGER.target  # a user who knows the labels drops the target's images
    flat = write_pngs(tmp_path / "flat", images[keep], None)
    read = read_triggered_folder(flat, digits.info)
    assert read.labels is None and len(read) == int(keep.sum())
    figures = TriggeredImagesMetric(read, target=0)(model, digits, "cpu")
    assert figures == {"asr": AttackSuccessMetric(TRIGGER)(model, digits, "cpu")["asr"]}


def test_rgb_images_are_converted_to_the_data_sets_channels_and_size(tmp_path: Path, digits):
    folder = tmp_path / "rgb" / "3"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(folder / "a.jpg", quality=100)
    read = read_triggered_folder(tmp_path / "rgb", digits.info)
    assert read.images.shape == (1, 1, 8, 8) and read.labels.tolist() == [3]


@pytest.mark.slow
def test_repair_measures_asr_on_the_triggered_folder(
    tmp_path: Path, capsys, triggered_dir: Path, digits, digits_backdoor, unknown_trigger: Path
):
    out = tmp_path / "repair"
    args = ("--poisoned-test", triggered_dir, "--target", "0")
    res = run_cli(capsys, "repair", unknown_trigger, "--out", out, *args, *TINY)
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attack_measured"] is True and str(triggered_dir) in summary["attack_note"]
    tampered = json.loads((digits_backdoor / "summary.json").read_text())
    assert summary["tampered_asr"] == pytest.approx(tampered["asr"])  # the same images, stamped
    repaired = load_model(out / "repaired.safetensors").model.eval()
    known = AttackSuccessMetric(TRIGGER)(repaired, digits, "cpu")["asr"]
    assert summary["asr"] == pytest.approx(known)  # what the known trigger gives
    assert "nc_unlearning_asr" in summary
    assert not {"retuning_asr", "eot_asr", "tampered_retuning_asr"} & set(summary)
    config = json.loads((out / "config.json").read_text())
    assert config["attack"] == {"type": "poisoned-test", "path": str(triggered_dir), "target": 0}
    assert run_cli(capsys, "report", out).code == 0
    assert "triggered test images" in (out / "report.html").read_text(encoding="utf-8")
    # path-eval reads the folder named in the curve's JSON spec itself
    pe = ("--out", tmp_path / "pe", "--points", "3", "--no-segment", "-q")
    res = run_cli(capsys, "path-eval", out / "curve.safetensors", *pe)
    assert res.code == 0, res.err
    header = (tmp_path / "pe" / "path.csv").read_text().splitlines()[0].split(",")
    assert "asr" in header and "poisoned_acc" in header
    # --attack FILE.json: the known trigger, for a model whose sidecar has none
    spec = tmp_path / "attack.json"
    spec.write_text(json.dumps(TRIGGER.to_dict()))
    known_run = tmp_path / "known"
    res = run_cli(capsys, "repair", unknown_trigger, "--out", known_run, "--attack", spec, *TINY)
    assert res.code == 0, res.err
    with_trigger = json.loads((known_run / "summary.json").read_text())
    assert with_trigger["attack_measured"] is True and "attack_note" not in with_trigger
    assert "retuning_asr" in with_trigger  # the trigger itself allows the retuning attack
    assert summary["asr"] == pytest.approx(with_trigger["asr"], abs=0.05)
    assert summary["tampered_asr"] == pytest.approx(with_trigger["tampered_asr"])


def test_bad_poisoned_test_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys, triggered_dir: Path, digits_backdoor: Path
):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "bad.png").write_bytes(b"not an image")
    stray = tmp_path / "stray" / "ten"
    stray.mkdir(parents=True)
    only_target = tmp_path / "only_target" / "0"
    only_target.mkdir(parents=True)
    first = next((triggered_dir / "0").iterdir())
    (only_target / first.name).write_bytes(first.read_bytes())
    cases = [
        (("--poisoned-test", triggered_dir), "--poisoned-test and --target go together"),
        (("--target", "0"), "--poisoned-test and --target go together"),
        (("--poisoned-test", empty, "--target", "0"), "holds no images"),
        (("--poisoned-test", broken.parent, "--target", "0"), "cannot read image", "bad.png"),
        (("--poisoned-test", triggered_dir, "--target", "10"), "--target 10 is not a class"),
        (("--poisoned-test", tmp_path / "nope", "--target", "0"), "not found"),
        (("--poisoned-test", stray.parent, "--target", "0"), "'ten'", "class index 0..9"),
        (
            ("--poisoned-test", only_target.parent, "--target", "0"),
            "every image",
            "target class 0",
        ),
    ]
    for i, (args, *fragments) in enumerate(cases):
        out = tmp_path / f"out{i}"
        res = run_cli(capsys, "repair", digits_backdoor, "--out", out, *args, *TINY)
        assert_one_line_error(res, *fragments)
        assert res.code == 2 and not out.exists()
    spec = tmp_path / "attack.json"
    spec.write_text(json.dumps(TRIGGER.to_dict()))
    both = ("--attack", spec, "--poisoned-test", triggered_dir, "--target", "0")
    res = run_cli(capsys, "repair", digits_backdoor, "--out", tmp_path / "both", *both, *TINY)
    assert_one_line_error(res, "--attack or --poisoned-test")
    assert not (tmp_path / "both").exists()
