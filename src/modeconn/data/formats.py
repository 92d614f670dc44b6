"""Readers for the on-disk formats the data sets are distributed in.

Every loader returns :class:`ArraySplits`: images as ``uint8`` arrays in NCHW layout and labels as
``int64`` arrays, for the official train and test splits. Anything wrong with a file (truncated,
wrong magic number, inconsistent sizes, unexpected content) raises :class:`ModeconnError` naming the
file, so the CLI can print one line instead of a traceback. Missing files raise the subclass
:class:`MissingFilesError`, which lets the registry try the next candidate directory.

Formats:

* IDX (MNIST, Fashion-MNIST), plain or gzip-compressed;
* CIFAR-10 / CIFAR-100 "python version" pickle batches, read with a restricted unpickler that only
  rebuilds numpy arrays (pickle is the official format, the one place where modeconn unpickles);
* SVHN cropped digits ``*_32x32.mat`` (MATLAB v5, read with :func:`scipy.io.loadmat`);
* scikit-learn's bundled 8×8 digits, with a fixed stratified 80/20 split.

The user's own files (a folder of images per class, an ``.npz`` of arrays) have readers of their
own (:mod:`modeconn.data.folder`, :mod:`modeconn.data.npz`); they return :class:`SourceData`, the
splits together with what only the files can tell: class names and channel statistics.
"""

from __future__ import annotations

import gzip
import importlib
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from modeconn.errors import ModeconnError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_SUBFOLDER = "cifar-10-batches-py"
CIFAR100_FILES = ("train", "test")
CIFAR100_SUBFOLDER = "cifar-100-python"
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2

# IDX type codes (third byte of the magic number) and the big-endian numpy dtype they denote.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class MissingFilesError(ModeconnError):
    """Some of the files a data set needs are not in the directory that was searched."""

    def __init__(self, directory: Path, missing: Sequence[str]) -> None:
        self.directory = Path(directory)
        self.missing = tuple(missing)
        super().__init__(f"missing {', '.join(self.missing)} in {self.directory}")


class ArraySplits(NamedTuple):
    """The official train/test split of a data set as numpy arrays (uint8 NCHW, int64 labels)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class SourceData:
    """A data set read from the user's files: its splits, class names (label i is
    ``class_names[i]``) and the per-channel mean and std of its training images in [0, 1].

    ``cache_path`` is the decoded-image cache entry used (None: not cached); ``from_cache`` says
    whether this load read it instead of decoding the files.
    """

    splits: ArraySplits
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cache_path: Path | None = None
    from_cache: bool = False


def channel_stats(
    images: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images N×C×H×W scaled to [0, 1], rounded to 4 digits.

    Sums run over chunks of ``chunk`` images, so no float copy of the whole set is made. A channel
    without variation gets std 1 (a normalisation layer must not divide by zero).
    """
    channels = images.shape[1]
    total, squares = np.zeros(channels), np.zeros(channels)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        squares += np.square(block).sum(axis=(0, 2, 3))
    count = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    rounded_std = (round(float(s), 4) for s in std)
    return tuple(round(float(m), 4) for m in mean), tuple(s if s > 0 else 1.0 for s in rounded_std)


# --------------------------------------------------------------------------------------------- IDX


def _read_maybe_gzip(path: Path) -> bytes:
    """Return the bytes of ``path``, decompressing gzip (recognised by its magic bytes)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as err:
        raise ModeconnError(f"cannot read {path}: {err}") from err


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into a native-endian numpy array.

    The header is validated: two zero bytes, a known type code, 1–4 dimensions, and a payload
    whose size matches the declared shape exactly (so truncated downloads are caught here).
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ModeconnError(f"{path} is not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ModeconnError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    if not 1 <= ndim <= 4:
        raise ModeconnError(f"{path}: unsupported number of IDX dimensions {ndim}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ModeconnError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise ModeconnError(
            f"{path}: IDX payload has {len(data) - header_size} bytes, "
            f"shape {shape} needs {expected} (truncated or corrupt file)"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _resolve_idx(directory: Path, name: str) -> Path | None:
    """Return ``directory/name`` or ``directory/name.gz``, whichever exists (plain first)."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_images(path: Path) -> np.ndarray:
    """Read an IDX image file as uint8 N×1×H×W."""
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ModeconnError(
            f"{path}: expected uint8 images N×H×W, got {images.dtype} {images.shape}"
        )
    return images[:, None, :, :]


def _idx_labels(path: Path) -> np.ndarray:
    """Read an IDX label file as an int64 vector."""
    labels = read_idx(path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ModeconnError(f"{path}: expected uint8 labels N, got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


def load_idx_dataset(directory: str | Path) -> ArraySplits:
    """Load an MNIST-style data set from the four IDX files in ``directory``."""
    directory = Path(directory)
    paths = {name: _resolve_idx(directory, name) for name in IDX_FILES}
    missing = [f"{name}[.gz]" for name, path in paths.items() if path is None]
    if missing:
        raise MissingFilesError(directory, missing)
    train_x = _idx_images(paths[IDX_FILES[0]])
    train_y = _idx_labels(paths[IDX_FILES[1]])
    test_x = _idx_images(paths[IDX_FILES[2]])
    test_y = _idx_labels(paths[IDX_FILES[3]])
    return _checked(ArraySplits(train_x, train_y, test_x, test_y), directory)


# ------------------------------------------------------------------------------------------- CIFAR


def _numpy_core_attr(submodule: str, name: str) -> Any:
    """Return ``numpy._core.<submodule>.<name>`` (numpy 2) or ``numpy.core...`` (numpy 1)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise ModeconnError(f"this numpy has no {submodule}.{name}; cannot read CIFAR pickles")


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use for bytes objects."""
    if encoding != "latin1":
        raise ModeconnError(f"refusing codec {encoding!r} in a CIFAR pickle")
    return text.encode("latin1")


# The only globals a CIFAR pickle may reference: numpy's array-rebuilding helpers (under the
# numpy 1 and numpy 2 module names) and the bytes encoder of protocol 2.
_NUMPY_HELPERS = {("multiarray", "_reconstruct"), ("numeric", "_frombuffer")}
_NUMPY_CORE_PACKAGES = ("numpy.core", "numpy._core")
_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, lists, dicts, strings and numbers — nothing else.

    A pickle can call any importable function while loading; refusing every global except numpy's
    array constructors means a crafted "CIFAR batch" cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[(module, name)]
        package, _, submodule = module.rpartition(".")
        if package in _NUMPY_CORE_PACKAGES and (submodule, name) in _NUMPY_HELPERS:
            return _numpy_core_attr(submodule, name)
        raise ModeconnError(f"refusing to load {module}.{name} from a CIFAR pickle")


def _unpickle_arrays(path: Path) -> Any:
    """Unpickle ``path`` with :class:`_ArrayOnlyUnpickler`; ``encoding='bytes'`` as for Python 2."""
    try:
        with path.open("rb") as handle:
            return _ArrayOnlyUnpickler(handle, encoding="bytes").load()
    except ModeconnError as err:
        raise ModeconnError(f"{path}: {err}") from err
    except Exception as err:  # any unpickling failure means a corrupt or foreign file
        raise ModeconnError(f"cannot read CIFAR batch {path}: {type(err).__name__}: {err}") from err


def _get_key(batch: dict, key: str, path: Path) -> Any:
    """Look ``key`` up as bytes (Python 2 pickles) or str (re-saved files)."""
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise ModeconnError(f"{path}: CIFAR batch has no {key!r} entry")


def load_cifar_batch(path: str | Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR pickle batch: uint8 images N×3×32×32 and int64 labels from ``label_key``."""
    path = Path(path)
    batch = _unpickle_arrays(path)
    if not isinstance(batch, dict):
        raise ModeconnError(f"{path}: expected a dict, found {type(batch).__name__}")
    data = _get_key(batch, "data", path)
    labels = np.asarray(_get_key(batch, label_key, path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ModeconnError(f"{path}: 'data' must be a uint8 N×3072 array")
    if data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise ModeconnError(
            f"{path}: 'data' {data.shape} and {label_key!r} {labels.shape} do not match N×3072 / N"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ModeconnError(f"{path}: {label_key!r} must be integers")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_directory(directory: Path, files: Sequence[str], subfolder: str) -> Path:
    """Return ``directory`` or ``directory/subfolder``, whichever holds all of ``files``."""
    for candidate in (directory, directory / subfolder):
        if all((candidate / name).is_file() for name in files):
            return candidate
    missing = [name for name in files if not (directory / name).is_file()]
    raise MissingFilesError(directory, missing)


def _load_cifar(
    directory: str | Path,
    train_files: Sequence[str],
    test_files: Sequence[str],
    subfolder: str,
    label_key: str,
) -> ArraySplits:
    """Concatenate the train batches and the test batches of a CIFAR variant."""
    directory = _cifar_directory(Path(directory), (*train_files, *test_files), subfolder)

    def read(files: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [load_cifar_batch(directory / name, label_key) for name in files]
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

    train_x, train_y = read(train_files)
    test_x, test_y = read(test_files)
    return _checked(ArraySplits(train_x, train_y, test_x, test_y), directory)


def load_cifar10(directory: str | Path) -> ArraySplits:
    """Load CIFAR-10 from ``data_batch_1..5`` and ``test_batch`` (or the ``cifar-10-batches-py``
    subfolder of ``directory``)."""
    return _load_cifar(
        directory, CIFAR10_FILES[:-1], CIFAR10_FILES[-1:], CIFAR10_SUBFOLDER, "labels"
    )


def load_cifar100(directory: str | Path) -> ArraySplits:
    """Load CIFAR-100 (fine labels) from ``train`` and ``test`` (or the ``cifar-100-python``
    subfolder of ``directory``)."""
    return _load_cifar(directory, ("train",), ("test",), CIFAR100_SUBFOLDER, "fine_labels")


# -------------------------------------------------------------------------------------------- SVHN


def load_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN ``*_32x32.mat`` file: X is H×W×C×N, labels 1..10 where 10 stands for digit 0."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as err:  # scipy raises several unrelated types for bad files
        raise ModeconnError(f"cannot read SVHN file {path}: {type(err).__name__}: {err}") from err
    if "X" not in mat or "y" not in mat:
        raise ModeconnError(f"{path}: expected variables 'X' and 'y'")
    images, labels = mat["X"], mat["y"].reshape(-1)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[3] != labels.shape[0]:
        raise ModeconnError(f"{path}: expected uint8 X of shape H×W×C×N matching y")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise ModeconnError(f"{path}: SVHN labels must lie in 1..10")
    labels[labels == 10] = 0
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels


def load_svhn(directory: str | Path) -> ArraySplits:
    """Load SVHN cropped digits (without ``extra``) from ``train_32x32.mat``, ``test_32x32.mat``."""
    directory = Path(directory)
    missing = [name for name in SVHN_FILES if not (directory / name).is_file()]
    if missing:
        raise MissingFilesError(directory, missing)
    train_x, train_y = load_svhn_mat(directory / SVHN_FILES[0])
    test_x, test_y = load_svhn_mat(directory / SVHN_FILES[1])
    return _checked(ArraySplits(train_x, train_y, test_x, test_y), directory)


# ------------------------------------------------------------------------------------------ digits


def load_digits_dataset() -> ArraySplits:
    """scikit-learn's 8×8 digits as uint8 (0..16 scaled to 0..255), split 80/20 stratified, seed 0.

    The data set has no official split; the fixed seed makes the split the same on every machine.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return ArraySplits(train_x, train_y, test_x, test_y)


# ---------------------------------------------------------------------------------------- checks


def _checked(splits: ArraySplits, source: Path) -> ArraySplits:
    """Check that images and labels agree in length and that both splits share an image shape."""
    for split, images, labels in (
        ("train", splits.train_x, splits.train_y),
        ("test", splits.test_x, splits.test_y),
    ):
        if images.shape[0] != labels.shape[0]:
            raise ModeconnError(
                f"{source}: {split} split has {images.shape[0]} images but {labels.shape[0]} labels"
            )
    if splits.train_x.shape[1:] != splits.test_x.shape[1:]:
        raise ModeconnError(
            f"{source}: train images {splits.train_x.shape[1:]} and test images "
            f"{splits.test_x.shape[1:]} differ in shape"
        )
    return splits
