"""Weight-space symmetry: permutation specs, weight/activation matching, ``modeconn align``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from torch import nn

from modeconn.checkpoints import load_model, save_model
from modeconn.connectivity.alignment import (
    activation_matching,
    segment_barrier,
    weight_distance,
    weight_matching,
)
from modeconn.errors import ModeconnError
from modeconn.models import ModelSpec, build_model
from modeconn.models.permutation import (
    apply_permutation,
    identity_permutations,
    invert_permutations,
    permutation_spec,
    random_permutations,
)
from modeconn.models.sizing import model_spec_for
from modeconn.training import TrainConfig, train

#: Every zoo architecture (and variant) at a size that runs in milliseconds on 8×8 inputs.
TINY: dict[str, tuple[str, dict]] = {
    "mlp": ("mlp", {"hidden": [16, 8]}),
    "lenet": ("lenet", {}),
    "lenet_bn": ("lenet", {"batch_norm": True}),
    "vgg11": ("vgg11", {"width": 4}),
    "vgg16": ("vgg16", {"width": 4}),
    "vgg11_bn": ("vgg11_bn", {"width": 4}),
    "vgg16_bn": ("vgg16_bn", {"width": 4}),
    "preact_resnet18": ("preact_resnet18", {"width": 4}),
    "wide_resnet": ("wide_resnet", {"depth": 10, "widen_factor": 2}),
    "resnet20_pad": ("resnet20", {"shortcut": "A"}),
    "resnet20_conv": ("resnet20", {"shortcut": "B"}),
    "vit_tiny": ("vit_tiny", {"depth": 2, "dim": 16, "heads": 4}),
}


def random_model(name: str, seed: int = 0) -> nn.Module:
    """A tiny zoo model with generic weights and BatchNorm statistics (no ties, no zeros)."""
    arch, kwargs = TINY[name]
    torch.manual_seed(seed)
    model = build_model(ModelSpec(arch, kwargs, 1, 8, 10, (0.5,), (0.25,)))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
        model.train()
        for _ in range(2):
            model(torch.rand(16, 1, 8, 8))
    return model.eval()


def loaded(like: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``like`` holding ``state``, in eval mode."""
    import copy

    model = copy.deepcopy(like)
    model.load_state_dict(state)
    return model.eval()


def parameter_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def images(n: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_random_permutation_keeps_the_function(name: str):
    model = random_model(name).double()  # exact up to rounding, whatever the logits' scale
    spec = permutation_spec(model)
    state = model.state_dict()
    permuted = apply_permutation(spec, state, random_permutations(spec, seed=3))
    changed = [k for k in state if not torch.equal(state[k], permuted[k])]
    assert len(changed) >= len(spec.groups), changed  # the permutation is not a no-op
    x = images().double()
    with torch.no_grad():
        diff = (loaded(model, permuted)(x) - model(x)).abs().max().item()
    assert diff < 1e-5, f"{name}: logits moved by {diff}"


def test_spec_names_groups_after_modules_and_permutes_bn_statistics():
    model = random_model("lenet_bn")
    spec = permutation_spec(model)
    assert spec.groups == {"net.conv1": 32, "net.conv2": 64, "net.fc1": 128}
    assert spec.tensors["net.bn1.running_mean"].axes == (("net.conv1",),)
    assert "net.bn1.running_var" in spec.buffers
    assert spec.tensors["net.fc1.weight"].view == (128, 64, 4)  # flattened 2×2 maps
    assert spec.tensors["net.fc2.weight"].axes == (None, ("net.fc1",))


def test_zero_padding_shortcut_ties_the_copied_channels_and_frees_the_padding():
    spec = permutation_spec(random_model("resnet20_pad"))
    stream = spec.tensors["net.blocks.8.bn2.weight"].axes[0]  # last stage: 64 channels
    assert stream == (
        "net.blocks.6.shortcut.pad_before",
        "net.blocks.3.shortcut.pad_before",
        "net.conv1",
        "net.blocks.3.shortcut.pad_after",
        "net.blocks.6.shortcut.pad_after",
    )
    assert [spec.groups[g] for g in stream] == [16, 8, 16, 8, 16]


def test_vit_spec_shares_the_residual_stream_and_permutes_heads_as_blocks():
    spec = permutation_spec(random_model("vit_tiny"))
    res = ("net.residual",)
    for name in ("net.pos_embed", "net.cls_token", "net.blocks.1.norm2.weight", "net.norm.bias"):
        assert spec.tensors[name].axes[-1] == res, name
    qkv = spec.tensors["net.blocks.0.attn.qkv.weight"]
    assert qkv.view == (3, 4, 4, 16)
    assert qkv.axes == (None, ("net.blocks.0.attn.heads",), ("net.blocks.0.attn.head_dims",), res)
    assert spec.blocks == {
        f"net.blocks.{k}.attn.heads": f"net.blocks.{k}.attn.head_dims" for k in range(2)
    }


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_models_without_a_spec_are_refused_in_one_sentence():
    with pytest.raises(ModeconnError, match="no permutation spec for Custom models"):
        permutation_spec(Custom())
    chain = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), Scale(), nn.Linear(8, 10))
    with pytest.raises(ModeconnError, match="layer '2' is a Scale"):
        permutation_spec(chain)
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ModeconnError, match="grouped conv"):
        permutation_spec(grouped)


def test_spec_check_and_permutations_are_validated():
    model = random_model("mlp")
    spec = permutation_spec(model)
    state = model.state_dict()
    with pytest.raises(ModeconnError, match="does not cover tensor 'extra'"):
        spec.check({**state, "extra": torch.zeros(1)})
    with pytest.raises(ModeconnError, match="not in the model"):
        spec.check({k: v for k, v in state.items() if k != "net.1.bias"})
    with pytest.raises(ModeconnError, match=r"axis 1 of 'net\.3\.weight' has 15 entries"):
        spec.check({**state, "net.3.weight": torch.zeros(8, 15)})
    lenet = permutation_spec(random_model("lenet"))
    with pytest.raises(ModeconnError, match="does not fit its shape"):
        lenet.check({**random_model("lenet").state_dict(), "net.fc1.weight": torch.zeros(128, 7)})
    perms = identity_permutations(spec)
    perms["net.1"] = torch.zeros(16, dtype=torch.long)
    with pytest.raises(ModeconnError, match="not a permutation of 16"):
        apply_permutation(spec, state, perms)
    perms = random_permutations(spec, 1)
    back = apply_permutation(
        spec, apply_permutation(spec, state, perms), invert_permutations(perms)
    )
    assert all(torch.equal(back[k], state[k]) for k in state)


# --- matching ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY))
def test_weight_matching_undoes_a_random_permutation_exactly(name: str):
    model = random_model(name)
    spec = permutation_spec(model)
    state_a = model.state_dict()
    state_b = apply_permutation(spec, state_a, random_permutations(spec, seed=5))
    aligned = apply_permutation(spec, state_b, weight_matching(spec, state_a, state_b, seed=0))
    wrong = [k for k in state_a if not torch.equal(aligned[k], state_a[k])]
    assert not wrong, f"{name}: {wrong[:3]}"


@pytest.mark.parametrize("name", ["mlp", "lenet_bn", "resnet20_pad", "vit_tiny"])
def test_misalignment_keeps_the_function_and_moves_away_from_a(name: str):
    a, b = random_model(name, seed=0).double(), random_model(name, seed=1).double()
    spec = permutation_spec(a)
    state_a, state_b = a.state_dict(), b.state_dict()
    perms = weight_matching(spec, state_a, state_b, misalign=True)
    state_m = apply_permutation(spec, state_b, perms)
    x = images().double()
    with torch.no_grad():
        assert (loaded(b, state_m)(x) - b(x)).abs().max() < 1e-5
    names = parameter_names(a)
    before, after = (
        weight_distance(state_a, state_b, names),
        weight_distance(state_a, state_m, names),
    )
    aligned = apply_permutation(spec, state_b, weight_matching(spec, state_a, state_b))
    closer = weight_distance(state_a, aligned, names)
    assert closer < before < after, (closer, before, after)


@pytest.mark.parametrize("name", ["mlp", "lenet_bn", "preact_resnet18", "resnet20_pad", "vit_tiny"])
def test_activation_matching_undoes_a_random_permutation(name: str):
    a = random_model(name)
    spec = permutation_spec(a)
    state_a = a.state_dict()
    b = loaded(a, apply_permutation(spec, state_a, random_permutations(spec, seed=7)))
    loader = [(images(64, seed), torch.zeros(64)) for seed in range(3)]
    perms = activation_matching(a, b, spec, loader)
    aligned = apply_permutation(spec, b.state_dict(), perms)
    wrong = [k for k in state_a if not torch.equal(aligned[k], state_a[k])]
    assert not wrong, f"{name}: {wrong[:3]}"  # the ViT's heads come from the weight fallback


# --- trained models on digits ------------------------------------------------------------------

MLP_KWARGS = {"hidden": [32, 32]}


@pytest.fixture(scope="module")
def trained_mlps(digits) -> tuple[nn.Module, nn.Module]:
    """Two MLPs trained on digits from different seeds (different basins)."""
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_model(model_spec_for("mlp", digits.info, MLP_KWARGS))
        config = TrainConfig(epochs=10, batch_size=64, lr=0.05, seed=seed)
        train(model, digits.train_loader(64, seed=seed), config, progress=False)
        models.append(model.eval())
    return models[0], models[1]


def test_alignment_lowers_the_barrier_between_trained_mlps(digits, trained_mlps):
    a, b = trained_mlps
    spec = permutation_spec(a)
    state_a, state_b = a.state_dict(), b.state_dict()
    test, own = digits.eval_loader("test"), digits.eval_loader("train")

    def barrier(state):
        return segment_barrier(a, state_a, state, test, bn_loader=own, points=11).barrier

    unaligned = barrier(state_b)
    by_weights = barrier(apply_permutation(spec, state_b, weight_matching(spec, state_a, state_b)))
    by_activations = barrier(apply_permutation(spec, state_b, activation_matching(a, b, spec, own)))
    misaligned = barrier(
        apply_permutation(spec, state_b, weight_matching(spec, state_a, state_b, misalign=True))
    )
    figures = (
        f"barrier unaligned {unaligned:.4f}, weight-aligned {by_weights:.4f}, "
        f"activation-aligned {by_activations:.4f}, misaligned {misaligned:.4f}"
    )
    assert by_weights < unaligned - 0.1, figures
    assert by_activations < unaligned - 0.1, figures
    assert misaligned > unaligned, figures


def test_segment_barrier_recomputes_batchnorm_along_the_line(digits):
    model = random_model("lenet_bn")
    spec = permutation_spec(model)
    state = model.state_dict()
    test, own = digits.eval_loader("test"), digits.eval_loader("train")
    with pytest.raises(ModeconnError, match="bn_loader"):
        segment_barrier(model, state, state, test)
    # A permuted copy, aligned back, is the same model at every t: a flat line.
    copy = apply_permutation(spec, state, random_permutations(spec, seed=2))
    aligned = apply_permutation(spec, copy, weight_matching(spec, state, copy))
    flat = segment_barrier(model, state, aligned, test, bn_loader=own, points=3)
    assert flat.barrier == 0.0 and len(set(flat.test_errors)) == 1, flat.rows


# --- modeconn align ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_checkpoints(digits, trained_mlps, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("align_models")
    spec = model_spec_for("mlp", digits.info, MLP_KWARGS)
    paths = []
    for name, model in zip("ab", trained_mlps, strict=True):
        paths.append(
            save_model(root / name, model, spec, dataset="digits", metrics={"clean_acc": 0.9})
        )
    return paths[0].parent, paths[1].parent


@pytest.mark.slow
def test_align_command_writes_the_permuted_model_and_both_barriers(
    mlp_checkpoints, tmp_path: Path, capsys
):
    a, b = mlp_checkpoints
    out = tmp_path / "aligned"
    result = run_cli(capsys, "align", a, b, "--out", out, "--points", 6, "--quiet")
    assert result.code == 0, result.err
    for name in ("model.safetensors", "model.json", "permutation.safetensors", "path.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("barrier_unaligned", "barrier_aligned", "clean_acc_a", "clean_acc_b", "clean_acc"):
        assert 0 <= summary[key] <= 1, key
    assert summary["barrier_aligned"] < summary["barrier_unaligned"], summary
    assert summary["clean_acc"] == summary["clean_acc_b"]
    assert summary["max_log_prob_change"] < 1e-4
    assert summary["weight_distance_aligned"] < summary["weight_distance_unaligned"]
    header = (out / "path.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "t",
        *(
            f"{p}_{k}"
            for p in ("unaligned", "aligned")
            for k in ("test_loss", "test_acc", "test_error")
        ),
    ]
    assert len((out / "path.csv").read_text().splitlines()) == 7
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "weight" and config["data"]["dataset"] == "digits"
    side_b = json.loads((b / "model.json").read_text())
    side = json.loads((out / "model.json").read_text())
    assert side["model"] == side_b["model"] and side["metrics"] == side_b["metrics"]
    assert side["alignment"]["mode"] == "align"
    permuted, original = load_model(out), load_model(b)
    x = images()
    with torch.no_grad():
        assert (permuted.model(x) - original.model(x)).abs().max() < 1e-5
    again = run_cli(capsys, "align", a, b, "--out", out, "--quiet")
    assert_one_line_error(again, "--force")
    assert run_cli(capsys, "align", a, b, "--out", out, "--points", 3, "-q", "--force").code == 0


def test_run_align_misaligns_by_activations(mlp_checkpoints, tmp_path: Path):
    from modeconn.commands import run_align

    a, b = mlp_checkpoints
    summary = run_align(
        a, b, tmp_path / "mis", method="activation", mode="misalign", points=5, progress=False
    )
    assert summary["barrier_aligned"] > summary["barrier_unaligned"], summary
    assert summary["weight_distance_aligned"] > summary["weight_distance_unaligned"]
    assert summary["clean_acc"] == summary["clean_acc_b"]


@pytest.fixture
def custom_checkpoint(tmp_path: Path, monkeypatch) -> Path:
    """A checkpoint of a user's own architecture, importable as ``align_custom_net:build``."""
    (tmp_path / "align_custom_net.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Custom(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(64, 10)

                def forward(self, x):
                    return self.fc(x.flatten(1))

            def build(in_channels, image_size, num_classes):
                return Custom()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ModelSpec("align_custom_net:build", {}, 1, 8, 10, (0.3053,), (0.3759,))
    return save_model(tmp_path / "custom", build_model(spec), spec, dataset="digits").parent


def test_align_bad_input_is_one_line_and_writes_nothing(
    mlp_checkpoints, custom_checkpoint, digits, tmp_path: Path, capsys
):
    a, b = mlp_checkpoints
    lenet_spec = model_spec_for("lenet", digits.info)
    lenet = save_model(tmp_path / "lenet", build_model(lenet_spec), lenet_spec, dataset="digits")
    other_data = save_model(
        tmp_path / "fm", load_model(b).model, load_model(b).spec, dataset="fashion-mnist"
    )
    cases = [
        ((a, lenet.parent), "only two models of one architecture"),
        ((a, other_data.parent), "trained on digits"),
        ((custom_checkpoint, custom_checkpoint), "no permutation spec for Custom"),
        ((a, tmp_path / "missing"), "model file not found"),
        ((a, b, "--method", "cka"), "unknown alignment method"),
    ]
    for k, (args, fragment) in enumerate(cases):
        out = tmp_path / f"out{k}"
        result = run_cli(capsys, "align", *args, "--out", out, "--quiet")
        assert_one_line_error(result, fragment)
        assert result.code == 2
        assert not out.exists(), fragment
