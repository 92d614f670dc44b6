"""The one training loop: schedules, resumption, NaN guard, DistributedDataParallel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from modeconn.commands.train import run_train
from modeconn.data.prepare import DataConfig, prepare_data
from modeconn.errors import ModeconnError
from modeconn.models import build_model
from modeconn.models.sizing import model_spec_for
from modeconn.rundir import RunDir
from modeconn.training import Objective, TrainConfig, lr_factor, train


def test_mode_connectivity_schedule_matches_reference():
    assert lr_factor("mc", 0.0) == 1.0
    assert lr_factor("mc", 0.49) == 1.0
    assert lr_factor("mc", 0.7) == pytest.approx(1 - 0.99 * 0.5)
    assert lr_factor("mc", 0.9) == pytest.approx(0.01)
    assert lr_factor("mc", 0.95) == pytest.approx(0.01)
    assert lr_factor("cosine", 0.0) == 1.0
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0)
    assert lr_factor("step", 0.8, (0.5, 0.75), 0.1) == pytest.approx(0.01)


class _Interrupt(Exception):
    pass


def _digits_setup():
    data = prepare_data(DataConfig(dataset="digits", seed=3))
    spec = model_spec_for("mlp", data.info, {"hidden": [32]})
    torch.manual_seed(3)
    return data, spec, build_model(spec)


def test_resume_reproduces_uninterrupted_run(tmp_path: Path):
    config = TrainConfig(epochs=3, batch_size=64, lr=0.05, seed=3)
    data, _, model_a = _digits_setup()
    train(
        model_a, data.train_loader(64, seed=3), config, run=RunDir(tmp_path / "a"), progress=False
    )

    data, _, model_b = _digits_setup()

    def stop_after_two(model, epoch, record):
        if epoch == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(
            model_b,
            data.train_loader(64, seed=3),
            config,
            run=RunDir(tmp_path / "b"),
            on_epoch_end=stop_after_two,
            progress=False,
        )
    (tmp_path / "b" / "config.json").write_text("{}")  # a started run, as the API would leave it
    data, _, model_c = _digits_setup()  # fresh weights: everything must come from the state
    run = RunDir(tmp_path / "b", resume=True)
    assert run.resuming
    result = train(model_c, data.train_loader(64, seed=3), config, run=run, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    for (name, a), c in zip(
        model_a.state_dict().items(), model_c.state_dict().values(), strict=True
    ):
        assert torch.equal(a, c), name
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]


class _NaNObjective(Objective):
    def loss(self, model, x, y):
        logits = model(x)
        return logits.sum() * float("nan"), logits


def test_nan_loss_is_a_clear_error():
    data, _, model = _digits_setup()
    with pytest.raises(ModeconnError, match="loss became nan"):
        train(
            model,
            data.train_loader(64),
            TrainConfig(epochs=1),
            objective=_NaNObjective(),
            progress=False,
        )


def test_train_classifier_writes_run_directory(tmp_path: Path):
    out = tmp_path / "run"
    summary = run_train(
        out,
        model="mlp",
        data=DataConfig(dataset="digits", val_size=100),
        config=TrainConfig(epochs=2, batch_size=64),
        progress=False,
    )
    assert 0.5 < summary["clean_acc"] <= 1.0
    assert {"config.json", "metrics.jsonl", "summary.json", "model.safetensors", "model.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "state").exists()
    rows = RunDir(out, resume=True).read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "val_acc"} <= set(rows[0])
    with pytest.raises(ModeconnError, match="finished run"):
        run_train(
            out,
            model="mlp",
            data=DataConfig(dataset="digits"),
            config=TrainConfig(epochs=1),
            progress=False,
        )


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:

    from modeconn.checkpoints import write_tensors
    from modeconn.distributed import init_distributed, shutdown_distributed

    os.environ.update(
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MODECONN_INIT_METHOD=f"file://{init_file}",
    )
    torch.set_num_threads(1)
    ctx, _ = init_distributed("cpu", f"file://{init_file}")
    data = prepare_data(DataConfig(dataset="digits"))
    loader = data.train_loader(32, dist_ctx=ctx)
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    model = build_model(model_spec_for("mlp", data.info, {"hidden": [32]}))
    train(model, loader, TrainConfig(epochs=1, batch_size=32), dist_ctx=ctx, progress=False)
    write_tensors(Path(out) / f"rank{rank}.safetensors", model.state_dict())
    (Path(out) / f"batches{rank}").write_text(str(len(loader)))
    run_train(
        Path(out) / "run",
        model="mlp",
        model_kwargs={"hidden": [32]},
        data=DataConfig(dataset="digits"),
        config=TrainConfig(epochs=2, batch_size=32),
        device="cpu",
        progress=False,
    )
    shutdown_distributed()  # what the at-exit hook does under torchrun


@pytest.mark.slow
def test_ddp_two_process_gloo(tmp_path: Path):
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "init"), str(tmp_path)))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    for p in procs:
        if p.is_alive():
            p.kill()
            pytest.fail("DDP worker hung")
        assert p.exitcode == 0
    from modeconn.checkpoints import read_state_dict

    w0 = read_state_dict(tmp_path / "rank0.safetensors")
    w1 = read_state_dict(tmp_path / "rank1.safetensors")
    for name, tensor in w0.items():
        assert torch.allclose(tensor, w1[name]), name
    n = len(prepare_data(DataConfig(dataset="digits")).indices("train"))
    per_rank = -(-n // 2)
    assert int((tmp_path / "batches0").read_text()) == -(-per_rank // 32)
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"world_size": 2' in config
    summary = RunDir(tmp_path / "run", resume=True).read_summary()
    assert summary["clean_acc"] > 0.5
