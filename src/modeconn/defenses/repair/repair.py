"""The repair loop: build the method's candidates, verify them, choose, then the references and
(optionally) the baselines — each a loop over a registry."""

from __future__ import annotations

from modeconn.defenses.repair.baselines import BASELINES
from modeconn.defenses.repair.candidates import METHODS, candidates_for
from modeconn.defenses.repair.choice import choose_candidate
from modeconn.defenses.repair.config import RepairConfig
from modeconn.defenses.repair.context import Builder, RepairContext
from modeconn.defenses.repair.depth import backdoor_connected_path, backdoor_t
from modeconn.defenses.repair.evaluation import eot_attack_success, scan_figures
from modeconn.defenses.repair.results import (
    CLEAN_REFERENCE,
    ENDPOINT_B,
    TAMPERED,
    Built,
    Candidate,
    RepairResult,
)
from modeconn.defenses.unlearning import near_classes_beside_flipper, precaution_classes
from modeconn.errors import InvalidArgument, ModeconnError


def check_registered(config: RepairConfig) -> None:
    """``config``'s settings are valid (:meth:`RepairConfig.validate`), ``config.method`` names
    a registered method and ``config.baseline_names`` registered baselines; one clear error
    otherwise.

    >>> check_registered(RepairConfig(baseline_names=("SAM",)))
    Traceback (most recent call last):
    ...
    modeconn.errors.InvalidArgument: unknown baseline 'SAM' (use fine-tuning, from scratch, \
noisy model, fine-pruning, FST, ANP, FT-SAM, SAU)
    """
    config.validate()
    if config.method not in METHODS:
        raise InvalidArgument(
            None, f"unknown repair method '{config.method}' (use {', '.join(METHODS)})"
        )
    unknown = set(config.baseline_names or ()) - set(BASELINES)
    if unknown:
        raise InvalidArgument(
            None, f"unknown baseline '{sorted(unknown)[0]}' (use {', '.join(BASELINES)})"
        )


class Repair(RepairContext):
    """One repair: :meth:`run` builds, verifies and chooses, and returns the result."""

    def measure(self, name: str, built: Built) -> Candidate:
        """The row of a built model: its figures, and the adaptive EOT attack for a path."""
        if built.figures is not None or built.model is None:
            return Candidate(name, dict(built.figures or {}), built.detail)
        candidate = self.evaluate(name, built.model, built.detail)
        trigger = self.attack.trigger
        if built.path is not None and self.config.eot and trigger is not None:
            candidate.metrics["eot_asr"] = eot_attack_success(
                built.path.curve,
                built.path.t,
                self.data,
                trigger,
                self.config.eot_settings(),
                self.device,
            )
        return candidate

    def add_retuning(self, candidate: Candidate, built: Built) -> None:
        """The retuning attack's ASR on a row's model (backdoors only; report only)."""
        if built.model is not None:
            candidate.metrics.update(self.retuning(built.model))

    def add_depth(self, row: Candidate, built: Built) -> None:
        """The backdoor-connected path from a row's model back to the tampered model, kept under
        the row's name, and its ``backdoor_t`` (absent when the ASR never exceeds one half);
        backdoors only, report only."""
        trigger = self.attack.trigger
        if trigger is None or built.model is None:
            return
        rows = backdoor_connected_path(
            built.model,
            self.tampered.model,
            self.data,
            trigger,
            test_limit=self.config.depth_limit,
            device=self.device,
        )
        self.depth[row.name] = rows
        found = backdoor_t(rows)
        if found is not None:
            row.metrics["backdoor_t"] = found
        self.lap("depth")

    def verify(self, candidate: Candidate, built: Built) -> None:
        """Scan a candidate (the choice's input) and add its retuning-attack ASR and its
        backdoor-connected path (report only)."""
        candidate.metrics.update(scan_figures(self.scan_candidate(candidate.name, built.model)))
        self.lap("verification_scans")
        self.add_retuning(candidate, built)
        self.lap("retuning")
        self.add_depth(candidate, built)

    def references(self) -> list[Candidate]:
        """The tampered model(s): evaluation, retuning attack and scan figures; and the user's
        clean model when given: evaluation, retuning attack and its backdoor-connected path."""
        self.endpoint_scans()  # done already when a candidate was verified
        models = [(TAMPERED, self.tampered.model, "")]
        if self.second is not None:
            models.append((ENDPOINT_B, self.second.model, "second model"))
        if self.clean is not None:
            models.append((CLEAN_REFERENCE, self.clean.model, "trained on clean data"))
        rows = []
        for name, model, detail in models:
            row = self.evaluate(name, model, detail)
            self.add_retuning(row, Built(model))
            if name in self.scans:
                row.metrics.update(scan_figures(self.scans[name]))
            rows.append(row)
        self.lap("references")
        if self.clean is not None:
            self.add_depth(rows[-1], Built(self.clean.model))
        return rows

    def baseline(self, builder: Builder) -> tuple[Candidate, Built | None]:
        """Build and measure one baseline; a model it cannot handle gets a "not applicable" row."""
        try:
            built = builder.build(self)
        except ModeconnError as err:
            if not getattr(builder, "may_not_apply", False):
                raise
            return Candidate(builder.name, {}, f"not applicable: {err}"), None
        return self.measure(builder.name, built), built

    def baselines(self) -> tuple[list[Candidate], list[dict[str, float]]]:
        """The registered baselines (``config.baseline_names``, default all) on the same bonafide
        data, with their retuning ASR."""
        names = self.config.baseline_names
        chosen = [b for name, b in BASELINES.items() if names is None or name in names]
        if not chosen:
            return [], []
        rows, built = zip(*(self.baseline(b) for b in chosen), strict=True)
        for row, made in zip(rows, built, strict=True):
            if made is not None:
                self.add_retuning(row, made)
        self.lap("baselines")
        for row, made in zip(rows, built, strict=True):
            if made is not None:
                self.add_depth(row, made)
        sweeps = [row for made in built if made is not None for row in made.table]
        return list(rows), sweeps

    def run(self) -> RepairResult:
        check_registered(self.config)
        built: list[tuple[Candidate, Built]] = []
        images = len(self.data.indices("bonafide"))
        builders = candidates_for(self.config.method, self.config, images)
        for builder in builders:
            made = builder.build(self)
            built.append((self.measure(builder.name, made), made))
            self.lap("evaluation_and_eot")
        for candidate, made in built:
            self.verify(candidate, made)
        holdout = len(self.data.indices("bonafide_holdout"))
        preferred = {b.name for b in builders if getattr(b, "preferred_on_ties", False)}
        chosen, why = choose_candidate([c for c, _ in built], self.scans, holdout, preferred)
        path_of = next(((c.name, b.path) for c, b in built if b.path is not None), (None, None))
        references = self.references()
        baselines, noisy_rows = self.baselines() if self.config.baselines else ([], [])
        return RepairResult(
            chosen=chosen,
            chosen_model=next(b.model for c, b in built if c is chosen),
            choice_rule=why,
            candidates=[c for c, _ in built],
            references=references,
            baselines=baselines,
            scans=dict(self.scans),
            path=path_of[1],
            path_candidate=path_of[0],
            noisy_rows=noisy_rows,
            timings=dict(self.timings),
            depth=dict(self.depth),
            precautions=precaution_classes(self.endpoint_scans(), self.config.unlearning),
            near_beside_flipper=near_classes_beside_flipper(
                self.endpoint_scans(), self.config.unlearning
            ),
            requested=list(self.config.unlearning.classes),
        )
