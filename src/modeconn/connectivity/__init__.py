"""Mode connectivity: curves and Bezier surfaces over any model, BatchNorm along a path, path
evaluation, alignment.

``Curve``/``Surface`` span families of parameter sets evaluated with
:func:`torch.func.functional_call`; :func:`update_bn` recomputes BatchNorm statistics at a point;
:func:`fit_curve`/:func:`train_family` train them through the one training loop;
:func:`evaluate_path`/:func:`evaluate_surface` evaluate them point by point (the commands that
save and load them live in :mod:`modeconn.commands.connect`);
:func:`weight_matching`/:func:`activation_matching` permute one model onto another and
:func:`segment_barrier` measures the straight line between them.
"""

from modeconn.connectivity.alignment import (
    activation_matching,
    segment_barrier,
    weight_matching,
)
from modeconn.connectivity.bn import has_batchnorm, update_bn
from modeconn.connectivity.checkpoints import (
    load_curve,
    load_family,
    load_surface,
    save_curve,
    save_surface,
)
from modeconn.connectivity.curves import (
    ControlPointModel,
    Curve,
    bezier_coefficients,
    polychain_coefficients,
    segment,
)
from modeconn.connectivity.evaluate import (
    evaluate_path,
    evaluate_surface,
    path_integral,
    path_summary,
)
from modeconn.connectivity.metrics import PathMetric, SplitLossAccuracy
from modeconn.connectivity.surfaces import Surface, surface_coefficients
from modeconn.connectivity.train import (
    CURVE_DEFAULTS,
    PointObjective,
    curve_train_config,
    fit_curve,
    train_family,
)

__all__ = [
    "CURVE_DEFAULTS",
    "ControlPointModel",
    "Curve",
    "PathMetric",
    "PointObjective",
    "SplitLossAccuracy",
    "Surface",
    "activation_matching",
    "bezier_coefficients",
    "curve_train_config",
    "evaluate_path",
    "evaluate_surface",
    "fit_curve",
    "has_batchnorm",
    "load_curve",
    "load_family",
    "load_surface",
    "path_integral",
    "path_summary",
    "polychain_coefficients",
    "save_curve",
    "save_surface",
    "segment",
    "segment_barrier",
    "surface_coefficients",
    "train_family",
    "update_bn",
    "weight_matching",
]
