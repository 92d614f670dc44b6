"""Model zoo: input normalisation, the architecture registry and the built-in architectures.

Build a model from a :class:`ModelSpec` with :func:`build_model`; it takes images in [0, 1] and
normalises them itself. ``model_names()`` lists the registered architectures; a user's own is given
as ``"package.module:factory"``. :func:`permutation_spec` describes a model's weight-space symmetry.
:class:`ForeignArchitecture` describes weights saved without a sidecar (the user's own state dict).
"""

from modeconn.models import zoo  # registers the built-in architectures
from modeconn.models.foreign import ForeignArchitecture
from modeconn.models.normalize import Normalize, NormalizedModel
from modeconn.models.permutation import PermutationSpec, apply_permutation, permutation_spec
from modeconn.models.registry import (
    ModelSpec,
    build_model,
    build_network,
    check_model_kwargs,
    last_conv_name,
    last_linear_name,
    model_names,
    register_model,
    resolve_factory,
)

__all__ = [
    "ForeignArchitecture",
    "ModelSpec",
    "Normalize",
    "NormalizedModel",
    "PermutationSpec",
    "apply_permutation",
    "build_model",
    "build_network",
    "check_model_kwargs",
    "last_conv_name",
    "last_linear_name",
    "model_names",
    "permutation_spec",
    "register_model",
    "resolve_factory",
    "zoo",
]
