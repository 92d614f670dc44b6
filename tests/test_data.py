"""Tests for modeconn.data: real file formats written in tmp_path, splits and loaders."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from modeconn.data import (
    DataSplits,
    RawDataset,
    TensorLoader,
    dataset_names,
    get_info,
    load_dataset,
    make_eval_loader,
    make_splits,
    read_idx,
    stratified_indices,
    subset_tensors,
)
from modeconn.data.formats import _ArrayOnlyUnpickler
from modeconn.errors import ModeconnError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def seeded(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed, so test tensors are the same on every run."""
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a user's $MODECONN_DATA from leaking into the tests."""
    monkeypatch.delenv("MODECONN_DATA", raising=False)


# ------------------------------------------------------------------------------ file writers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x0000 0x08 ndim, big-endian dims)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(directory: Path, rng: np.random.Generator, gz: bool) -> dict[str, np.ndarray]:
    """Write the four MNIST-style IDX files (6 train, 4 test images of 28×28)."""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes) -> None:
    with path.open("wb") as handle:
        pickle.dump({b"batch_label": b"test", b"data": data, label_key: labels}, handle)


def random_cifar(rng: np.random.Generator, n: int, classes: int) -> tuple[np.ndarray, list[int]]:
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return data, rng.integers(0, classes, n).tolist()


# ------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_set(tmp_path, np.random.default_rng(0), gz)
    raw = load_dataset("mnist", data_dir=tmp_path)
    assert raw.train_x.shape == (6, 1, 28, 28) and raw.test_x.shape == (4, 1, 28, 28)
    assert raw.train_x.dtype == torch.uint8 and raw.train_y.dtype == torch.int64
    assert np.array_equal(raw.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(raw.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_idx_found_in_named_subfolder_of_env(tmp_path: Path, monkeypatch) -> None:
    write_idx_set(tmp_path / "fashion-mnist", np.random.default_rng(1), gz=True)
    monkeypatch.setenv("MODECONN_DATA", str(tmp_path))
    assert load_dataset("fashion-mnist").train_x.shape == (6, 1, 28, 28)


def test_read_idx_other_dtype(tmp_path: Path) -> None:
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    path = tmp_path / "ints-idx2-int"
    path.write_bytes(struct.pack(">BBBB2I", 0, 0, 0x0C, 2, 2, 3) + values.tobytes())
    assert np.array_equal(read_idx(path), values)


def test_truncated_idx_is_rejected(tmp_path: Path) -> None:
    write_idx_set(tmp_path, np.random.default_rng(0), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModeconnError, match="truncated"):
        load_dataset("mnist", data_dir=tmp_path)


def test_truncated_gzip_is_rejected(tmp_path: Path) -> None:
    write_idx_set(tmp_path, np.random.default_rng(0), gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModeconnError, match="t10k-images"):
        load_dataset("mnist", data_dir=tmp_path)


def test_bad_magic_is_rejected(tmp_path: Path) -> None:
    write_idx_set(tmp_path, np.random.default_rng(0), gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(ModeconnError, match="magic"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_directory_names_files_and_hint(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModeconnError) as info:
        load_dataset("fashion-mnist", data_dir=missing)
    message = str(info.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(missing) in message and "apt-get install dataset-fashion-mnist" in message


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(ModeconnError, match=r"known datasets: .*cifar10.*digits"):
        load_dataset("imagenet")
    assert dataset_names()[0] == "fashion-mnist"
    assert set(dataset_names()) == {
        "fashion-mnist",
        "mnist",
        "cifar10",
        "cifar100",
        "svhn",
        "digits",
    }
    assert get_info("cifar10").augment == "crop_flip" and get_info("svhn").augment == "crop"
    assert get_info("mnist").augment == "none"


# ----------------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trip_in_subfolder(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [random_cifar(rng, 3, 10) for _ in range(6)]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (data, labels) in zip(names, batches, strict=True):
        write_cifar_batch(folder / name, data, labels, b"labels")
    raw = load_dataset("cifar10", data_dir=tmp_path)
    assert raw.train_x.shape == (15, 3, 32, 32) and raw.test_x.shape == (3, 3, 32, 32)
    expected = np.concatenate([b[0] for b in batches[:5]]).reshape(-1, 3, 32, 32)
    assert np.array_equal(raw.train_x.numpy(), expected)
    assert raw.train_y.tolist() == [label for b in batches[:5] for label in b[1]]
    assert raw.test_y.dtype == torch.int64 and raw.test_y.tolist() == batches[5][1]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar100_fine_labels(tmp_path: Path, protocol: int) -> None:
    rng = np.random.default_rng(3)
    train, test = random_cifar(rng, 5, 100), random_cifar(rng, 2, 100)
    for name, (data, labels) in (("train", train), ("test", test)):
        batch = {b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * len(labels)}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    raw = load_dataset("cifar100", data_dir=tmp_path)
    assert raw.info.num_classes == 100
    assert np.array_equal(raw.test_x.numpy(), test[0].reshape(-1, 3, 32, 32))
    assert raw.train_y.tolist() == train[1]


# {b"data": uint8 array [0..5]} as Python 2 / numpy 1 wrote it (protocol 2, str as SHORT_BINSTRING,
# numpy.core module names) — the form of the official CIFAR files.
PY2_ARRAY_PICKLE = (
    b"\x80\x02}q\x00U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\n"
    b"q\x03K\x00\x85q\x04U\x01bq\x05\x87q\x06Rq\x07(K\x01K\x06\x85q\x08cnumpy\ndtype\nq\tU\x02u1"
    b"q\nK\x00K\x01\x87q\x0bRq\x0c(K\x03U\x01|q\rNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x0ebI00\n"
    b"U\x06\x00\x01\x02\x03\x04\x05q\x0ftq\x10bs."
)


def test_python2_numpy1_pickle_is_readable() -> None:
    batch = _ArrayOnlyUnpickler(io.BytesIO(PY2_ARRAY_PICKLE), encoding="bytes").load()
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].tolist() == [0, 1, 2, 3, 4, 5]


class _Exploit:
    """Unpickling this runs a shell command — what a crafted CIFAR batch could try."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_cifar_pickle_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    data, labels = random_cifar(np.random.default_rng(4), 2, 100)
    (tmp_path / "train").write_bytes(
        pickle.dumps({b"data": data, b"fine_labels": labels, b"x": _Exploit(target)})
    )
    write_cifar_batch(tmp_path / "test", data, labels, b"fine_labels")
    with pytest.raises(ModeconnError, match="refusing"):
        load_dataset("cifar100", data_dir=tmp_path)
    assert not target.exists()


def test_cifar_with_wrong_content_is_rejected(tmp_path: Path) -> None:
    data, labels = random_cifar(np.random.default_rng(5), 2, 100)
    write_cifar_batch(tmp_path / "train", data[:, :100], labels, b"fine_labels")
    write_cifar_batch(tmp_path / "test", data, labels, b"fine_labels")
    with pytest.raises(ModeconnError, match="3072"):
        load_dataset("cifar100", data_dir=tmp_path)


# ------------------------------------------------------------------------------------ SVHN


def test_svhn_mat_round_trip_and_label_10_is_0(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    images = {
        s: rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8) for s, n in [("a", 5), ("b", 3)]
    }
    train_y = np.array([[10], [1], [5], [10], [9]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": images["a"], "y": train_y})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": images["b"], "y": train_y[:3]})
    raw = load_dataset("svhn", data_dir=tmp_path)
    assert raw.train_x.shape == (5, 3, 32, 32) and raw.train_x.dtype == torch.uint8
    assert raw.train_y.tolist() == [0, 1, 5, 0, 9]
    assert np.array_equal(raw.train_x[2].numpy(), images["a"][:, :, :, 2].transpose(2, 0, 1))


def test_svhn_garbage_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file")
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(ModeconnError, match=r"train_32x32\.mat"):
        load_dataset("svhn", data_dir=tmp_path)


# ---------------------------------------------------------------------------------- digits


def test_digits_loads() -> None:
    raw = load_dataset("digits")
    assert raw.train_x.shape[1:] == (1, 8, 8) and raw.test_x.shape[1:] == (1, 8, 8)
    assert raw.train_x.shape[0] + raw.test_x.shape[0] == 1797
    assert raw.test_x.shape[0] == 360 and int(raw.train_x.max()) == 255
    assert set(raw.train_y.tolist()) == set(range(10)) == set(raw.test_y.tolist())
    assert torch.equal(load_dataset("digits").test_y, raw.test_y)  # fixed split


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_system_fashion_mnist() -> None:
    raw = load_dataset("fashion-mnist")
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.test_y).tolist() == [1000] * 10


# ---------------------------------------------------------------------------------- splits


def toy_raw(n_per_class: int = 20, classes: int = 5) -> RawDataset:
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = torch.randint(0, 256, (labels.numel(), 1, 4, 4), dtype=torch.uint8)
    info = get_info("digits")
    return RawDataset(info, images, labels, images[:5], labels[:5])


def test_stratified_indices_balanced_and_seeded() -> None:
    labels = torch.arange(4).repeat_interleave(25)
    chosen = stratified_indices(labels, 20, seed=3)
    assert chosen.numel() == 20 and chosen.unique().numel() == 20
    assert torch.bincount(labels[chosen]).tolist() == [5, 5, 5, 5]
    assert torch.equal(chosen, stratified_indices(labels, 20, seed=3))
    assert not torch.equal(chosen, stratified_indices(labels, 20, seed=4))
    assert stratified_indices(labels, 0.5, seed=0).numel() == 50
    excluded = stratified_indices(labels, 40, seed=0, exclude=chosen)
    assert not torch.isin(excluded, chosen).any()
    with pytest.raises(ModeconnError):
        stratified_indices(labels, 81, seed=0, exclude=chosen)
    with pytest.raises(ModeconnError):
        stratified_indices(labels, 1.5, seed=0)


def test_make_splits_partition_and_bonafide() -> None:
    raw = toy_raw()
    splits = make_splits(raw, val_size=0.2, bonafide=30, holdout_fraction=0.2, seed=1)
    assert isinstance(splits, DataSplits)
    everything = torch.cat([splits.train, splits.val]).sort().values
    assert torch.equal(everything, torch.arange(100))
    assert torch.bincount(raw.train_y[splits.val]).tolist() == [4] * 5
    bonafide_all = torch.cat([splits.bonafide, splits.bonafide_holdout])
    assert bonafide_all.unique().numel() == 30
    assert torch.isin(bonafide_all, splits.train).all()
    assert not torch.isin(bonafide_all, splits.val).any()
    assert splits.bonafide_holdout.numel() == 6
    assert torch.bincount(raw.train_y[bonafide_all]).tolist() == [6] * 5
    again = make_splits(raw, val_size=0.2, bonafide=30, holdout_fraction=0.2, seed=1)
    assert torch.equal(again.bonafide, splits.bonafide)
    assert torch.equal(again.bonafide_holdout, splits.bonafide_holdout)
    plain = make_splits(raw)
    assert plain.val.numel() == 0 and plain.bonafide.numel() == 0
    assert plain.train.numel() == 100


# --------------------------------------------------------------------------------- loaders


def toy_tensors(n: int = 23) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 2, 2).clone()
    return images, torch.arange(n)


def epoch_labels(loader: TensorLoader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    return torch.cat([y for _, y in loader]).tolist()


def test_loader_covers_every_index_once_with_unit_floats() -> None:
    images, labels = toy_tensors()
    loader = TensorLoader(images, labels, batch_size=5, shuffle=True, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 5 and loader.num_samples == 23
    for x, y in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(23))


def test_loader_epoch_determinism() -> None:
    images, labels = toy_tensors()
    make = lambda: TensorLoader(images, labels, batch_size=4, shuffle=True, seed=7)  # noqa: E731
    assert epoch_labels(make(), 3) == epoch_labels(make(), 3)
    assert epoch_labels(make(), 3) != epoch_labels(make(), 4)
    unshuffled = TensorLoader(images, labels, batch_size=4)
    assert epoch_labels(unshuffled, 2) == list(range(23))


def test_loader_subset_and_drop_last() -> None:
    images, labels = toy_tensors()
    subset = torch.tensor([1, 3, 5, 7, 9, 11, 13])
    loader = TensorLoader(images, labels, subset, batch_size=3, shuffle=True, drop_last=True)
    assert len(loader) == 2
    seen = [y for _, y in loader]
    assert all(y.numel() == 3 for y in seen)
    assert set(torch.cat(seen).tolist()) <= set(subset.tolist())
    x, y = subset_tensors(images, labels, subset)
    assert x.shape == (7, 1, 2, 2) and torch.equal(y, subset)


def test_distributed_sharding_partitions_data() -> None:
    images, labels = toy_tensors(24)
    shards = [
        epoch_labels(
            TensorLoader(images, labels, batch_size=5, shuffle=True, rank=r, world_size=2), 1
        )
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 12
    assert sorted(shards[0] + shards[1]) == list(range(24))


def crop_candidates(image: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Every crop (and mirrored crop) of ``image`` zero-padded by ``padding``, stacked."""
    _, height, width = image.shape
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    sources = [padded, padded.flip(2)] if flip else [padded]
    return torch.stack(
        [
            source[:, i : i + height, j : j + width]
            for source in sources
            for i in range(2 * padding + 1)
            for j in range(2 * padding + 1)
        ]
    )


@pytest.mark.parametrize("augment", ["crop", "crop_flip"])
def test_augmentation_is_a_crop_of_the_padded_image(augment: str) -> None:
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=seeded(0))
    loader = TensorLoader(images, torch.zeros(12, dtype=torch.long), batch_size=12, augment=augment)
    x, _ = next(iter(loader))
    original = images.float() / 255
    assert x.shape == original.shape
    assert (x != original).flatten(1).any(1).sum() >= 6
    for out, image in zip(x, original, strict=True):
        candidates = crop_candidates(image, 4, flip=augment == "crop_flip")
        assert (candidates == out).flatten(1).all(1).any()
    assert torch.equal(next(iter(loader))[0], x)  # same (seed, epoch) → same augmentation
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], x)


def test_eval_loader_transform_and_order() -> None:
    images, labels = toy_tensors()
    loader = make_eval_loader(
        images, labels, batch_size=10, transform=lambda x, y: (x.clamp(max=0.02), y + 1)
    )
    xs, ys = zip(*loader, strict=True)
    assert torch.cat(ys).tolist() == list(range(1, 24))
    assert float(torch.cat(xs).max()) <= 0.02


def test_loader_rejects_bad_arguments() -> None:
    images, labels = toy_tensors()
    with pytest.raises(ModeconnError):
        TensorLoader(images, labels, augment="rotate")
    with pytest.raises(ModeconnError):
        TensorLoader(images, labels, batch_size=0)
    with pytest.raises(ModeconnError):
        TensorLoader(images, labels, torch.tensor([0, 99]))
