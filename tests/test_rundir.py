"""The run-directory lifecycle (:func:`modeconn.rundir.open_run`): config first, summary last,
finished runs kept unless forced, unfinished ones continued only on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.rundir import (
    check_run_dir,
    environment_versions,
    open_optional_run,
    open_run,
    run_status,
)


def _finish(out: Path, config: dict, summary: dict, **flags) -> None:
    with open_run(out, config, **flags) as run:
        (run.file("table.csv")).write_text("t\n0\n")
        run.finish(summary)


def test_a_run_writes_config_first_and_summary_last(tmp_path: Path):
    out = tmp_path / "run"
    with open_run(out, {"command": "x", "lr": 0.1}) as run:
        assert run_status(out) == "started"
        assert not run.file("summary.json").exists()
        run.state_dir.mkdir()
        run.finish({"clean_acc": 0.5})
        assert not run.file("summary.json").exists()  # written only when the block ends
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "x" and config["lr"] == 0.1 and "torch" in config["versions"]
    assert json.loads((out / "summary.json").read_text()) == {"clean_acc": 0.5}
    assert run_status(out) == "finished" and not (out / "state").exists()


def test_a_finished_run_is_refused_without_force_and_replaced_with_it(tmp_path: Path):
    out = tmp_path / "run"
    _finish(out, {"lr": 0.1}, {"clean_acc": 0.5})
    with pytest.raises(ModeconnError, match="finished run; pass force=True") as info:
        _finish(out, {"lr": 0.1}, {"clean_acc": 0.6})
    assert info.value.parameters == ("force",)
    assert json.loads((out / "summary.json").read_text()) == {"clean_acc": 0.5}
    (out / "stale.png").write_text("old figure")
    _finish(out, {"lr": 0.2}, {"clean_acc": 0.6}, force=True)
    assert not (out / "stale.png").exists()
    assert json.loads((out / "config.json").read_text())["lr"] == 0.2
    assert json.loads((out / "summary.json").read_text()) == {"clean_acc": 0.6}


def test_an_exception_leaves_no_summary_and_resume_continues(tmp_path: Path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), open_run(out, {"lr": 0.1}) as run:
        run.state_dir.mkdir()
        run.finish({"clean_acc": 0.5})
        raise KeyboardInterrupt
    assert run_status(out) == "started" and not (out / "summary.json").exists()
    with pytest.raises(ModeconnError, match="unfinished run; pass resume=True"):
        _finish(out, {"lr": 0.1}, {})
    with pytest.raises(ModeconnError, match=r"options differ from the original run \(lr\)"):
        _finish(out, {"lr": 0.2}, {}, resume=True)
    with open_run(out, {"lr": 0.1}, resume=True) as run:
        assert run.resuming and run.state_dir.exists()  # the state to continue from is kept
        run.finish({"clean_acc": 0.7})
    assert json.loads((out / "summary.json").read_text()) == {"clean_acc": 0.7}


def test_a_block_that_never_finishes_is_a_bug(tmp_path: Path):
    with pytest.raises(RuntimeError, match="without finish"), open_run(tmp_path / "run", {}):
        pass
    assert run_status(tmp_path / "run") == "started"


def test_checks_touch_nothing(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidArgument, match="not a directory"):
        check_run_dir(tmp_path / "file")
    assert check_run_dir(tmp_path / "new") is False and not (tmp_path / "new").exists()


def test_an_optional_run_without_out_writes_nothing(tmp_path: Path):
    with open_optional_run(None, {"lr": 0.1}) as run:
        assert run is None
    with open_optional_run(tmp_path / "run", {"lr": 0.1}) as run:
        assert run is not None
        run.finish({"clean_acc": 0.5})
    assert run_status(tmp_path / "run") == "finished"


def test_the_config_records_the_cpu_kernels_and_the_variables_that_force_them(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    versions = environment_versions()
    assert versions["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert versions["onednn_max_cpu_isa"] == "AVX2" and "aten_cpu_capability" not in versions
