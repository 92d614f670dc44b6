"""``modeconn repair``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from modeconn.cli import app
from modeconn.cli.common import (
    BatchSize,
    DataDir,
    ForeignModelOptions,
    OptDataset,
    Out,
    RunOptions,
    TestLimit,
    TrainLimit,
    data_config,
    option_groups,
    parse_int_list,
    print_summary,
)
from modeconn.commands.suspects import DEFAULT_BONAFIDE
from modeconn.defenses.repair import RepairConfig, with_budget
from modeconn.defenses.retuning import RetuningConfig
from modeconn.errors import ModeconnError

_DEFAULTS = RepairConfig()


def parse_sweep(text: str | None) -> tuple[int, ...]:
    """``--sweep 50,250,500`` → (50, 250, 500)."""
    sizes = tuple(parse_int_list(text, "--sweep") or ())
    if any(n < 10 for n in sizes):
        raise ModeconnError("--sweep sizes must be at least 10 samples")
    return sizes


def parse_retuning(text: str | None) -> RetuningConfig:
    """``--retuning-poisoned 5,10,20,50`` → the retuning attack with 5 poisoned images (the
    reported ``retuning_asr``) and 10, 20 and 50 as further strengths (``retuning_asr@N``)."""
    counts = parse_int_list(text, "--retuning-poisoned")
    if not counts:
        return _DEFAULTS.retuning
    if any(n < 1 for n in counts):
        raise ModeconnError("--retuning-poisoned counts must be at least 1")
    return dataclasses.replace(_DEFAULTS.retuning, poisoned=counts[0], sweep=tuple(counts[1:]))


@dataclasses.dataclass(frozen=True)
class RepairOptions:
    """The repair's own options: method, budget, path and choice settings, baselines, sweep."""

    bonafide: Annotated[
        int,
        typer.Option(
            "--bonafide",
            help="Clean training samples the repair may use (20% are held out to choose t).",
        ),
    ] = DEFAULT_BONAFIDE
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="auto (scan, unlearn, connect; choose the best candidate the scan passes), "
            "unlearn-path, unlearn, pam (unlearning with path-aware steps, Min et al. 2024), "
            "distill (unlearning by distillation from the tampered model on clean images), "
            "path (the scan-free curve of Zhao et al.) or tsc (two-stage symmetry connectivity "
            "on stamped batches).",
        ),
    ] = _DEFAULTS.method
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            help=f"Curve epochs (default {_DEFAULTS.curve.epochs}; "
            f"{_DEFAULTS.path_curve.epochs} with --method path; "
            f"{_DEFAULTS.tsc.curve.epochs} per TSC stage).",
        ),
    ] = None
    unlearn_epochs: Annotated[
        int, typer.Option("--unlearn-epochs", help="Epochs of NC-unlearning per endpoint.")
    ] = _DEFAULTS.unlearning.epochs
    unlearn_rate: Annotated[
        float,
        typer.Option("--unlearn-rate", help="Fraction of each batch stamped with a trigger."),
    ] = _DEFAULTS.unlearning.rate
    unlearn_class: Annotated[
        str | None,
        typer.Option(
            "--unlearn-class",
            help="Comma-separated classes whose synthesized triggers are unlearnt whatever the "
            "scan decides (e.g. a class the repair's warning names as near the threshold).",
        ),
    ] = None
    scan_steps: Annotated[
        int, typer.Option("--scan-steps", help="Optimisation steps per synthesized trigger.")
    ] = _DEFAULTS.scan.steps
    finetune_epochs: Annotated[
        int,
        typer.Option(
            "--finetune-epochs",
            help="Epochs of fine-tuning that make endpoint B from one model (--method path).",
        ),
    ] = _DEFAULTS.finetune.epochs
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help=f"Curve learning rate (default {_DEFAULTS.curve.lr}; "
            f"{_DEFAULTS.path_curve.lr} with --method path; {_DEFAULTS.tsc.curve.lr} TSC).",
        ),
    ] = None
    batch_size: BatchSize = _DEFAULTS.curve.batch_size
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help=f"bezier or polychain (default {_DEFAULTS.kind}; path: {_DEFAULTS.path_kind}).",
        ),
    ] = None
    init: Annotated[
        str,
        typer.Option(
            "--init",
            help="--method path only: random (fresh interior points) or linear (the reference: "
            "on the straight line).",
        ),
    ] = _DEFAULTS.init
    num_bends: Annotated[
        int, typer.Option("--num-bends", help="Control points incl. endpoints.")
    ] = _DEFAULTS.num_bends
    points: Annotated[int, typer.Option("--points", help="Points evaluated along the path.")] = (
        _DEFAULTS.points
    )
    margin: Annotated[
        float,
        typer.Option("--margin", help="t is chosen among points at least this far from both ends."),
    ] = _DEFAULTS.margin
    t: Annotated[float | None, typer.Option("--t", help="Use this t instead of the rule.")] = None
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines",
            help=(
                "Also run fine-tuning, from scratch, noisy models, fine-pruning, FST, ANP, FT-SAM "
                "and SAU."
            ),
        ),
    ] = False
    sweep: Annotated[
        str | None,
        typer.Option("--sweep", help="Comma-separated bonafide sizes to repeat the repair with."),
    ] = None
    retuning_poisoned: Annotated[
        str | None,
        typer.Option(
            "--retuning-poisoned",
            help=f"Poisoned images of the retuning attack's {_DEFAULTS.retuning.size} "
            f"(default {_DEFAULTS.retuning.poisoned}); comma-separated, the first is reported as "
            "retuning_asr and each other N as retuning_asr@N.",
        ),
    ] = None
    no_eot: Annotated[bool, typer.Option("--no-eot", help="Skip the adaptive EOT attack.")] = False
    no_align: Annotated[
        bool,
        typer.Option(
            "--no-align", help="Connect endpoint B as trained (default: permuted onto A first)."
        ),
    ] = False

    def config(self, seed: int) -> RepairConfig:
        """The API's repair config: the options set once, the budget applied by the library."""
        base = RepairConfig(
            method=self.method,
            num_bends=self.num_bends,
            init=self.init,
            points=self.points,
            margin=self.margin,
            t=self.t,
            baselines=self.baselines,
            sweep=parse_sweep(self.sweep),
            eot=not self.no_eot,
            align_endpoints=not self.no_align,
            seed=seed,
            kind=self.kind or _DEFAULTS.kind,
            path_kind=self.kind or _DEFAULTS.path_kind,
            unlearning=dataclasses.replace(
                _DEFAULTS.unlearning,
                rate=self.unlearn_rate,
                classes=tuple(parse_int_list(self.unlearn_class, "--unlearn-class") or ()),
            ),
            retuning=parse_retuning(self.retuning_poisoned),
        )
        return with_budget(
            base,
            batch_size=self.batch_size,
            epochs=self.epochs,
            lr=self.lr,
            unlearn_epochs=self.unlearn_epochs,
            finetune_epochs=self.finetune_epochs,
            scan_steps=self.scan_steps,
        )


def read_attack_spec(path: Path | None) -> dict | None:
    """The ``--attack`` JSON file's spec (None: the model's sidecar decides)."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModeconnError(f"cannot read --attack {path}: {err}") from None


def print_verdict(summary: dict) -> None:
    """The summary's warning, in yellow on stderr before the tables: a repair that could not be
    verified without the trigger must not read as a success (stdout keeps the summary)."""
    if "warning" in summary:
        typer.secho(f"warning: {summary['warning']}", fg=typer.colors.YELLOW, err=True)


@app.command("repair")
@option_groups
def repair_command(
    models: Annotated[list[Path], typer.Argument(help="One or two tampered checkpoints.")],
    out: Out,
    options: RepairOptions = RepairOptions(),
    attack: Annotated[
        Path | None,
        typer.Option(
            "--attack",
            help="JSON file with the attack spec, e.g. a backdoor's trigger (default: the "
            "model's sidecar). Without any, ASR is not measured.",
        ),
    ] = None,
    poisoned_test: Annotated[
        Path | None,
        typer.Option(
            "--poisoned-test",
            help="Folder of test images that carry the trigger (DIR/*.png, or DIR/<true "
            "class>/*.png): ASR is measured on them. Needs --target.",
        ),
    ] = None,
    target: Annotated[
        int | None,
        typer.Option("--target", help="The class the trigger sends images to (--poisoned-test)."),
    ] = None,
    clean_reference: Annotated[
        Path | None,
        typer.Option(
            "--clean-reference",
            help="A checkpoint of the same architecture trained on clean data: its row is "
            "evaluated and attacked like the others (the retuning attack's reference).",
        ),
    ] = None,
    dataset: OptDataset = None,
    data_dir: DataDir = None,
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
    foreign: ForeignModelOptions = ForeignModelOptions(),
    run: RunOptions = RunOptions(),
) -> None:
    """Repair tampered model(s) with a curve trained on bonafide data; writes the repaired model."""
    from modeconn.commands.repair import run_repair

    config = options.config(run.seed)
    data = data_config(
        dataset,
        data_dir,
        run.seed,
        train_limit=train_limit,
        test_limit=test_limit,
        bonafide=options.bonafide,
    )
    summary = run_repair(
        [str(m) for m in models],
        out,
        config=config,
        data=data,
        attack=read_attack_spec(attack),
        poisoned_test=poisoned_test,
        target=target,
        clean_reference=clean_reference,
        **foreign.keywords(),
        **run.keywords(),
    )
    print_verdict(summary)
    print_summary(summary, out)
    if (out / "comparison.md").exists():
        typer.echo((out / "comparison.md").read_text())
