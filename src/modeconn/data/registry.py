"""The data sets modeconn knows by name, where their files are looked for, and how they are loaded.

``load_dataset(name, data_dir)`` returns a :class:`RawDataset`: uint8 NCHW image tensors and int64
labels for the official train and test splits, together with the :class:`DatasetInfo` that models
(input shape, normalisation layer) and loaders (augmentation) need.

Directories searched, in order:

1. ``data_dir`` when given — and then *only* it (and its subfolder named after the data set), so an
   explicit choice is never silently replaced by another copy of the data;
2. ``$MODECONN_DATA`` and ``$MODECONN_DATA/<name>``;
3. a system location where a distribution installs the data (Debian's ``dataset-fashion-mnist``).

Two more names read the user's own files, from ``data_dir`` only: ``folder`` (a folder of images,
one subfolder per class; :mod:`modeconn.data.folder`) and ``npz`` (one ``.npz`` of arrays;
:mod:`modeconn.data.npz`). Their :class:`DatasetInfo` comes from the files: input shape, classes
(with their names) and the channel statistics of the training images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modeconn.data import formats
from modeconn.data.folder import load_image_folder
from modeconn.data.npz import load_npz
from modeconn.errors import InvalidArgument, MissingInput, ModeconnError

DATA_ENV_VAR = "MODECONN_DATA"
DEFAULT_DATASET = "fashion-mnist"
AUGMENTATIONS = ("none", "crop", "crop_flip")
USER_FORMATS = ("folder", "npz")


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the library needs to know about a data set.

    ``mean``/``std`` are per-channel statistics of the training images in [0, 1], used by the
    model's normalisation layer; ``augment`` is the standard training augmentation.
    ``class_names`` names label 0, 1, … for data sets read from the user's files (a folder's class
    subfolders), so a checkpoint can record them; empty for the registered data sets.
    """

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    class_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, C×H×W."""
        return (self.in_channels, self.image_size, self.image_size)


@dataclass
class RawDataset:
    """A data set's official splits as tensors: uint8 images N×C×H×W and int64 labels."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class _Entry:
    """Registry record: the info, the reader, and what to tell a user whose files are missing."""

    info: DatasetInfo
    read: Callable[[Path], formats.ArraySplits] | None
    files: tuple[str, ...]
    how_to_get: str
    system_dirs: tuple[Path, ...] = ()


def _idx_entry(info: DatasetInfo, how_to_get: str, system_dirs: tuple[Path, ...] = ()) -> _Entry:
    files = tuple(f"{name}[.gz]" for name in formats.IDX_FILES)
    return _Entry(info, formats.load_idx_dataset, files, how_to_get, system_dirs)


_CIFAR_HINT = (
    "download the CIFAR python version from https://www.cs.toronto.edu/~kriz/cifar.html, "
    "extract it and pass data_dir=DIR (or set $MODECONN_DATA)"
)

_REGISTRY: dict[str, _Entry] = {
    "fashion-mnist": _idx_entry(
        DatasetInfo("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,)),
        "install it with `apt-get install dataset-fashion-mnist`, or download the IDX files from "
        "https://github.com/zalandoresearch/fashion-mnist and pass data_dir=DIR "
        "(or set $MODECONN_DATA)",
        (Path("/usr/share/datasets/fashion-mnist"),),
    ),
    "mnist": _idx_entry(
        DatasetInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,)),
        "download the four IDX files of MNIST (e.g. from https://yann.lecun.com/exdb/mnist/ or a "
        "mirror) and pass data_dir=DIR (or set $MODECONN_DATA)",
    ),
    "cifar10": _Entry(
        DatasetInfo(
            "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "crop_flip"
        ),
        formats.load_cifar10,
        (*formats.CIFAR10_FILES, f"(or {formats.CIFAR10_SUBFOLDER}/)"),
        _CIFAR_HINT,
    ),
    "cifar100": _Entry(
        DatasetInfo(
            "cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "crop_flip"
        ),
        formats.load_cifar100,
        (*formats.CIFAR100_FILES, f"(or {formats.CIFAR100_SUBFOLDER}/)"),
        _CIFAR_HINT,
    ),
    "svhn": _Entry(
        DatasetInfo("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "crop"),
        formats.load_svhn,
        formats.SVHN_FILES,
        "download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ "
        "and pass data_dir=DIR (or set $MODECONN_DATA)",
    ),
    "digits": _Entry(
        DatasetInfo("digits", 1, 8, 10, (0.3053,), (0.3759,)),
        None,
        (),
        "it ships with scikit-learn: install scikit-learn",
    ),
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`get_info` and :func:`load_dataset`, the default first."""
    return [DEFAULT_DATASET, *sorted(n for n in _REGISTRY if n != DEFAULT_DATASET)]


def _entry(name: str) -> _Entry:
    if name in USER_FORMATS:
        raise InvalidArgument(
            None,
            f"the {name} data set's shape and classes come from its files: "
            f"load it with load_dataset({name!r}, data_dir)",
        )
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(dataset_names())
        raise InvalidArgument(
            None,
            f"unknown dataset {name!r}; known datasets: {known}; or your own files: "
            "folder (data_dir=DIR with train/<class>/ images) or npz (data_dir=FILE.npz)",
        ) from None


def get_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered data set (no files are read)."""
    return _entry(name).info


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Directories searched for ``name``'s files, in order (see the module docstring)."""
    entry = _entry(name)
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / name]
    dirs: list[Path] = []
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        dirs += [Path(env), Path(env) / name]
    return dirs + list(entry.system_dirs)


def _read_first_found(
    entry: _Entry, read: Callable[[Path], formats.ArraySplits], dirs: list[Path]
) -> formats.ArraySplits:
    """Load with ``read`` from the first directory with all files; corrupt files raise at once."""
    for directory in dirs:
        try:
            return read(directory)
        except formats.MissingFilesError:
            continue
    searched = ", ".join(str(d) for d in dirs) or f"nowhere (no data_dir and no ${DATA_ENV_VAR})"
    raise MissingInput(
        f"{entry.info.name} data set not found: looked for {', '.join(entry.files)} "
        f"in {searched}; {entry.how_to_get}",
        parameters=("data_dir",),
    )


def _to_raw(info: DatasetInfo, arrays: formats.ArraySplits) -> RawDataset:
    """Convert numpy splits to tensors, checking shape and labels against ``info``."""
    for split, images, labels in (
        ("train", arrays.train_x, arrays.train_y),
        ("test", arrays.test_x, arrays.test_y),
    ):
        if images.shape[1:] != info.input_shape:
            raise ModeconnError(
                f"{info.name}: {split} images have shape {images.shape[1:]}, "
                f"expected {info.input_shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
            raise ModeconnError(
                f"{info.name}: {split} labels outside 0..{info.num_classes - 1} "
                f"(found {labels.min()}..{labels.max()})"
            )

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array))

    return RawDataset(
        info,
        tensor(arrays.train_x),
        tensor(arrays.train_y.astype(np.int64)),
        tensor(arrays.test_x),
        tensor(arrays.test_y.astype(np.int64)),
    )


def _read_user_files(
    name: str,
    data_dir: str | Path | None,
    image_size: int | None,
    channels: int | None,
    progress: bool,
) -> formats.SourceData:
    """Read a ``folder`` or ``npz`` data set from ``data_dir``, which must be given."""
    if data_dir is None:
        where = "DIR holding train/<class>/ images" if name == "folder" else "FILE.npz"
        raise InvalidArgument("data_dir", f"the {name} data set needs data_dir={where}")
    if name == "folder":
        return load_image_folder(data_dir, image_size, channels, progress=progress)
    data = load_npz(data_dir)
    _, found_channels, found_size, _ = data.splits.train_x.shape
    for parameter, wanted, found in (
        ("image_size", image_size, found_size),
        ("channels", channels, found_channels),
    ):
        if wanted is not None and wanted != found:
            raise InvalidArgument(
                parameter,
                f"{parameter}={wanted} does not match {data_dir}, whose images have "
                f"{found_channels}×{found_size}×{found_size}; npz arrays are used as they are",
            )
    return data


def _user_info(name: str, data: formats.SourceData) -> DatasetInfo:
    """The :class:`DatasetInfo` of a data set read from the user's files."""
    _, channels, size, _ = data.splits.train_x.shape
    return DatasetInfo(
        name,
        channels,
        size,
        len(data.class_names),
        data.mean,
        data.std,
        class_names=data.class_names,
    )


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | Path | None = None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    progress: bool = True,
) -> RawDataset:
    """Load a data set's train and test splits: a registered one, or the user's own files
    (``folder``, ``npz``; see the module docstring).

    ``image_size`` and ``channels`` set the size and channel count a folder's images are converted
    to (default: the most common in its ``train/``); for an npz they must match the arrays.
    ``progress`` draws a bar while a folder's images are decoded (a cached load decodes nothing).

    Raises :class:`ModeconnError` with one line naming the files, the directories searched and how
    to obtain the data when it is missing, or naming the file when it is corrupt.
    """
    if name in USER_FORMATS:
        data = _read_user_files(name, data_dir, image_size, channels, progress)
        return _to_raw(_user_info(name, data), data.splits)
    entry = _entry(name)
    for parameter, value in (("image_size", image_size), ("channels", channels)):
        if value is not None:
            raise InvalidArgument(
                parameter, f"{parameter} applies to folder and npz data sets, not to {name}"
            )
    if entry.read is None:
        arrays = formats.load_digits_dataset()
    else:
        arrays = _read_first_found(entry, entry.read, candidate_dirs(name, data_dir))
    return _to_raw(entry.info, arrays)
