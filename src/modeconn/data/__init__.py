"""Data sets, splits and loaders.

``load_dataset`` reads a registered data set, or the user's own files (a folder of images per
class, an ``.npz`` of arrays), from disk into uint8 tensors; ``make_splits`` carves validation and
bonafide subsets out of its training split; ``TensorLoader`` turns tensors (and an optional
subset) into float mini-batches in [0, 1].
"""

from modeconn.data.folder import list_image_folder, load_image_folder
from modeconn.data.formats import (
    ArraySplits,
    MissingFilesError,
    SourceData,
    load_cifar10,
    load_cifar100,
    load_digits_dataset,
    load_idx_dataset,
    load_svhn,
    read_idx,
)
from modeconn.data.loaders import (
    TensorLoader,
    augment_batch,
    make_eval_loader,
    random_crop_flip,
    subset_tensors,
    to_unit_float,
)
from modeconn.data.npz import load_npz
from modeconn.data.prepare import DataConfig, PreparedData, prepare_data
from modeconn.data.registry import (
    AUGMENTATIONS,
    DEFAULT_DATASET,
    USER_FORMATS,
    DatasetInfo,
    RawDataset,
    candidate_dirs,
    dataset_names,
    get_info,
    load_dataset,
)
from modeconn.data.splits import DataSplits, make_splits, stratified_indices

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_DATASET",
    "USER_FORMATS",
    "ArraySplits",
    "DataConfig",
    "DataSplits",
    "DatasetInfo",
    "MissingFilesError",
    "PreparedData",
    "RawDataset",
    "SourceData",
    "TensorLoader",
    "augment_batch",
    "candidate_dirs",
    "dataset_names",
    "get_info",
    "list_image_folder",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits_dataset",
    "load_idx_dataset",
    "load_image_folder",
    "load_npz",
    "load_svhn",
    "make_eval_loader",
    "make_splits",
    "prepare_data",
    "random_crop_flip",
    "read_idx",
    "stratified_indices",
    "subset_tensors",
    "to_unit_float",
]
