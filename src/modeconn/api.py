"""The Python API in one import: every command and the in-memory pieces they are built from.

``run_*`` functions (:mod:`modeconn.commands`) write run directories and return summaries; the
rest work in memory on ``nn.Module``s and tensors, and are what the commands are made of.
"""

from modeconn import commands
from modeconn.allocator import keep_freed_memory
from modeconn.attacks.backdoor import TriggerSpec
from modeconn.attacks.evasion import apgd, fgsm, pgd
from modeconn.attacks.injection import InjectionSpec
from modeconn.checkpoints import Checkpoint, load_model, save_model
from modeconn.commands import *  # noqa: F403 (every run_<command>)
from modeconn.commands.demo import DemoConfig
from modeconn.commands.landscape import LandscapeConfig
from modeconn.connectivity import (
    Curve,
    Surface,
    evaluate_path,
    evaluate_surface,
    fit_curve,
    segment_barrier,
    update_bn,
    weight_matching,
)
from modeconn.data.prepare import DataConfig, prepare_data
from modeconn.defenses.repair import Repair, RepairConfig
from modeconn.defenses.scan import ScanConfig, scan_model
from modeconn.defenses.unlearning import UnlearningConfig, unlearn
from modeconn.models import ModelSpec, build_model
from modeconn.training import TrainConfig, evaluate_model, train

__all__ = [
    "Checkpoint",
    "Curve",
    "DataConfig",
    "DemoConfig",
    "InjectionSpec",
    "LandscapeConfig",
    "ModelSpec",
    "Repair",
    "RepairConfig",
    "ScanConfig",
    "Surface",
    "TrainConfig",
    "TriggerSpec",
    "UnlearningConfig",
    "apgd",
    "build_model",
    "evaluate_model",
    "evaluate_path",
    "evaluate_surface",
    "fgsm",
    "fit_curve",
    "keep_freed_memory",
    "load_model",
    "pgd",
    "prepare_data",
    "save_model",
    "scan_model",
    "segment_barrier",
    "train",
    "unlearn",
    "update_bn",
    "weight_matching",
    *commands.__all__,
]
