"""Path repair: the rule for t, the baselines, and the repair/demo commands end to end (tiny)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from modeconn.checkpoints import load_model
from modeconn.data.prepare import DataConfig
from modeconn.defenses.baselines import fine_prune, noisy_models, prune_channels
from modeconn.defenses.repair import choose_t
from modeconn.errors import ModeconnError
from modeconn.training import TrainConfig, evaluate_model


def rows(accs: list[float]) -> list[dict[str, float]]:
    n = len(accs)
    return [{"t": i / (n - 1), "bonafide_holdout_acc": a} for i, a in enumerate(accs)]


def test_choose_t_keeps_a_margin_and_maximises_held_out_accuracy():
    accs = [0.95, 0.93, 0.80, 0.85, 0.84, 0.85, 0.80, 0.88, 0.93, 0.95, 0.95]
    t, why = choose_t(rows(accs), margin=0.25)
    assert t == pytest.approx(0.7)  # 0.1/0.8 score higher but lie too close to an endpoint
    assert "held-out bonafide" in why
    t, _ = choose_t(rows([0.9, 0.5, 0.8, 0.8, 0.5, 0.9][:5]), margin=0.25)
    assert t == pytest.approx(0.5)  # ties on accuracy go to the point farther inside
    with pytest.raises(ModeconnError, match="margin"):
        choose_t(rows(accs), margin=0.7)
    with pytest.raises(ModeconnError, match="more points"):
        choose_t(rows([0.9, 0.9]), margin=0.25)


def test_choice_takes_the_best_held_out_accuracy_the_scan_passes_and_breaks_ties_by_loss():
    from modeconn.defenses.repair import Candidate, choose_candidate
    from modeconn.defenses.scan import ScanResult

    def verdict(flagged: list[int], top: float) -> ScanResult:
        return ScanResult({}, {}, [top, 1.0], flagged, 3.0)

    def cand(name: str, acc: float, loss: float) -> Candidate:
        return Candidate(name, {"bonafide_holdout_acc": acc, "bonafide_holdout_loss": loss})

    path, unlearnt, best = cand("path", 0.914, 0.269), cand("unl", 0.914, 0.262), cand("b", 0.95, 1)
    scans = {"path": verdict([], 1.2), "unl": verdict([], 1.3), "b": verdict([0], 5.0)}
    chosen, why = choose_candidate([path, unlearnt, best], scans)
    assert chosen is unlearnt  # "b" is flagged; the tie on accuracy goes to the lower loss
    assert "2 of 3 candidates" in why
    # A universal label flipper (untargeted index above its threshold) is a finding too.
    scans["unl"].untargeted_index, scans["unl"].untargeted_threshold = 1.6, 1.0
    chosen, why = choose_candidate([path, unlearnt, best], scans)
    assert chosen is path and "1 of 3 candidates" in why
    scans["path"], scans["unl"] = verdict([1], 4.0), verdict([0], 3.5)
    chosen, why = choose_candidate([path, unlearnt, best], scans)
    assert chosen is unlearnt and "may not have worked" in why  # all flagged: least suspicious
    scans["unl"].untargeted_index, scans["unl"].untargeted_threshold = 2.0, 1.0  # 2.0 > 4/3
    chosen, _ = choose_candidate([path, unlearnt, best], scans)
    assert chosen is path


def test_choice_ties_within_the_held_out_resolution_and_takes_the_preferred_candidate():
    from modeconn.defenses.repair import Candidate, choose_candidate
    from modeconn.defenses.repair.choice import holdout_resolution
    from modeconn.defenses.scan import ScanResult

    def cand(name: str, acc: float, loss: float) -> Candidate:
        return Candidate(name, {"bonafide_holdout_acc": acc, "bonafide_holdout_loss": loss})

    path, distilled = cand("path", 1.0, 0.12), cand("distill", 0.9, 0.20)
    nc = cand("nc", 0.9, 0.10)
    scans = {n: ScanResult({}, {}, [1.0, 1.0], [], 3.0) for n in ("path", "distill", "nc")}
    # Ten held-out images: one image (0.1) is within the resolution.
    chosen, why = choose_candidate([path, nc, distilled], scans, 10, preferred={"distill"})
    assert chosen is distilled and "resolution (0.100)" in why and "cannot tell" in why
    chosen, why = choose_candidate([path, nc, distilled], scans, 10)
    assert chosen is nc and "lowest held-out loss" in why
    # 500 images resolve 1.3 points: 10 points apart is no tie, the accuracy decides.
    chosen, why = choose_candidate([path, distilled], scans, 500, preferred={"distill"})
    assert chosen is path and "the best" in why
    assert holdout_resolution(0.9, None) == 0.0 and holdout_resolution(1.0, 40) == 0.025


def test_backdoored_digits_model_is_tampered(digits_backdoor: Path):
    summary = json.loads((digits_backdoor / "summary.json").read_text())
    assert summary["asr"] > 0.8 and summary["clean_acc"] > 0.8


def test_noisy_models_scale_with_sigma(digits_backdoor: Path):
    model = load_model(digits_backdoor).model
    (small,) = noisy_models(model, 0.01, 1, seed=0)
    (large,) = noisy_models(model, 0.5, 1, seed=0)
    w = dict(model.named_parameters())
    for name, p in small.named_parameters():
        rel = ((p - w[name]).norm() / w[name].norm()).item()
        assert rel == pytest.approx(0.01, rel=1e-3)
    assert all(torch.isfinite(p).all() for p in large.parameters())


def test_fine_pruning_keeps_pruned_channels_at_zero(digits_backdoor: Path, digits_bonafide):
    ckpt = load_model(digits_backdoor)
    data = digits_bonafide
    pruned_once = copy.deepcopy(ckpt.model)
    masks = prune_channels(pruned_once, "net.conv2", torch.tensor([0, 1]))
    assert pruned_once.get_submodule("net.conv2").weight[:2].abs().sum() == 0
    assert set(masks) >= {"net.conv2.weight"}
    tuned, fraction = fine_prune(
        ckpt.model,
        data.eval_loader("bonafide"),
        data.eval_loader("bonafide_holdout"),
        data.train_loader(32, split="bonafide"),
        TrainConfig(epochs=2, batch_size=32, lr=0.01),
        max_drop=0.1,
    )
    assert 0 < fraction < 1
    w = tuned.get_submodule("net.conv2").weight
    zero_channels = (w.flatten(1).abs().sum(1) == 0).sum().item()
    assert zero_channels == round(fraction * w.shape[0])
    assert evaluate_model(tuned, data.eval_loader("test"))["acc"] > 0.5


@pytest.mark.slow
@pytest.mark.timeout(1200)  # every baseline and a sweep: 7+ min beside another job on 2 cores
def test_repair_cli_end_to_end(tmp_path: Path, capsys, digits_backdoor: Path):
    out = tmp_path / "repair"
    res = run_cli(
        capsys,
        "repair",
        digits_backdoor,
        "--out",
        out,
        "--bonafide",
        "300",
        "--epochs",
        "6",
        "--finetune-epochs",
        "3",
        "--points",
        "5",
        "--baselines",
        "--sweep",
        "200",
        "--batch-size",
        "32",
        "--scan-steps",
        "100",
        "-q",
    )
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 < summary["t"] < 1.0
    assert summary["method"] in ("path repair", "NC-unlearning", "distillation unlearning")
    assert {"asr", "tampered_asr", "clean_acc", "fine_tuning_asr", "retuning_asr"} <= set(summary)
    assert "distillation_unlearning_asr" in summary  # auto builds it below 1,000 images
    assert {"path_repair_eot_asr", "nc_unlearning_asr", "path_repair_max_anomaly_index"} <= set(
        summary
    )
    assert summary["tampered_flagged_classes"] == [0]  # the scan finds the target
    assert summary["repaired_flagged_classes"] == []  # and the chosen model passes it
    steps = [
        "scan",
        "unlearning",
        "curve_and_path",
        "verification_scans",
        "retuning",
        "references",
        "baselines",
        "sweep",
    ]
    assert all(summary[f"seconds_{step}"] >= 0 for step in steps)
    assert not any(isinstance(v, dict) for v in summary.values())  # flat keys
    assert all(k.endswith("flagged_classes") for k, v in summary.items() if isinstance(v, list))
    for name in (
        "repaired.safetensors",
        "curve.safetensors",
        "path.csv",
        "comparison.csv",
        "comparison.md",
        "sweep.csv",
        "repair_path.png",
        "repair_candidates.png",
        "repair_sweep.png",
        "scans/tampered/triggers_mask.png",
        "scans/path_repair/scan.md",
    ):
        assert (out / name).exists(), name
    sweep_header = (out / "sweep.csv").read_text().splitlines()[0].split(",")
    assert {"bonafide", "clean_acc", "asr", "retuning_asr"} <= set(sweep_header)
    table = (out / "comparison.md").read_text()
    for row in ("path repair", "NC-unlearning", "fine-tuning", "from scratch", "noisy model"):
        assert row in table
    assert "fine-pruning" in table and "retuning_asr" in table
    assert "| FST |" in table and "| ANP |" in table
    assert {"fst_asr", "anp_asr", "fst_retuning_asr", "anp_clean_acc"} <= set(summary)
    repaired = load_model(out / "repaired.safetensors")
    assert repaired.attack["type"] == "backdoor"
    assert repaired.meta["repair"]["method"] == summary["method"]
    header = (out / "path.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["t", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert "asr" in header and "bonafide_holdout_acc" in header
    res = run_cli(capsys, "report", out)
    assert res.code == 0 and (out / "report.html").exists()


def test_repair_errors(tmp_path: Path, capsys, digits_backdoor: Path, digits_lenet: Path):
    assert_one_line_error(
        run_cli(capsys, "repair", tmp_path / "nope", "--out", tmp_path / "a"), "not found"
    )
    assert_one_line_error(
        run_cli(capsys, "repair", digits_backdoor, "--out", tmp_path / "b", "--t", "1.5"), "--t"
    )
    assert_one_line_error(
        run_cli(capsys, "repair", digits_backdoor, "--out", tmp_path / "c", "--sweep", "a,b"),
        "--sweep",
    )
    result = run_cli(capsys, "repair", digits_backdoor, "--out", tmp_path / "d", "--bonafide", "0")
    assert_one_line_error(result, "--bonafide must be positive")
    assert not (tmp_path / "d").exists()
    result = run_cli(capsys, "repair", digits_backdoor, "--out", tmp_path / "m", "--method", "x")
    assert_one_line_error(result, "unknown repair method 'x'")
    assert not (tmp_path / "m").exists()
    for bad, message in (("12", "class 12 to unlearn is not a class"), ("x", "--unlearn-class")):
        where = tmp_path / f"class-{bad}"
        args = ("--out", where, "--bonafide", "200", "--unlearn-class", bad)
        result = run_cli(capsys, "repair", digits_backdoor, *args)
        assert_one_line_error(result, message)
        assert not where.exists()
    from modeconn.commands.repair import run_repair

    out, data = tmp_path / "e", DataConfig(dataset=None, bonafide=0.0001)
    with pytest.raises(ModeconnError, match="'bonafide' split is empty"):
        run_repair([digits_backdoor], out, data=data, progress=False)
    assert not out.exists()  # checked before the run directory is written


@pytest.mark.slow
def test_path_eval_measures_the_endpoints_attack(tmp_path: Path, capsys, digits_backdoor: Path):
    out = tmp_path / "repair"
    res = run_cli(
        capsys,
        "repair",
        digits_backdoor,
        "--out",
        out,
        "--bonafide",
        "200",
        "--epochs",
        "2",
        "--finetune-epochs",
        "1",
        "--points",
        "5",
        "--no-eot",
        "--batch-size",
        "32",
        "--scan-steps",
        "20",
        "-q",
    )
    assert res.code == 0, res.err
    res = run_cli(
        capsys,
        "path-eval",
        out / "curve.safetensors",
        "--out",
        tmp_path / "pe",
        "--points",
        "3",
        "--no-segment",
        "-q",
    )
    assert res.code == 0, res.err
    header = (tmp_path / "pe" / "path.csv").read_text().splitlines()[0].split(",")
    assert "asr" in header and "poisoned_acc" in header


@pytest.mark.slow
def test_demo_cli_end_to_end_and_reuses_finished_steps(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--dataset", "digits", "--epochs", "4", "--repair-epochs"]
    args += ["4", "--bonafide", "300", "--scenario", "patch", "--scenario", "injection"]
    args += ["--scan-steps", "30"]
    res = run_cli(capsys, *args, "--no-baselines", "-q")
    assert res.code == 0, res.err
    table = (out / "results.md").read_text()
    assert "| patch |" in table and "| injection |" in table and table in res.out
    for scenario, method, key in (("patch", "auto", "asr"), ("injection", "path", "inj")):
        summary = json.loads((out / scenario / "summary.json").read_text())
        assert summary["scenario"] == scenario and 0.0 < summary["t"] < 1.0
        assert any(k.startswith(key) for k in summary)
        assert (out / scenario / "report.html").exists()
        config = json.loads((out / scenario / "repair" / "config.json").read_text())
        assert config["repair"]["method"] == method
    # Backdoor scenarios train the two tampered models and a clean reference, which is
    # evaluated and retuning-attacked like them; injection injects errors into the clean one.
    assert {"backdoor_a", "backdoor_b", "clean"} <= {p.name for p in (out / "patch").iterdir()}
    assert (out / "injection" / "clean").exists()
    patch = json.loads((out / "patch" / "summary.json").read_text())
    assert {"clean_reference_clean_acc", "clean_reference_retuning_asr"} <= set(patch)
    assert "| patch | clean reference |" in table
    # A second run reuses every finished step: no model is trained again.
    models = sorted(out.rglob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in models]
    res = run_cli(capsys, *args, "--no-baselines", "-q")
    assert res.code == 0, res.err
    assert [p.stat().st_mtime_ns for p in models] == stamps


@pytest.mark.slow
def test_repair_method_tsc_builds_only_the_symmetry_candidate(tmp_path: Path, digits_backdoor):
    from modeconn.commands.repair import run_repair
    from modeconn.defenses.repair import RepairConfig, with_budget

    cfg = with_budget(
        RepairConfig(method="tsc", points=5, eot=False),
        epochs=4,
        batch_size=32,
        scan_steps=40,
    )
    data = DataConfig(dataset=None, bonafide=300)
    summary = run_repair([digits_backdoor], tmp_path / "r", config=cfg, data=data, progress=False)
    assert summary["method"] == "TSC"
    assert summary["tsc_asr"] == summary["asr"] < summary["tampered_asr"]
    assert "nc_unlearning_clean_acc" not in summary and "path_repair_clean_acc" not in summary
    stages = {p.name for p in (tmp_path / "r" / "stages").iterdir()}
    assert stages == {"tsc_r0_away", "tsc_r0_back"}  # no unlearning, no other curve
    assert "| TSC |" in (tmp_path / "r" / "comparison.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three repairs with every baseline and two distillation students
def test_interrupted_repair_resumes_to_the_uninterrupted_result(
    tmp_path: Path, monkeypatch, digits_backdoor: Path
):
    import modeconn.training as training
    from modeconn.commands.repair import run_repair
    from modeconn.defenses.repair import RepairConfig, with_budget

    def config() -> RepairConfig:
        cfg = RepairConfig(points=5, baselines=True, eot_limit=64, scratch_epochs=3)
        cfg = dataclasses.replace(cfg, anp=dataclasses.replace(cfg.anp, steps=30))
        cfg = with_budget(cfg, epochs=3, scan_steps=40, unlearn_epochs=3)
        return dataclasses.replace(
            cfg,
            curve=dataclasses.replace(cfg.curve, batch_size=32),
            fst=dataclasses.replace(cfg.fst, batch_size=32),
        )

    kwargs = dict(progress=False, device="cpu", data=DataConfig(dataset=None, bonafide=300))
    full = run_repair([digits_backdoor], tmp_path / "full", config=config(), **kwargs)
    real = training.save_state

    def stop_in_the_curve(run, model, optimizer, epoch, history):
        real(run, model, optimizer, epoch, history)
        if run.path.name == "curve" and epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_state", stop_in_the_curve)
    with pytest.raises(KeyboardInterrupt):
        run_repair([digits_backdoor], tmp_path / "part", config=config(), **kwargs)
    monkeypatch.setattr(training, "save_state", real)
    with pytest.raises(ModeconnError, match="resume=True"):
        run_repair([digits_backdoor], tmp_path / "part", config=config(), **kwargs)
    trained: list[tuple[str, int]] = []

    def record(run, model, optimizer, epoch, history):
        trained.append((run.path.name, epoch))
        real(run, model, optimizer, epoch, history)

    monkeypatch.setattr(training, "save_state", record)
    resumed = run_repair(
        [digits_backdoor], tmp_path / "part", config=config(), resume=True, **kwargs
    )
    # The unlearnt endpoints had finished and are not trained again; the curve resumes at 3
    # (distillation, built after the curve, had not started: it trains from its first epoch).
    assert ("curve", 3) in trained and not any(n in ("unlearn_a", "unlearn_b") for n, _ in trained)
    assert ("unlearn_distill", 1) in trained
    assert [e for n, e in trained if n == "curve"] == [3]

    def figures(summary: dict) -> dict:
        return {k: v for k, v in summary.items() if not k.startswith("seconds_")}

    assert figures(resumed) == figures(full)
    for name in ("path.csv", "comparison.csv"):
        assert (tmp_path / "part" / name).read_text() == (tmp_path / "full" / name).read_text()
    w1 = load_model(tmp_path / "full" / "repaired.safetensors").model.state_dict()
    w2 = load_model(tmp_path / "part" / "repaired.safetensors").model.state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    stages = tmp_path / "part" / "stages"
    names = {p.name for p in stages.iterdir()}
    assert names == {
        "unlearn_a",
        "unlearn_b",
        "curve",
        "unlearn_distill",  # auto builds it at every budget; below 1,000 bonafide images
        "unlearn_distill_2",  # two students, averaged
        "fine_tuning",
        "from_scratch",
        "fine_pruning",
        "fst",
        "ft_sam",
        "sau",
    }
    assert not any((stages / n / "state").exists() for n in names)
    epochs = [json.loads(r)["epoch"] for r in (stages / "curve" / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3]
    with pytest.raises(ModeconnError, match="finished repair"):
        run_repair([digits_backdoor], tmp_path / "part", config=config(), resume=True, **kwargs)


def test_unlearning_path_endpoint_b_is_aligned_onto_a(
    digits_backdoor: Path, digits_lenet: Path, digits_bonafide
):
    from modeconn.connectivity.alignment import weight_distance
    from modeconn.defenses.repair import aligned_endpoint
    from modeconn.models.permutation import apply_permutation, permutation_spec, random_permutations

    a, b = load_model(digits_backdoor), load_model(digits_lenet)
    spec = permutation_spec(b.model)  # both fixtures start from one seed: scramble B's units
    scrambled = apply_permutation(spec, b.model.state_dict(), random_permutations(spec, 3))
    b.model.load_state_dict(scrambled)
    data = digits_bonafide
    aligned, note = aligned_endpoint(a.model, b.model, seed=0)
    assert note == "B aligned to A by weight matching"
    permuted = copy.deepcopy(b.model)
    permuted.load_state_dict(aligned)
    x = next(iter(data.eval_loader("test", 64)))[0]
    with torch.no_grad():
        assert torch.allclose(permuted(x), b.model(x), atol=1e-5)  # the same function
    sa = a.model.state_dict()
    assert weight_distance(sa, aligned) < 0.7 * weight_distance(sa, b.model.state_dict())
