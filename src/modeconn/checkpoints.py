"""Safe checkpoints: ``NAME.safetensors`` holds the tensors, ``NAME.json`` says what they are.

The sidecar records the architecture and its keyword arguments, the data set, the input shape, the
number of classes, the normalisation, the attack spec of a tampered model, metrics and the package
version, so any later command can rebuild the model without flags.

A model file may come from an attacker, so nothing is ever unpickled: safetensors is a plain tensor
format, and ``.pt``/``.pth`` files are read only through ``torch.load(weights_only=True)``, which
refuses any object other than tensors and containers of them.

Weights without a sidecar (a state dict saved by the user's own code) load when the caller says
what they are: a :class:`~modeconn.models.foreign.ForeignArchitecture`, sized by the data set the
model is used on. The way back is :func:`save_model`'s second file, ``NAME.weights.safetensors``:
the bare network's state dict in the user's own key names, which
``model.load_state_dict(safetensors.torch.load_file(PATH))`` takes on the user's own class.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from modeconn import __version__
from modeconn.data.prepare import DataConfig, PreparedData, prepare_data, with_input_shape
from modeconn.errors import InvalidArgument, MissingInput, ModeconnError
from modeconn.io import atomic_write, read_json, write_json
from modeconn.models import ModelSpec, NormalizedModel, build_model
from modeconn.models.foreign import DataShape, ForeignArchitecture, fit_state_dict, load_checked
from modeconn.models.sizing import check_compatible

FORMAT = "modeconn-checkpoint"
DEFAULT_NAME = "model.safetensors"
#: Suffix of the file beside ``NAME.safetensors`` with the bare network's weights.
NETWORK_WEIGHTS_SUFFIX = ".weights.safetensors"
#: The weight files ``read_state_dict`` opens with ``torch.load(weights_only=True)``.
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
#: Keys under which training scripts commonly store a state dict in a ``.pt`` file.
STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")
#: The data set of a model that names none.
DEFAULT_DATASET = "fashion-mnist"


@dataclass
class Checkpoint:
    """A loaded model with everything its sidecar said about it."""

    model: nn.Module
    spec: ModelSpec
    dataset: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def attack(self) -> dict[str, Any] | None:
        return self.meta.get("attack")


def resolve_weights_path(path: str | Path) -> Path:
    """Accept a run directory, a ``.safetensors`` file, its ``.json`` sidecar, or a ``.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / DEFAULT_NAME
    elif p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.exists():
        raise MissingInput(f"model file not found: {p}", p)
    return p


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and containers of them, nothing else."""
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol: one line, not three
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = next(
            (
                line.split(":", 1)[1].strip()
                for line in str(err).splitlines()
                if line.startswith("WeightsUnpickler error:")
            ),
            None,
        )
        raise ModeconnError(
            f"refusing to load {path}: it holds objects other than tensors "
            f"(a pickle that could run code){f' — {detail}' if detail else ''}"
        ) from None
    except Exception as err:  # a corrupt file fails in many ways inside torch
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModeconnError(
            f"cannot read {path} as a PyTorch state dict: {type(err).__name__} {first}".rstrip()
        ) from None


def _unwrap(obj: Any) -> Any:
    """The state dict inside a checkpoint dict (``{"state_dict": …}``, ``{"model": …}``, …)."""
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in STATE_DICT_WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat name → tensor mapping without ever unpickling arbitrary objects.

    A ``.pt``/``.pth``/``.bin`` file may hold a bare state dict or one under the usual keys
    (``state_dict``, ``model_state_dict``, ``model``, ``net``); DataParallel's and DDP's
    ``module.`` prefix is dropped. Any other file must be safetensors.
    """
    p = Path(path)
    if p.suffix in TORCH_SUFFIXES:
        obj = _unwrap(_torch_load(p))
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ModeconnError(f"{p} does not hold a state dict of tensors")
        return {str(k).removeprefix("module."): v for k, v in obj.items()}
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModeconnError(
            f"cannot read {p} as safetensors (weights must be .safetensors or a PyTorch "
            f"state dict in {'/'.join(TORCH_SUFFIXES)}): {err}"
        ) from None


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors to a safetensors file atomically (shared storage is cloned apart)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, str(tmp)))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy ``state`` into ``model``; name the first tensor that is missing, extra or misshapen."""
    load_checked(model, state, source)


def network_of(model: nn.Module) -> nn.Module:
    """The bare network inside a modeconn model (no normalisation layer): the user's own class."""
    return model.net if isinstance(model, NormalizedModel) else model


def network_weights_path(weights: Path) -> Path:
    """``NAME.weights.safetensors`` beside ``NAME.safetensors``."""
    return weights.with_name(weights.name.removesuffix(".safetensors") + NETWORK_WEIGHTS_SUFFIX)


def save_model(
    path: str | Path,
    model: nn.Module,
    spec: ModelSpec,
    *,
    dataset: str | None,
    attack: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    class_names: Sequence[str] = (),
) -> Path:
    """Write ``model`` as ``path`` (a ``.safetensors`` file or a directory) and its sidecar.

    ``class_names`` (a data set's ``info.class_names``, e.g. a folder's class folders in sorted
    order) name output 0, 1, … in the sidecar, so the indices keep their meaning wherever the
    model goes; a data set without names (the registered ones) records none.

    Beside it goes ``NAME.weights.safetensors``, the bare network's state dict in the key names of
    the user's own class, without modeconn's normalisation layer (the sidecar names it, and its
    ``normalization`` says what the network expects its inputs to be normalised with).
    """
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / DEFAULT_NAME
    write_tensors(p, model.state_dict())
    network_weights = network_weights_path(p)
    write_tensors(network_weights, network_of(model).state_dict())
    meta = {
        "format": FORMAT,
        "kind": "model",
        "version": __version__,
        "model": spec.to_dict(),
        "dataset": dataset,
        "input_shape": [spec.in_channels, spec.image_size, spec.image_size],
        "num_classes": spec.num_classes,
        **({"class_names": list(class_names)} if class_names else {}),
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "attack": attack,
        "metrics": metrics or {},
        "network_weights": network_weights.name,
        **(extra or {}),
    }
    write_json(sidecar_path(p), meta)
    return p


def read_sidecar(weights: Path) -> dict[str, Any]:
    side = sidecar_path(weights)
    if not side.exists():
        raise ModeconnError(
            f"{weights} has no sidecar {side.name}: modeconn cannot tell its architecture"
        )
    try:
        meta = read_json(side)
    except json.JSONDecodeError as err:
        raise ModeconnError(f"{side} is not valid JSON: {err}") from None
    if meta.get("format") != FORMAT:
        raise ModeconnError(f"{side} is not a modeconn checkpoint sidecar")
    return meta


def _sidecar_spec(weights: Path) -> tuple[ModelSpec, dict[str, Any]]:
    """The model spec and the whole sidecar of a model checkpoint."""
    meta = read_sidecar(weights)
    if meta.get("kind", "model") != "model":
        raise ModeconnError(
            f"{weights} is a {meta.get('kind')} checkpoint, not a model "
            "(use `modeconn extract` to take a model from it)"
        )
    return ModelSpec.from_dict(meta["model"]), meta


def is_foreign(path: str | Path, foreign: ForeignArchitecture | None) -> bool:
    """Whether ``path`` is read through ``foreign``: it is given and the weights have no sidecar
    (a modeconn checkpoint's own sidecar always wins)."""
    return foreign is not None and not sidecar_path(resolve_weights_path(path)).exists()


def foreign_record(foreign: ForeignArchitecture | None) -> dict[str, Any]:
    """``{"foreign_model": …}`` for a run's config when weights were read through ``foreign``;
    nothing otherwise, so the config of a run on modeconn's own checkpoints stays as it was."""
    return {} if foreign is None else {"foreign_model": foreign.to_dict()}


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    spec: ModelSpec | None = None,
    dataset: str | None = None,
    foreign: ForeignArchitecture | None = None,
    data: DataShape | None = None,
) -> Checkpoint:
    """Rebuild a model from its checkpoint.

    Weights with a sidecar need nothing else. Weights without one are read as ``spec`` says, or
    as ``foreign`` says sized for the data set ``data`` (its shape and classes; ``dataset`` names
    it); their tensors may be in the user's own key names or in modeconn's.
    """
    weights = resolve_weights_path(path)
    if spec is None and is_foreign(weights, foreign):
        if data is None:
            raise InvalidArgument("data", "weights without a sidecar need the data set's shape")
        spec = foreign.spec_for(data)
    if spec is None:
        spec, meta = _sidecar_spec(weights)
        dataset = meta.get("dataset", dataset)
        model = build_model(spec)
        load_weights(model, read_state_dict(weights), weights)
    else:
        meta = {"format": FORMAT, "kind": "model", "model": spec.to_dict(), "dataset": dataset}
        model = build_model(spec)
        fit_state_dict(model.net, read_state_dict(weights), weights)
    model.to(device).eval()
    return Checkpoint(model=model, spec=spec, dataset=dataset, meta=meta, path=weights)


def model_input_shape(data: DataConfig, spec: ModelSpec) -> DataConfig:
    """``data`` with the input shape of a model with a sidecar where it names none, so a model
    trained at ``--image-size 32`` on a folder runs on that folder at 32 without the flag."""
    return with_input_shape(data, spec.image_size, spec.in_channels)


def load_model_and_data(
    path: str | Path,
    data: DataConfig,
    *,
    device: str | torch.device = "cpu",
    foreign: ForeignArchitecture | None = None,
) -> tuple[Checkpoint, DataConfig, PreparedData]:
    """A model and the data set it runs on, checked to fit each other.

    ``data.dataset`` None means the data set in the model's sidecar (or ``DEFAULT_DATASET``). A
    model read through ``foreign`` has no sidecar: its data set comes first, and sizes it. A
    folder's images are converted to the input shape the model takes (:func:`model_input_shape`).
    """
    if is_foreign(path, foreign):
        data = dataclasses.replace(data, dataset=data.dataset or DEFAULT_DATASET)
        data = with_input_shape(data, foreign.image_size, foreign.channels)
        prepared = prepare_data(data)
        info = prepared.info
        checkpoint = load_model(path, device=device, foreign=foreign, data=info, dataset=info.name)
        return checkpoint, data, prepared
    checkpoint = load_model(path, device=device)
    data = dataclasses.replace(data, dataset=data.dataset or checkpoint.dataset or DEFAULT_DATASET)
    data = model_input_shape(data, checkpoint.spec)
    prepared = prepare_data(data)
    check_compatible(checkpoint.spec, prepared, str(path))
    return checkpoint, data, prepared
