"""Tests of the model zoo: every architecture at every input size, normalisation, the registry."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from modeconn.errors import ModeconnError
from modeconn.models import (
    ModelSpec,
    Normalize,
    NormalizedModel,
    build_model,
    last_conv_name,
    last_linear_name,
    model_names,
    register_model,
)

# Small kwargs so that every architecture builds and runs in milliseconds on a CPU.
TINY_KWARGS: dict[str, dict] = {
    "mlp": {"hidden": [16, 8]},
    "lenet": {},
    "vgg11": {"width": 4},
    "vgg16": {"width": 4},
    "vgg11_bn": {"width": 4},
    "vgg16_bn": {"width": 4},
    "preact_resnet18": {"width": 4},
    "resnet20": {},
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    "vit_tiny": {"depth": 1, "dim": 32, "heads": 4},
}
SHAPES = [(1, 28), (3, 32), (1, 8)]  # (channels, image size): Fashion-MNIST, CIFAR, digits
NUM_CLASSES = 7


def tiny_model(arch: str, channels: int = 1, size: int = 8, **overrides: object) -> NormalizedModel:
    """Build ``arch`` small, with a non-trivial normalisation."""
    kwargs = {**TINY_KWARGS[arch], **overrides}
    spec = ModelSpec(
        arch, kwargs, channels, size, NUM_CLASSES, (0.5,) * channels, (0.25,) * channels
    )
    return build_model(spec)


def test_every_registered_model_has_tiny_kwargs() -> None:
    assert set(model_names()) == set(TINY_KWARGS)


@pytest.mark.parametrize(("channels", "size"), SHAPES)
@pytest.mark.parametrize("arch", sorted(TINY_KWARGS))
def test_forward_shape_and_gradients(arch: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = tiny_model(arch, channels, size).train()
    x = torch.rand(3, channels, size, size)
    logits = model(x)
    assert logits.shape == (3, NUM_CLASSES)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("arch", sorted(TINY_KWARGS))
def test_input_hessian_vector_product(arch: str) -> None:
    """Double backprop w.r.t. the input works (needed for input-Hessian eigenvalues)."""
    torch.manual_seed(0)
    model = tiny_model(arch, 1, 8).eval()
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1]))
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    (hvp,) = torch.autograd.grad((grad * torch.randn_like(grad)).sum(), x)
    assert hvp.shape == x.shape
    assert torch.isfinite(hvp).all()


@pytest.mark.parametrize("arch", sorted(TINY_KWARGS))
def test_functional_call_reproduces_forward(arch: str) -> None:
    torch.manual_seed(0)
    model = tiny_model(arch, 3, 8).eval()
    x = torch.rand(2, 3, 8, 8)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.testing.assert_close(functional_call(model, params, (x,)), model(x))


def test_normalize_maps_unit_interval_to_plus_minus_one() -> None:
    net = nn.Flatten()
    model = NormalizedModel(net, mean=(0.5,), std=(0.5,))
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(model(x), (2 * x - 1).flatten(1))


def test_normalize_per_channel() -> None:
    layer = Normalize((0.1, 0.2, 0.3), (1.0, 2.0, 4.0))
    x = torch.ones(1, 3, 2, 2)
    torch.testing.assert_close(layer(x)[0, :, 0, 0], torch.tensor([0.9, 0.4, 0.175]))


@pytest.mark.parametrize(("mean", "std"), [((0.5, 0.5), (1.0,)), ((0.5,), (0.0,)), ((), ())])
def test_normalize_rejects_bad_statistics(mean: tuple, std: tuple) -> None:
    with pytest.raises(ModeconnError):
        Normalize(mean, std)


def test_state_dict_holds_only_network_tensors() -> None:
    model = tiny_model("lenet", 1, 8, batch_norm=True)
    keys = set(model.state_dict())
    assert not any(key.startswith("normalize.") for key in keys)
    assert "net.bn1.running_mean" in keys
    fresh = tiny_model("lenet", 1, 8, batch_norm=True)
    fresh.load_state_dict(model.state_dict())  # strict loading works without the buffers


def test_spec_round_trips_through_json() -> None:
    spec = ModelSpec("mlp", {"hidden": (16, 8)}, 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2,) * 3)
    data = json.loads(json.dumps(spec.to_dict()))
    assert ModelSpec.from_dict(data) == spec
    assert data["kwargs"] == {"hidden": [16, 8]}


GOOD_SPEC = {"arch": "mlp", "kwargs": {}, "in_channels": 3, "image_size": 8, "num_classes": 2}


@pytest.mark.parametrize(
    "changes",
    [
        {"num_classes": None},  # missing field
        {"colour": "red"},  # unknown field
        {"in_channels": 0},
        {"image_size": 2.5},
        {"kwargs": {"activation": object()}},  # not JSON-safe
        {"mean": [0.5, 0.5], "std": [1.0, 1.0]},  # neither 1 nor in_channels values
        {"arch": ""},
    ],
)
def test_bad_specs_raise(changes: dict) -> None:
    data = {**GOOD_SPEC, **changes}
    data = {key: value for key, value in data.items() if value is not None}
    ModelSpec.from_dict(GOOD_SPEC)  # the unchanged spec is fine
    with pytest.raises(ModeconnError):
        ModelSpec.from_dict(data)


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("no_such_model", {}),
        ("lenet", {"no_such_kwarg": 1}),
        ("lenet", {"num_classes": 3}),
        ("wide_resnet", {"depth": 12}),
        ("vit_tiny", {"patch_size": 3}),
        ("vit_tiny", {"dim": 32, "heads": 3}),
        ("resnet20", {"shortcut": "C"}),
        ("no_such_module_xyz:factory", {}),
        ("json:no_such_factory", {}),
    ],
)
def test_build_errors_are_modeconn_errors(arch: str, kwargs: dict) -> None:
    with pytest.raises(ModeconnError) as info:
        build_model(ModelSpec(arch, kwargs, 1, 28, 10))
    assert "\n" not in str(info.value)


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ModeconnError, match="lenet"):
        build_model(ModelSpec("lenett", {}, 1, 28, 10))


def test_vit_default_patch_divides_image() -> None:
    model = build_model(ModelSpec("vit_tiny", TINY_KWARGS["vit_tiny"], 1, 6, 3))
    assert model.net.patch_embed.kernel_size == (3, 3)
    assert model(torch.rand(2, 1, 6, 6)).shape == (2, 3)


USER_MODULE = textwrap.dedent(
    """
    from torch import nn

    def full(in_channels, image_size, num_classes, hidden=4):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def classes_only(num_classes):
        # mean over (C, H, W) -> (N, 1): works for any input shape
        return nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(1, num_classes))

    def broken(**kwargs):
        return "not a module"
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    """A user's own model file on sys.path; returns its module name."""
    (tmp_path / "my_models_for_test.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_models_for_test"


def test_user_factory_gets_shape_and_kwargs(user_module: str) -> None:
    model = build_model(ModelSpec(f"{user_module}:full", {"hidden": 5}, 2, 4, 3))
    assert model.net[1].in_features == 2 * 4 * 4
    assert model.net[1].out_features == 5
    assert model(torch.rand(2, 2, 4, 4)).shape == (2, 3)


def test_user_factory_with_only_num_classes(user_module: str) -> None:
    model = build_model(ModelSpec(f"{user_module}:classes_only", {}, 3, 8, 4))
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize(("factory", "kwargs"), [("full", {"bad": 1}), ("broken", {})])
def test_user_factory_errors(user_module: str, factory: str, kwargs: dict) -> None:
    with pytest.raises(ModeconnError):
        build_model(ModelSpec(f"{user_module}:{factory}", kwargs, 1, 8, 2))


def test_model_kwargs_are_checked_before_anything_is_built(user_module: str) -> None:
    from modeconn.errors import InvalidArgument
    from modeconn.models import check_model_kwargs

    for arch, kwargs in TINY_KWARGS.items():  # every registered model takes its own options
        check_model_kwargs(arch, kwargs)
    check_model_kwargs("lenet", None)
    check_model_kwargs(f"{user_module}:broken", {"anything": 1})  # **kwargs takes every name
    with pytest.raises(
        InvalidArgument,
        match=r"'lenet' takes no option hidden \(its options: "
        r"batch_norm\)",
    ):
        check_model_kwargs("lenet", {"hidden": [8]})
    with pytest.raises(InvalidArgument, match="num_classes belong in the model spec"):
        check_model_kwargs("mlp", {"num_classes": 3})
    with pytest.raises(InvalidArgument, match="takes no option bad"):
        check_model_kwargs(f"{user_module}:full", {"bad": 1})
    with pytest.raises(InvalidArgument, match="unknown architecture"):
        check_model_kwargs("lenett", {})


def test_register_model_makes_a_name_buildable() -> None:
    @register_model("test_only_linear")
    def linear(*, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))

    try:
        assert "test_only_linear" in model_names()
        model = build_model(ModelSpec("test_only_linear", {}, 1, 4, 2))
        assert model(torch.rand(1, 1, 4, 4)).shape == (1, 2)
        with pytest.raises(ModeconnError):
            register_model("test_only_linear")(lambda **_: nn.Identity())
    finally:
        from modeconn.models import registry

        registry._REGISTRY.pop("test_only_linear")


def test_last_layer_names() -> None:
    lenet = tiny_model("lenet", 1, 28)
    assert last_linear_name(lenet) == "net.fc2.weight"
    assert last_conv_name(lenet) == "net.conv2"
    vgg = tiny_model("vgg11_bn", 3, 32)
    params = dict(vgg.named_parameters())
    assert params[last_linear_name(vgg)].shape[0] == NUM_CLASSES
    conv = vgg.get_submodule(last_conv_name(vgg))
    assert isinstance(conv, nn.Conv2d)
    assert conv is [m for m in vgg.modules() if isinstance(m, nn.Conv2d)][-1]
    with pytest.raises(ModeconnError):
        last_conv_name(tiny_model("mlp"))
    with pytest.raises(ModeconnError):
        last_linear_name(nn.Conv2d(1, 1, 1))


def test_vgg_pools_until_one_pixel() -> None:
    model = tiny_model("vgg16", 1, 8)
    pools = [m for m in model.net.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3  # 8 -> 4 -> 2 -> 1, then no more pooling
    assert model.net.classifier[2].in_features == 8 * 4  # 512 * width / 64 channels, 1×1


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (4, 6, 6), (1, 2, 2, 5)])
def test_fast_max_pool_equals_torch(shape) -> None:
    from modeconn.models.pooling import MaxPool2x2

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 2).round().relu()  # ties and odd sizes
    with torch.no_grad():  # the fast path
        assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2))
    x.requires_grad_()  # with gradients: PyTorch's kernel, gradients included
    grad = torch.randn(F.max_pool2d(x, 2).shape, generator=gen)
    (ours,) = torch.autograd.grad(MaxPool2x2()(x), x, grad)
    (theirs,) = torch.autograd.grad(F.max_pool2d(x, 2), x, grad)
    assert torch.equal(ours, theirs)
