"""``modeconn poison``, ``modeconn inject`` and ``modeconn attack``: the three threat models."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from modeconn.attacks.backdoor import TriggerSpec
from modeconn.cli import app
from modeconn.cli.common import (
    ATTACK,
    Checkpoint,
    ClassifierTraining,
    EvaluationData,
    ForeignModelOptions,
    JobOptions,
    Out,
    RunOptions,
    TrainLimit,
    default_of,
    option_groups,
    parse_fraction,
    parse_int_list,
    print_summary,
)
from modeconn.commands import attack as api

_TRIGGER = TriggerSpec()


def parse_position(text: str) -> str | list[int]:
    """A corner name, or ``ROW,COL`` of the patch's top-left pixel."""
    if "," in text:
        return parse_int_list(text, "--position") or []
    return text


@dataclasses.dataclass(frozen=True)
class TriggerOptions:
    """``--trigger`` … ``--warp-strength``: the backdoor ``poison`` plants (defaults:
    :class:`TriggerSpec`'s)."""

    trigger: Annotated[str, typer.Option("--trigger", help="patch, blend or warp.")] = _TRIGGER.type
    target: Annotated[int, typer.Option("--target", help="Target class (all-to-one).")] = (
        _TRIGGER.target
    )
    rate: Annotated[
        float, typer.Option("--rate", help="Fraction of training samples poisoned.")
    ] = _TRIGGER.rate
    label_mode: Annotated[
        str, typer.Option("--label-mode", help="all-to-one or all-to-all (y → y+1 mod C).")
    ] = _TRIGGER.label_mode
    patch_size: Annotated[int, typer.Option("--patch-size", help="Side of the patch.")] = (
        _TRIGGER.size
    )
    position: Annotated[
        str,
        typer.Option("--position", help="Patch corner (bottom-right, top-left, ...) or ROW,COL."),
    ] = str(_TRIGGER.position)
    value: Annotated[float, typer.Option("--value", help="Patch pixel value in [0, 1].")] = (
        _TRIGGER.value
    )
    pattern: Annotated[
        str | None,
        typer.Option(
            "--pattern",
            help="Patch: solid, checkerboard or random. Blend: random or an image FILE.npy.",
        ),
    ] = None
    blend_alpha: Annotated[
        float, typer.Option("--blend-alpha", help="Blend ratio α: x' = (1−α)x + α·pattern.")
    ] = _TRIGGER.alpha
    warp_strength: Annotated[
        float, typer.Option("--warp-strength", help="Strength of the warping trigger.")
    ] = _TRIGGER.warp_strength

    def spec(self, seed: int) -> TriggerSpec:
        """The API's trigger spec (``--pattern`` left out: the trigger type's own default)."""
        return TriggerSpec(
            type=self.trigger,
            size=self.patch_size,
            position=parse_position(self.position),
            value=self.value,
            alpha=self.blend_alpha,
            warp_strength=self.warp_strength,
            target=self.target,
            label_mode=self.label_mode,
            rate=self.rate,
            seed=seed,
            **({"pattern": self.pattern} if self.pattern is not None else {}),
        )


@app.command("poison")
@option_groups
def poison_command(
    out: Out,
    backdoor: TriggerOptions = TriggerOptions(),
    training: ClassifierTraining = ClassifierTraining(),
    run: RunOptions = RunOptions(),
) -> None:
    """Train a backdoored classifier; summary.json holds clean_acc, asr and poisoned_acc."""
    summary = api.run_poison(
        out, spec=backdoor.spec(run.seed), **training.keywords(run.seed), **run.keywords()
    )
    if summary:
        print_summary(summary, out)


@app.command("inject")
@option_groups
def inject_command(
    model_path: Checkpoint,
    out: Out,
    num_targets: Annotated[
        int, typer.Option("--num-targets", help="S: test images sent to wrong labels.")
    ] = default_of(api.run_inject, "num_targets"),
    num_keep: Annotated[
        int, typer.Option("--num-keep", help="R: correctly classified training images kept.")
    ] = default_of(api.run_inject, "num_keep"),
    targets: Annotated[
        str | None,
        typer.Option("--targets", help="Explicit S as test-set indices, e.g. 3,17,42."),
    ] = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Injected labels for --targets, e.g. 1,0,5.")
    ] = None,
    label_mode: Annotated[
        str,
        typer.Option("--label-mode", help="Injected labels: next ((y+1) mod C) or random."),
    ] = default_of(api.run_inject, "label_mode"),
    param: Annotated[
        str | None,
        typer.Option("--param", help="Parameter tensor to change (default: last linear weight)."),
    ] = None,
    norm: Annotated[str, typer.Option("--norm", help="l2 or l0.")] = default_of(
        api.run_inject, "norm"
    ),
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="l2: max ‖δ‖₂; l0: max changed weights (default 10%)."),
    ] = None,
    penalty: Annotated[
        float | None, typer.Option("--penalty", help="Weight of the ‖δ‖² penalty.")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Maximum gradient steps.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Step size of the optimiser.")] = None,
    data: EvaluationData = EvaluationData(),
    foreign: ForeignModelOptions = ForeignModelOptions(),
    train_limit: TrainLimit = None,
    job: JobOptions = JobOptions(),
) -> None:
    """Fault-sneaking error injection into one tensor; summary.json holds injection_success."""
    summary = api.run_inject(
        model_path,
        out,
        num_targets=num_targets,
        num_keep=num_keep,
        targets=parse_int_list(targets, "--targets"),
        labels=parse_int_list(labels, "--labels"),
        label_mode=label_mode,
        param=param,
        norm=norm,
        budget=budget,
        penalty=penalty,
        steps=steps,
        lr=lr,
        **data.keywords(),
        **foreign.keywords(),
        train_limit=train_limit,
        **job.keywords(),
    )
    print_summary(summary, out)


@app.command("attack")
@option_groups
def attack_command(
    model_path: Checkpoint,
    out: Out,
    attack: Annotated[
        str, typer.Option("--attack", help="pgd, fgsm, apgd-ce, apgd-dlr or apgd-t.")
    ] = ATTACK.name,
    eps: Annotated[
        str | None,
        typer.Option(
            "--eps",
            help="Budget, e.g. 8/255 (default: usual for the data set and norm, e.g. 8/255 "
            "under linf on CIFAR, 0.1 on Fashion-MNIST).",
        ),
    ] = None,
    alpha: Annotated[
        str | None, typer.Option("--alpha", help="PGD step size (default eps/4).")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Iterations (default 10 for PGD, 100 for APGD)."),
    ] = None,
    norm: Annotated[str, typer.Option("--norm", help="linf or l2.")] = ATTACK.norm,
    restarts: Annotated[int, typer.Option("--restarts", help="Random restarts.")] = ATTACK.restarts,
    no_random_start: Annotated[
        bool, typer.Option("--no-random-start", help="PGD starts at the clean image.")
    ] = False,
    eot_samples: Annotated[
        int, typer.Option("--eot-samples", help="Gradients averaged per step (EOT).")
    ] = ATTACK.eot_samples,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = default_of(
        api.run_attack, "batch_size"
    ),
    data: EvaluationData = EvaluationData(),
    foreign: ForeignModelOptions = ForeignModelOptions(),
    job: JobOptions = JobOptions(),
) -> None:
    """Evasion attack on a checkpoint; summary.json holds robust_acc, robust_loss, clean_acc."""
    summary = api.run_attack(
        model_path,
        out,
        attack={
            "name": attack,
            "eps": parse_fraction(eps, "--eps"),
            "alpha": parse_fraction(alpha, "--alpha"),
            "steps": steps,
            "norm": norm,
            "restarts": restarts,
            "random_start": not no_random_start,
            "eot_samples": eot_samples,
            "seed": job.seed,
        },
        **data.keywords(),
        **foreign.keywords(),
        batch_size=batch_size,
        **job.keywords(),
    )
    print_summary(summary, out)
