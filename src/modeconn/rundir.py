"""Run directories: where every command writes its config, metrics, summary, checkpoints and plots.

Layout of a run directory::

    config.json      every option, the seed, package versions
    metrics.jsonl    one JSON object per epoch (training commands)
    summary.json     final figures with flat keys; its presence marks the run as finished
    state/           resumable training state (removed once the run finishes)
    *.safetensors + *.json, *.png, *.csv, *.md

A finished run is never overwritten unless ``force`` is given; an unfinished one is continued only
with ``resume``.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from modeconn import __version__
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.io import atomic_write_text, read_json, to_jsonable, write_json

SUMMARY = "summary.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATE_DIR = "state"


def environment_versions() -> dict[str, str]:
    """Versions recorded in every config so that a run can be reproduced."""
    return {
        "modeconn": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def run_status(path: str | Path) -> str:
    """``"finished"`` (summary written), ``"started"`` (config written, no summary) or ``"new"``."""
    path = Path(path)
    if (path / SUMMARY).exists():
        return "finished"
    return "started" if (path / CONFIG).exists() else "new"


class RunDir:
    """A command's output directory with the run-directory conventions enforced."""

    def __init__(self, path: str | Path, *, force: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        self.resuming = False
        if self.path.exists() and not self.path.is_dir():
            raise InvalidArgument("out", f"out {self.path} exists and is not a directory")
        status = run_status(self.path)
        finished, started = status == "finished", status != "new"
        if force and self.path.exists():
            self._clear()
        elif finished and not resume:
            raise ModeconnError(
                f"{self.path} already holds a finished run; pass force=True to overwrite it",
                parameters=("force",),
            )
        elif started and not resume and any(self.path.iterdir()):
            raise ModeconnError(
                f"{self.path} holds an unfinished run; pass resume=True to continue it "
                "or force=True to start over",
                parameters=("resume", "force"),
            )
        elif resume and started and not finished:
            self.resuming = True
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def attach(cls, path: str | Path, *, resuming: bool) -> RunDir:
        """Open a directory another process manages (DDP workers), without any checks."""
        run = cls.__new__(cls)
        run.path, run.resuming = Path(path), resuming
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
