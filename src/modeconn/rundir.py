"""Run directories: where every command writes its config, metrics, summary, checkpoints and plots.

Layout of a run directory::

    config.json      every option, the seed, package versions
    metrics.jsonl    one JSON object per epoch (training commands)
    summary.json     final figures with flat keys; its presence marks the run as finished
    state/           resumable training state (removed once the run finishes)
    *.safetensors + *.json, *.png, *.csv, *.md

A finished run is never overwritten unless ``force`` is given; an unfinished one is continued only
with ``resume``. Every command goes through one lifecycle, :func:`open_run`: check the directory,
write ``config.json``, do the work, and write ``summary.json`` last, only if the work succeeded.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from modeconn import __version__
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.io import atomic_write_text, read_json, to_jsonable, write_json

if TYPE_CHECKING:
    from modeconn.distributed import DistContext

SUMMARY = "summary.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATE_DIR = "state"


#: Environment variables that choose the CPU kernels (and so the last digits of every figure).
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def environment_versions() -> dict[str, str]:
    """Versions recorded in every config so that a run can be reproduced, and the CPU kernels
    PyTorch dispatches to (``cpu_capability``: AVX2 and AVX-512 kernels round sums differently,
    so the same seed gives other digits; the variables that force them, when set)."""
    versions = {
        "modeconn": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    versions.update({v.lower(): os.environ[v] for v in KERNEL_VARIABLES if v in os.environ})
    return versions


def run_status(path: str | Path) -> str:
    """``"finished"`` (summary written), ``"started"`` (config written, no summary) or ``"new"``."""
    path = Path(path)
    if (path / SUMMARY).exists():
        return "finished"
    return "started" if (path / CONFIG).exists() else "new"


def check_run_dir(path: str | Path, *, force: bool = False, resume: bool = False) -> bool:
    """Raise unless ``path`` may be written with these flags; return whether the run resumes.

    ``force`` allows anything (the directory is cleared); without it a finished run is refused,
    and so is an unfinished one unless ``resume`` continues it. Touches nothing: a command can
    call it to refuse early, before it writes anything beside the run directory.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidArgument("out", f"out {path} exists and is not a directory")
    if force:
        return False
    status = run_status(path)
    if status == "finished" and not resume:
        raise ModeconnError(
            f"{path} already holds a finished run; pass force=True to overwrite it",
            parameters=("force",),
        )
    if status == "started" and not resume and any(path.iterdir()):
        raise ModeconnError(
            f"{path} holds an unfinished run; pass resume=True to continue it "
            "or force=True to start over",
            parameters=("resume", "force"),
        )
    return resume and status == "started"


class RunDir:
    """A command's output directory with the run-directory conventions enforced."""

    def __init__(self, path: str | Path, *, force: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        self.resuming = check_run_dir(self.path, force=force, resume=resume)
        self.summary: dict[str, Any] | None = None
        if force and self.path.exists():
            self._clear()
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def attach(cls, path: str | Path, *, resuming: bool) -> RunDir:
        """Open a directory another process manages (DDP workers), without any checks."""
        run = cls.__new__(cls)
        run.path, run.resuming, run.summary = Path(path), resuming, None
        return run

    def _clear(self) -> None:
        for child in self.path.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def file(self, name: str) -> Path:
        """Path of a file inside the run directory."""
        return self.path / name

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).exists()

    def write_config(self, config: dict[str, Any]) -> None:
        """Record every option with the environment's versions; on resume, check it is unchanged."""
        record = {**to_jsonable(config), "versions": environment_versions()}
        if self.resuming:
            old = read_json(self.file(CONFIG))
            changed = [
                k
                for k in record
                if k not in ("versions", "resume", "force") and old.get(k) != record[k]
            ]
            if changed:
                raise ModeconnError(
                    f"cannot resume {self.path}: options differ from the original run "
                    f"({', '.join(changed)})"
                )
            return
        write_json(self.file(CONFIG), record)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's metrics to metrics.jsonl (rewritten atomically)."""
        path = self.file(METRICS)
        old = path.read_text() if path.exists() else ""
        atomic_write_text(path, old + json.dumps(to_jsonable(record)) + "\n")

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep only the metrics of epochs already in the resumable state (after interruption)."""
        path = self.file(METRICS)
        if not path.exists():
            return
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r.get("epoch", 0) <= epochs_done]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.file(METRICS)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def finish(self, summary: dict[str, Any]) -> None:
        """Hand over the run's final figures: :func:`open_run` writes them as ``summary.json``
        when its block ends without an exception."""
        self.summary = summary

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json last: its presence marks the run as finished."""
        write_json(self.file(SUMMARY), summary)

    def read_summary(self) -> dict[str, Any]:
        return read_json(self.file(SUMMARY))

    @property
    def state_dir(self) -> Path:
        return self.path / STATE_DIR

    def clear_state(self) -> None:
        """Remove the resumable training state once a run has finished."""
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)


@contextmanager
def open_run(
    out: str | Path,
    config: Mapping[str, Any],
    *,
    force: bool = False,
    resume: bool = False,
    dist_ctx: DistContext | None = None,
) -> Iterator[RunDir]:
    """A command's run directory for the length of a ``with`` block: the one lifecycle of a run.

    On entry: check ``out`` (:func:`check_run_dir`: a finished run needs ``force``, an
    unfinished one ``resume`` or ``force``), clear it with ``force``, create it, and write
    ``config`` to ``config.json`` with the package versions (on resume: check that the options
    are unchanged instead). The block does the work, writing its tables, figures and
    checkpoints into the yielded :class:`RunDir`, and ends with ``run.finish(summary)``. On a
    normal exit ``summary.json`` is written (atomically, last of all: it marks the run as
    finished) and the resumable ``state/`` is removed; if the block raises, no summary is
    written, so nothing that looks finished is left, and ``--resume`` or ``--force`` picks the
    run up again. Check everything a user can get wrong before entering.

    Under ``torchrun`` pass the ``dist_ctx``: only the main process checks the directory and
    writes the config and summary; the others wait for it, attach to the directory, and wait
    again at the end until the summary is written.

    Example::

        check_options(...)  # and load models and data: errors here leave no trace
        with open_run(out, {"command": "align", ...}, force=force) as run:
            write_table(run.file("path.csv"), rows)
            run.finish(summary)
        return summary
    """
    is_main = dist_ctx is None or dist_ctx.is_main
    run = RunDir(out, force=force, resume=resume) if is_main else None
    if dist_ctx is not None:
        dist_ctx.barrier()
    if run is None:
        run = RunDir.attach(out, resuming=resume and (Path(out) / STATE_DIR).exists())
    else:
        run.write_config(dict(config))
    yield run
    if is_main:
        if run.summary is None:
            raise RuntimeError(f"the run in {run.path} ended without finish(summary)")
        run.write_summary(run.summary)
        run.clear_state()
    if dist_ctx is not None:
        dist_ctx.barrier()


def open_optional_run(
    out: str | Path | None, config: Mapping[str, Any], *, force: bool = False
) -> AbstractContextManager[RunDir | None]:
    """:func:`open_run` for commands whose run directory is optional: without ``out`` the block
    runs with ``None`` and nothing is written."""
    return nullcontext() if out is None else open_run(out, config, force=force)
