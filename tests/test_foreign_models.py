"""A model modeconn did not train: weights without a sidecar read through ``--arch``, and the
weights given back in the user's own key names (``NAME.weights.safetensors``)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from safetensors.torch import load_file, save_file
from torch import nn

from modeconn.checkpoints import load_model, read_state_dict
from modeconn.data.registry import load_dataset
from modeconn.errors import ModeconnError
from modeconn.models import ModelSpec, build_network
from modeconn.models.foreign import ForeignArchitecture

#: This module's factory, as a user names their own architecture.
ARCH = f"{__name__}:make_net"
ARCH_ARGS = ("--arch", ARCH, "--arch-kwargs", '{"width": 6}', "--dataset", "digits")


class Residual(nn.Module):
    """conv → BatchNorm, added back to its input."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


class UserNet(nn.Module):
    """A user's own classifier: a stem, one residual block with BatchNorm, a linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.block = Residual(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(torch.relu(self.stem(x))).mean(dim=(2, 3)))


def make_net(in_channels: int = 1, num_classes: int = 10, width: int = 8) -> UserNet:
    """The factory ``--arch`` names (the input size is not needed: the head pools)."""
    return UserNet(in_channels, num_classes, width)


def _digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits test split as the user's code reads it: floats in [0, 1]."""
    raw = load_dataset("digits")
    return raw.test_x.float() / 255, raw.test_y


@pytest.fixture(scope="module")
def user_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[UserNet, Path]:
    """A UserNet trained a little by plain PyTorch on digits, saved with torch.save(state_dict)."""
    torch.manual_seed(0)
    net = make_net(width=6)
    raw = load_dataset("digits")
    x, y = raw.train_x.float() / 255, raw.train_y
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    net.train()
    for _ in range(5):
        order = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            batch = order[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()
    net.eval()
    path = tmp_path_factory.mktemp("user") / "suspect.pth"
    torch.save(net.state_dict(), path)
    return net, path


def _accuracy(net: nn.Module) -> float:
    x, y = _digits_test()
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def test_evaluate_reads_a_plain_state_dict(user_model, tmp_path, capsys):
    net, path = user_model
    result = run_cli(capsys, "evaluate", path, *ARCH_ARGS, "--out", tmp_path / "ev")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["clean_acc"] == pytest.approx(_accuracy(net), abs=1e-6)
    assert summary["clean_acc"] > 0.2  # trained, if briefly (chance: 0.1)
    config = json.loads((tmp_path / "ev" / "config.json").read_text())
    assert config["foreign_model"]["arch"] == ARCH


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"net": sd},
    ],
)
def test_the_usual_wrappers_and_the_module_prefix_are_read(user_model, tmp_path, wrap):
    net, _ = user_model
    torch.save(wrap(net.state_dict()), tmp_path / "w.pt")
    state = read_state_dict(tmp_path / "w.pt")
    assert set(state) == set(net.state_dict())


def test_the_model_goes_back_into_the_users_own_class(user_model, tmp_path, capsys):
    _, path = user_model
    out = tmp_path / "inj"
    result = run_cli(
        capsys,
        *("inject", path, *ARCH_ARGS, "--out", out),
        *("--num-targets", 2, "--num-keep", 100, "--steps", 30),
    )
    assert result.code == 0, result.err
    sidecar = json.loads((out / "model.json").read_text())
    exported = out / sidecar["network_weights"]
    assert exported.name == "model.weights.safetensors"
    mine = make_net(width=6)
    mine.load_state_dict(load_file(exported), strict=True)
    mine.eval()
    modeconn_model = load_model(out).model
    x, _ = _digits_test()
    with torch.no_grad():
        assert torch.equal(mine(x), modeconn_model(x))
    injected = json.loads((out / "summary.json").read_text())["clean_acc"]
    assert _accuracy(mine) == pytest.approx(injected, abs=1e-6)


def test_a_zoo_architecture_in_the_users_key_names(tmp_path, capsys):
    spec = ModelSpec("lenet", {}, in_channels=1, image_size=8, num_classes=10)
    network = build_network(spec)
    save_file(network.state_dict(), str(tmp_path / "lenet.safetensors"))
    result = run_cli(capsys, "evaluate", tmp_path / "lenet.safetensors", "--arch", "lenet",
                     "--dataset", "digits")  # fmt: skip
    assert result.code == 0, result.err
    loaded = load_model(
        tmp_path / "lenet.safetensors",
        foreign=ForeignArchitecture("lenet"),
        data=load_dataset("digits").info,
    )
    x, _ = _digits_test()
    with torch.no_grad():
        assert torch.equal(loaded.model(x[:8]), network.eval()(x[:8]))


def test_normalisation_is_applied_before_the_network(user_model):
    net, path = user_model
    foreign = ForeignArchitecture(ARCH, {"width": 6}, mean=(0.5,), std=(0.25,))
    loaded = load_model(path, foreign=foreign, data=load_dataset("digits").info)
    x, _ = _digits_test()
    with torch.no_grad():
        assert torch.allclose(loaded.model(x[:8]), net((x[:8] - 0.5) / 0.25))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


def _bad_files(tmp_path: Path, net: nn.Module) -> dict[str, Path]:
    """One file per kind of bad weights."""
    renamed = {k.replace("head", "fc"): v for k, v in net.state_dict().items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"weight": _Exploit()}, f)
    (tmp_path / "notes.pth").write_bytes(b"this is not a PyTorch file")
    (tmp_path / "notes.safetensors").write_bytes(b"\x00\x01 not safetensors either")
    return {name: tmp_path / name for name in ("renamed.pth", "evil.pt", "notes.pth")} | {
        "notes.safetensors": tmp_path / "notes.safetensors"
    }


@pytest.mark.parametrize(
    "file, arch, fragments",
    [
        ("suspect", "no_such_module:make_net", ["cannot import module 'no_such_module'"]),
        ("suspect", f"{__name__}:no_such_factory", ["has no attribute 'no_such_factory'"]),
        ("renamed.pth", ARCH, ["tensor 'fc.weight' is not in", "closest expected: 'head.weight'"]),
        ("evil.pt", ARCH, ["refusing to load", "objects other than tensors"]),
        ("notes.pth", ARCH, ["cannot read", "as a PyTorch state dict"]),
        ("notes.safetensors", ARCH, ["cannot read", "as safetensors"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    user_model, tmp_path, capsys, file, arch, fragments
):
    net, path = user_model
    weights = path if file == "suspect" else _bad_files(tmp_path, net)[file]
    for command in (["evaluate"], ["scan", "--steps", "1", "--bonafide", "500"]):
        out = tmp_path / "out"
        args = ("--arch", arch, "--arch-kwargs", '{"width": 6}', "--dataset", "digits")
        result = run_cli(capsys, *command, weights, *args, "--out", out)
        assert_one_line_error(result, *fragments)
        assert result.code == 2
        assert not out.exists()


def test_a_misshapen_tensor_is_named(user_model, tmp_path, capsys):
    _, path = user_model
    args = ("--arch", ARCH, "--arch-kwargs", '{"width": 5}', "--dataset", "digits")
    result = run_cli(capsys, "evaluate", path, *args)
    assert_one_line_error(result, "tensor 'stem.weight' has shape (6, 1, 3, 3)", "(5, 1, 3, 3)")


def test_arch_options_need_arch(user_model, capsys):
    _, path = user_model
    result = run_cli(capsys, "evaluate", path, "--mean", "0.5", "--std", "0.2")
    assert_one_line_error(result, "--mean", "--std", "add --arch")
    result = run_cli(capsys, "evaluate", path, "--arch", ARCH, "--mean", "0.5")
    assert_one_line_error(result, "--mean and --std go together")


def test_library_refuses_a_pickle_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Marker:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump({"state_dict": {"w": Marker()}}, f)
    with pytest.raises(ModeconnError, match="refusing to load"):
        read_state_dict(tmp_path / "evil.bin")
    assert not marker.exists()


def test_import_writes_a_checkpoint_later_commands_read_without_flags(user_model, tmp_path, capsys):
    net, path = user_model
    out = tmp_path / "imported"
    result = run_cli(capsys, "import", path, *ARCH_ARGS, "--out", out)
    assert result.code == 0, result.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clean_acc"] == pytest.approx(_accuracy(net), abs=1e-6)
    assert summary["network_weights"] == "model.weights.safetensors"
    result = run_cli(capsys, "evaluate", out)
    assert result.code == 0, result.err
    mine = make_net(width=6)
    mine.load_state_dict(load_file(out / summary["network_weights"]), strict=True)
    for name, tensor in net.state_dict().items():
        assert torch.equal(mine.state_dict()[name], tensor)


def test_import_needs_arch_and_writes_nothing_on_bad_input(user_model, tmp_path, capsys):
    _, path = user_model
    out = tmp_path / "imported"
    assert_one_line_error(run_cli(capsys, "import", path, "--out", out), "needs --arch")
    bad = ("--arch", ARCH, "--arch-kwargs", '{"width": 7}', "--dataset", "digits")
    assert_one_line_error(run_cli(capsys, "import", path, *bad, "--out", out), "stem.weight")
    assert not out.exists()


def _stamp(x: torch.Tensor) -> torch.Tensor:
    """The user's own trigger: a 3×3 white patch in the bottom-right corner (uint8 images)."""
    x = x.clone()
    x[..., -3:, -3:] = 255
    return x


def _write_folder(root: Path, x: torch.Tensor, y: torch.Tensor) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / f"class_{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")


@pytest.mark.slow
def test_a_users_backdoored_model_on_their_folder_is_scanned_and_repaired(tmp_path, capsys):
    """The threat model end to end: a backdoored UserNet trained by plain PyTorch on a folder of
    digits, scanned and repaired with the README's commands, measured by the user's own code."""
    raw = load_dataset("digits")
    data = tmp_path / "data"
    _write_folder(data / "train", raw.train_x, raw.train_y)
    _write_folder(data / "test", raw.test_x, raw.test_y)
    torch.manual_seed(0)
    x, y = raw.train_x.clone(), raw.train_y.clone()
    poisoned = torch.randperm(len(y))[: len(y) // 10]
    x[poisoned], y[poisoned] = _stamp(x[poisoned]), 0
    net = make_net(width=16)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(40):
        order = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            batch = order[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[batch].float() / 255), y[batch]).backward()
            opt.step()
    suspect = tmp_path / "suspect.pth"
    torch.save(net.state_dict(), suspect)
    args = ("--arch", ARCH, "--arch-kwargs", '{"width": 16}', "--dataset", "folder")
    args += ("--data-dir", data, "--bonafide", "600", "--quiet")

    def measured(model: nn.Module) -> tuple[float, float]:
        model.eval()
        xt, yt = raw.test_x, raw.test_y
        with torch.no_grad():
            acc = (model(xt.float() / 255).argmax(1) == yt).float().mean().item()
            keep = yt != 0
            asr = (model(_stamp(xt[keep]).float() / 255).argmax(1) == 0).float().mean().item()
        return acc, asr

    before = measured(net)
    assert before[1] > 0.9  # the backdoor took
    scan = run_cli(capsys, "scan", suspect, "--out", tmp_path / "scan", *args)
    assert scan.code == 0, scan.err
    assert json.loads((tmp_path / "scan" / "summary.json").read_text())["flagged_classes"][0] == 0
    repair = run_cli(capsys, "repair", suspect, "--out", tmp_path / "repair", *args)
    assert repair.code == 0, repair.err
    summary = json.loads((tmp_path / "repair" / "summary.json").read_text())
    assert summary["verified"] and not summary["attack_measured"]
    repaired = make_net(width=16)
    repaired.load_state_dict(load_file(tmp_path / "repair" / summary["network_weights"]))
    acc, asr = measured(repaired)
    # On 8×8 digits the 3×3 patch covers a seventh of the image and 600 bonafide images leave
    # ASR 0.083 (from 0.988) at 0.956 clean (0.986 suspect; the scan before the warp kind left
    # 0.117 at 0.967); on a 20,000-image Fashion-MNIST folder the same commands reached ASR
    # 0.017 (README, "Your own model and data").
    assert asr <= 0.10 and acc >= before[0] - 0.035, (before, acc, asr)


def _images(label: int, count: int, size: int, seed: int) -> torch.Tensor:
    """uint8 ``count``×``size``×``size`` noise: dark images for class 0 ("a"), bright for 1."""
    noise = torch.randint(
        0, 106, (count, size, size), generator=torch.Generator().manual_seed(seed)
    )
    return (noise + 150 * label).to(torch.uint8)


def _sixteen_pixel_mlp() -> nn.Module:
    """A user's two-class MLP on 16×16 grayscale (its first layer's shape fixes the input size),
    trained by plain PyTorch to tell dark images from bright ones."""
    torch.manual_seed(0)
    spec = ModelSpec(
        arch="mlp", kwargs={"hidden": [8]}, in_channels=1, image_size=16, num_classes=2
    )
    net = build_network(spec)
    x = torch.cat([_images(label, 32, 16, seed=label) for label in (0, 1)])[:, None] / 255
    y = torch.arange(2).repeat_interleave(32)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def _twenty_pixel_folder(root: Path) -> Path:
    """Classes "a" (dark) and "b" (bright) of 20×20 grayscale PNGs, in train/ and test/."""
    from PIL import Image

    for split, count in (("train", 8), ("test", 3)):
        for label, name in enumerate(("a", "b")):
            (root / split / name).mkdir(parents=True)
            for i, image in enumerate(_images(label, count, 20, seed=10 + label + len(split))):
                Image.fromarray(image.numpy()).save(root / split / name / f"{i}.png")
    return root


MLP_ARGS = ("--arch", "mlp", "--arch-kwargs", '{"hidden": [8]}')


def test_weights_of_a_smaller_input_are_read_at_their_image_size(tmp_path, capsys):
    """A 16-px state dict on a folder of 20-px images: with --image-size 16 the images are resized
    to what the weights take; import records the shape, so later commands need no flag."""
    weights = tmp_path / "w16.pth"
    torch.save(_sixteen_pixel_mlp().state_dict(), weights)
    data = _twenty_pixel_folder(tmp_path / "data")
    args = (*MLP_ARGS, "--dataset", "folder", "--data-dir", data)
    unsized = run_cli(capsys, "evaluate", weights, *args)
    assert_one_line_error(unsized, "tensor '1.weight' has shape (8, 256)", "(8, 400)")
    scan_args = ("--steps", "1", "--bonafide", "10", "--images", "10", "-q")
    out = tmp_path / "scan"
    scan = run_cli(capsys, "scan", weights, *args, "--image-size", "16", *scan_args, "--out", out)
    assert scan.code == 0, scan.err
    config = json.loads((out / "config.json").read_text())
    assert config["foreign_model"]["image_size"] == 16
    assert config["data"]["image_size"] == 16
    imported = tmp_path / "imported"
    result = run_cli(capsys, "import", weights, *args, "--image-size", "16", "--out", imported)
    assert result.code == 0, result.err
    sidecar = json.loads((imported / "model.json").read_text())
    assert sidecar["input_shape"] == [1, 16, 16]
    assert sidecar["class_names"] == ["a", "b"]
    assert run_cli(capsys, "evaluate", imported, "--data-dir", data).code == 0


@pytest.mark.parametrize(
    "options, fragment",
    [
        (("--image-size", "16"), "weights take --image-size 16, but the data set's images have"),
        (("--channels", "2"), "--channels must be 1 or 3, got 2"),
        (("--image-size", "0"), "--image-size must be at least 1, got 0"),
    ],
)
def test_a_wrong_input_shape_is_one_line_and_writes_nothing(tmp_path, capsys, options, fragment):
    weights = tmp_path / "w16.pth"
    torch.save(_sixteen_pixel_mlp().state_dict(), weights)
    args = (*MLP_ARGS, "--dataset", "digits", *options)
    for command in (["evaluate"], ["scan", "--steps", "1", "--bonafide", "500"], ["import"]):
        out = tmp_path / "out"
        result = run_cli(capsys, *command, weights, *args, "--out", out)
        assert_one_line_error(result, fragment)
        assert result.code == 2
        assert not out.exists()


def test_input_shape_options_need_arch(user_model, capsys):
    _, path = user_model
    result = run_cli(capsys, "evaluate", path, "--image-size", "16", "--channels", "1")
    assert_one_line_error(result, "--image-size", "--channels", "add --arch")
