"""A data set from one ``.npz`` file of numpy arrays.

The file holds ``x_train``, ``y_train``, ``x_test`` and ``y_test`` (and optionally ``class_names``,
a string array naming label 0, 1, …). Images are N×H×W (grayscale), N×H×W×C or N×C×H×W with C = 1
or 3 (the channel axis is the one of length 1 or 3, the second axis when both are), square, and
either uint8 or floating point in [0, 1]; labels are integers 0, 1, …, and every test class
occurs in the training labels.

The file is read with ``allow_pickle=False``: an array of Python objects is a pickle, which can run
code when loaded, and is refused with one line.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from modeconn.data.formats import ArraySplits, SourceData, channel_stats
from modeconn.errors import MissingInput, ModeconnError

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
CLASS_NAMES_KEY = "class_names"
_CHANNEL_SIZES = (1, 3)


def _open(path: Path) -> np.lib.npyio.NpzFile:
    """Open ``path`` as an npz archive, refusing pickles and other formats with one line."""
    if not path.is_file():
        raise MissingInput(
            f"npz file {path} not found: data_dir must be a .npz file holding "
            f"{', '.join(NPZ_ARRAYS)}",
            path,
            parameters=("data_dir",),
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as err:  # numpy's answer to a pickle when allow_pickle is False
        raise ModeconnError(
            f"{path} is a Python pickle, not an npz archive: modeconn never unpickles a file; "
            "save the arrays with numpy.savez"
        ) from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ModeconnError(f"cannot read {path} as an npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ModeconnError(
            f"{path} holds a single array; an npz data set holds {', '.join(NPZ_ARRAYS)} "
            "(numpy.savez(path, x_train=…, y_train=…, x_test=…, y_test=…))"
        )
    return archive


def _array(archive: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    """One array of the archive; an array of Python objects is refused."""
    try:
        return archive[name]
    except ValueError as err:  # object arrays need pickle
        raise ModeconnError(
            f"{path}: {name} holds Python objects (a pickle); modeconn never unpickles a file: "
            "store numbers (uint8 images, integer labels)"
        ) from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ModeconnError(f"{path}: cannot read {name}: {err}") from err


def _channels_first(images: np.ndarray, name: str, path: Path) -> np.ndarray:
    """N×H×W, N×H×W×C or N×C×H×W → N×C×H×W, square images only."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in _CHANNEL_SIZES:
        if images.shape[3] not in _CHANNEL_SIZES:
            raise ModeconnError(
                f"{path}: {name} has shape {images.shape}; neither axis 1 nor axis 3 has 1 or 3 "
                "channels"
            )
        images = images.transpose(0, 3, 1, 2)
    elif images.ndim != 4:
        raise ModeconnError(
            f"{path}: {name} has shape {images.shape}; expected N×H×W, N×H×W×C or N×C×H×W"
        )
    if images.shape[0] == 0:
        raise ModeconnError(f"{path}: {name} has no images")
    if images.shape[2] != images.shape[3]:
        raise ModeconnError(
            f"{path}: {name} images are {images.shape[2]}×{images.shape[3]}; modeconn needs "
            "square images (resize them, or use a folder data set with image_size)"
        )
    return np.ascontiguousarray(images)


def _as_uint8(images: np.ndarray, name: str, path: Path) -> np.ndarray:
    """uint8 images as they are; floating images in [0, 1] scaled to 0..255 and rounded."""
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise ModeconnError(
            f"{path}: {name} is {images.dtype}; images must be uint8 (0..255) or float in [0, 1]"
        )
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high) and low >= 0.0 and high <= 1.0):
        raise ModeconnError(
            f"{path}: {name} has values from {low} to {high}; float images must lie in [0, 1]"
        )
    return np.rint(images * 255.0).astype(np.uint8)


def _labels(labels: np.ndarray, name: str, count: int, path: Path) -> np.ndarray:
    """Integer labels, one per image, none negative, as int64."""
    if labels.ndim != 1 or labels.shape[0] != count:
        raise ModeconnError(
            f"{path}: {name} has shape {labels.shape}; expected one label per image ({count},)"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ModeconnError(f"{path}: {name} is {labels.dtype}; labels must be integers")
    if labels.min() < 0:
        raise ModeconnError(f"{path}: {name} has negative labels (down to {labels.min()})")
    return labels.astype(np.int64)


def _class_names(archive: np.lib.npyio.NpzFile, count: int, path: Path) -> tuple[str, ...]:
    """The archive's ``class_names`` (one string per class), or "0", "1", … without them."""
    if CLASS_NAMES_KEY not in archive.files:
        return tuple(str(label) for label in range(count))
    names = _array(archive, CLASS_NAMES_KEY, path)
    if names.dtype.kind != "U" or names.shape != (count,):
        raise ModeconnError(
            f"{path}: {CLASS_NAMES_KEY} must be {count} strings (one per class), "
            f"found {names.dtype} {names.shape}"
        )
    return tuple(str(name) for name in names)


def _split(archive: np.lib.npyio.NpzFile, split: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Checked uint8 NCHW images and int64 labels of one split."""
    x_name, y_name = f"x_{split}", f"y_{split}"
    images = _as_uint8(_channels_first(_array(archive, x_name, path), x_name, path), x_name, path)
    return images, _labels(_array(archive, y_name, path), y_name, images.shape[0], path)


def _check_agreement(splits: ArraySplits, path: Path) -> None:
    """Train and test images share one shape; every test class occurs in the training labels."""
    if splits.train_x.shape[1:] != splits.test_x.shape[1:]:
        raise ModeconnError(
            f"{path}: x_train images are {splits.train_x.shape[1:]} and x_test images "
            f"{splits.test_x.shape[1:]}; both must have one shape"
        )
    if splits.train_x.shape[1] not in _CHANNEL_SIZES:
        raise ModeconnError(f"{path}: images have {splits.train_x.shape[1]} channels, not 1 or 3")
    unseen = np.setdiff1d(np.unique(splits.test_y), np.unique(splits.train_y))
    if unseen.size:
        raise ModeconnError(
            f"{path}: y_test has class {int(unseen[0])}, which y_train does not have"
        )


def load_npz(path: str | Path) -> SourceData:
    """Read an npz data set (see the module docstring); anything wrong ends in one line naming the
    file and the array."""
    path = Path(path)
    with _open(path) as archive:
        missing = [name for name in NPZ_ARRAYS if name not in archive.files]
        if missing:
            found = ", ".join(archive.files) or "no arrays"
            raise ModeconnError(
                f"{path} lacks {', '.join(missing)}: an npz data set holds "
                f"{', '.join(NPZ_ARRAYS)} (found {found})"
            )
        splits = ArraySplits(*_split(archive, "train", path), *_split(archive, "test", path))
        _check_agreement(splits, path)
        class_names = _class_names(archive, int(splits.train_y.max()) + 1, path)
    mean, std = channel_stats(splits.train_x)
    return SourceData(splits, class_names, mean, std)
