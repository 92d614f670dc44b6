"""Commands: the functions behind the CLI that own run directories.

Each ``run_<command>`` takes plain options, writes a run directory (``config.json``,
``summary.json``, tables, figures, checkpoints) and returns the summary it wrote; the CLI only
parses arguments and calls one. The algorithm packages (``connectivity``, ``attacks``,
``defenses``, ``landscape``, ``models``, ``data``) work in memory and never import this package.
"""

from modeconn.commands.align import run_align
from modeconn.commands.attack import run_attack, run_inject, run_poison
from modeconn.commands.connect import run_connect
from modeconn.commands.demo import run_demo, run_demos
from modeconn.commands.extract import run_extract
from modeconn.commands.import_weights import run_import
from modeconn.commands.landscape import run_hessian, run_landscape
from modeconn.commands.path_analysis import run_path_analysis
from modeconn.commands.path_eval import run_path_eval
from modeconn.commands.repair import run_repair
from modeconn.commands.reproduce import run_reproduce
from modeconn.commands.scan import run_scan
from modeconn.commands.surface import run_surface
from modeconn.commands.surface_eval import run_surface_eval
from modeconn.commands.train import run_evaluate, run_train

__all__ = [
    "run_align",
    "run_attack",
    "run_connect",
    "run_demo",
    "run_demos",
    "run_evaluate",
    "run_extract",
    "run_hessian",
    "run_import",
    "run_inject",
    "run_landscape",
    "run_path_analysis",
    "run_path_eval",
    "run_poison",
    "run_repair",
    "run_reproduce",
    "run_scan",
    "run_surface",
    "run_surface_eval",
    "run_train",
]
