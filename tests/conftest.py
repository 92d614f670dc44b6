"""Shared fixtures: tiny settings so the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def has_fashion_mnist() -> bool:
    return any(FMNIST_DIR.glob("*idx*-ubyte*")) or bool(os.environ.get("MODECONN_DATA"))


needs_fmnist = pytest.mark.skipif(not has_fashion_mnist(), reason="Fashion-MNIST not installed")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits_lenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small lenet trained briefly on sklearn digits; its run directory (shared, read-only)."""
    from modeconn.commands.train import run_train
    from modeconn.data.prepare import DataConfig
    from modeconn.training import TrainConfig

    out = tmp_path_factory.mktemp("digits_lenet")
    run_train(
        out,
        model="lenet",
        data=DataConfig(dataset="digits"),
        config=TrainConfig(epochs=4, batch_size=64, lr=0.05),
        progress=False,
        force=True,
    )
    return out


@pytest.fixture(scope="session")
def digits_backdoor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lenet on digits with a 2×2 patch backdoor to class 0 (20% poisoned); its run directory."""
    from modeconn.attacks.backdoor import TriggerSpec
    from modeconn.commands.attack import run_poison
    from modeconn.data.prepare import DataConfig
    from modeconn.training import TrainConfig

    out = tmp_path_factory.mktemp("bd") / "bd"
    run_poison(
        out,
        spec=TriggerSpec(type="patch", size=2, target=0, rate=0.2),
        model="lenet",
        data=DataConfig(dataset="digits"),
        config=TrainConfig(epochs=8, batch_size=32, lr=0.05),
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def digits():
    """sklearn digits prepared once for the whole suite (read-only; digits has no augmentation)."""
    from modeconn.data.prepare import DataConfig, prepare_data

    return prepare_data(DataConfig(dataset="digits", augment=False))


@pytest.fixture(scope="session")
def digits_bonafide():
    """digits with the 300-image bonafide split the repair and defence tests work with."""
    from modeconn.data.prepare import DataConfig, prepare_data

    return prepare_data(DataConfig(dataset="digits", bonafide=300))
