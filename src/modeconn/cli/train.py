"""``modeconn train`` and ``modeconn evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modeconn import api
from modeconn.cli import app
from modeconn.cli.common import (
    BatchSize,
    DataDir,
    Dataset,
    Device,
    Epochs,
    Force,
    Lr,
    Model,
    ModelKwargs,
    Momentum,
    NoAugment,
    OptDataset,
    Optimizer,
    Out,
    Quiet,
    Resume,
    Schedule,
    Seed,
    TestLimit,
    TrainLimit,
    ValSize,
    WeightDecay,
    data_config,
    parse_json_kwargs,
    print_summary,
    train_config,
)


@app.command("train")
def train_command(
    out: Out,
    model: Model = "lenet",
    model_kwargs: ModelKwargs = None,
    dataset: Dataset = "fashion-mnist",
    data_dir: DataDir = None,
    epochs: Epochs = 10,
    batch_size: BatchSize = 128,
    lr: Lr = 0.05,
    momentum: Momentum = 0.9,
    wd: WeightDecay = 5e-4,
    optimizer: Optimizer = "sgd",
    schedule: Schedule = "cosine",
    val_size: ValSize = 0,
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
    no_augment: NoAugment = False,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train a classifier; writes model.safetensors, metrics.jsonl and summary.json to --out."""
    summary = api.train_classifier(
        out,
        model=model,
        model_kwargs=parse_json_kwargs(model_kwargs),
        data=data_config(
            dataset,
            data_dir,
            seed,
            train_limit=train_limit,
            test_limit=test_limit,
            val_size=val_size,
            augment=not no_augment,
        ),
        config=train_config(epochs, batch_size, lr, momentum, wd, optimizer, schedule, seed),
        device=device,
        force=force,
        resume=resume,
        progress=not quiet,
    )
    if summary:
        print_summary(summary, out)


@app.command("evaluate")
def evaluate_command(
    model_path: Annotated[
        Path, typer.Argument(help="Checkpoint (.safetensors, its .json, or a run directory).")
    ],
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    test_limit: TestLimit = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to write.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    force: Force = False,
) -> None:
    """Clean loss and accuracy of a checkpoint on its data set's test split."""
    summary = api.evaluate_checkpoint(
        model_path,
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        test_limit=test_limit,
        seed=seed,
        out=out,
        device=device,
        force=force,
    )
    print_summary(summary, out)
