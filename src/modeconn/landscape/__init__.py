"""Loss-landscape geometry: input-Hessian eigenvalues, weight-Hessian spectra, weight-space scans.

* :mod:`~modeconn.landscape.input_hessian` — λ_max of ∇²_x ℓ for every image of a batch at once;
* :mod:`~modeconn.landscape.weight_hessian` — top-k eigenvalues, trace, spectral density;
* :mod:`~modeconn.landscape.directions` — filter-normalised directions, 1D/2D scans, lines and
  planes through models;
* :mod:`~modeconn.landscape.metrics` — the input-Hessian path metric, scan evaluators, Pearson's r;
* :mod:`~modeconn.landscape.linalg` — the matrix-free batched eigen-solvers underneath;
* :mod:`~modeconn.commands.landscape` — the ``hessian`` and ``landscape`` commands as functions.
"""

from modeconn.landscape.directions import (
    filter_normalized_direction,
    line_through,
    plane_through,
    scan_1d,
    scan_2d,
)
from modeconn.landscape.input_hessian import (
    input_hessian_eig,
    input_hessian_lmax,
    input_hessian_stats,
)
from modeconn.landscape.linalg import hutchinson_trace, lanczos, power_iteration, slq_density
from modeconn.landscape.metrics import InputHessianMetric, pearson, robust_path_summary
from modeconn.landscape.weight_hessian import (
    WeightHessian,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
)

__all__ = [
    "InputHessianMetric",
    "WeightHessian",
    "filter_normalized_direction",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_trace",
    "hutchinson_trace",
    "input_hessian_eig",
    "input_hessian_lmax",
    "input_hessian_stats",
    "lanczos",
    "line_through",
    "pearson",
    "plane_through",
    "power_iteration",
    "robust_path_summary",
    "scan_1d",
    "scan_2d",
    "slq_density",
]
