"""Checkpoints: round trip, sidecar contents, safe loading of .pt files, mismatch messages."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from modeconn.checkpoints import load_model, read_state_dict, save_model
from modeconn.errors import ModeconnError
from modeconn.io import read_json
from modeconn.models import ModelSpec, build_model


def spec(arch: str = "lenet") -> ModelSpec:
    return ModelSpec(
        arch=arch,
        kwargs={},
        in_channels=1,
        image_size=28,
        num_classes=10,
        mean=(0.286,),
        std=(0.353,),
    )


def test_round_trip_reproduces_logits(tmp_path):
    model = build_model(spec()).eval()
    path = save_model(
        tmp_path / "m.safetensors",
        model,
        spec(),
        dataset="fashion-mnist",
        attack={"type": "backdoor", "target": 0},
        metrics={"clean_acc": 0.9},
    )
    loaded = load_model(path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded.model(x), model(x))
    side = read_json(tmp_path / "m.json")
    assert side["model"]["arch"] == "lenet"
    assert side["input_shape"] == [1, 28, 28]
    assert side["num_classes"] == 10
    assert side["normalization"]["mean"] == [0.286]
    assert side["attack"] == {"type": "backdoor", "target": 0}
    assert loaded.attack["target"] == 0
    assert loaded.dataset == "fashion-mnist"


def test_directory_and_sidecar_paths_resolve(tmp_path):
    model = build_model(spec())
    save_model(tmp_path, model, spec(), dataset="digits")
    assert load_model(tmp_path).spec.arch == "lenet"
    assert load_model(tmp_path / "model.json").spec.arch == "lenet"


def test_pt_file_loads_through_weights_only(tmp_path):
    model = build_model(spec())
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_model(tmp_path / "w.pt", spec=spec(), dataset="fashion-mnist")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)


class _Exploit:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"weight": _Exploit(str(marker))}, f)
    with pytest.raises(ModeconnError, match="refusing to load"):
        read_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_mismatched_weights_name_first_tensor(tmp_path):
    save_model(tmp_path / "mlp.safetensors", build_model(spec("mlp")), spec("mlp"), dataset="x")
    with pytest.raises(ModeconnError, match="does not match the architecture: tensor '"):
        load_model(tmp_path / "mlp.safetensors", spec=spec("lenet"))


def test_missing_file_and_sidecar(tmp_path):
    with pytest.raises(ModeconnError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    model = build_model(spec())
    save_model(tmp_path / "m.safetensors", model, spec(), dataset="x")
    (tmp_path / "m.json").unlink()
    with pytest.raises(ModeconnError, match="no sidecar"):
        load_model(tmp_path / "m.safetensors")


def test_garbage_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01not a tensor file")
    with pytest.raises(ModeconnError, match="cannot read"):
        read_state_dict(tmp_path / "bad.safetensors")
