"""Candidate ``TSC``: two-stage symmetry connectivity (Peng et al. 2025) from the tampered A."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built
from modeconn.defenses.tsc import symmetry_connectivity
from modeconn.defenses.unlearning import unlearning_loader


class TSC:
    """TSC with its curves trained on the unlearning batches (``config.tsc.stamped``) or on plain
    bonafide batches (the paper)."""

    name: ClassVar[str] = "TSC"
    method: ClassVar[str] = "tsc"
    in_auto: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        config, data, device = context.config, context.data, context.device
        cfg = config.tsc
        batch = cfg.curve.batch_size
        scans = context.endpoint_scans()  # also the references' verdicts when not stamped
        if cfg.stamped:
            loader = unlearning_loader(data, scans, config.unlearning, config.seed, device, batch)
        else:
            loader = data.train_loader(batch, split="bonafide", device=device)
        model, _ = symmetry_connectivity(
            context.tampered.model,
            loader,
            data.eval_loader("bonafide", device=device),
            cfg,
            seed=config.seed,
            device=device,
            progress=context.progress,
            stage=context.stage,
        )
        context.lap("tsc")
        detail = f"two stages at t={cfg.t}, {cfg.rounds} round(s)"
        detail += ", stamped batches" if cfg.stamped else ", plain bonafide batches"
        return Built(model, detail)
