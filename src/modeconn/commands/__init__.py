"""Commands: the functions behind the CLI that own run directories.

Each ``run_<command>`` takes plain options, writes a run directory (``config.json``,
``summary.json``, tables, figures, checkpoints) and returns the summary it wrote. The algorithm
packages below (``connectivity``, ``attacks``, ``defenses``, ``landscape``) work in memory only.
"""

from modeconn.commands.align import run_align
from modeconn.commands.scan import run_scan

__all__ = ["run_align", "run_scan"]
