"""Baseline ``noisy model``: random perturbations of the tampered weights, averaged over draws.

Each σ of ``config.noise_sigmas`` is measured (mean over ``noise_draws`` draws, BatchNorm
statistics recomputed on the bonafide data); the row is the largest σ whose held-out bonafide
accuracy stays within ``tolerance`` of the tampered model's — the same rule as for t: go as far
from the tampered weights as held-out accuracy allows.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from modeconn.connectivity import update_bn
from modeconn.defenses.baselines import noisy_models
from modeconn.defenses.repair.choice import HOLDOUT, HOLDOUT_METRIC
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.evaluation import mean_candidate
from modeconn.defenses.repair.results import Built


class NoisyModel:
    name: ClassVar[str] = "noisy model"
    may_not_apply: ClassVar[bool] = False

    def sigma_rows(self, context: RepairContext) -> list[dict[str, float]]:
        """One row per σ: the mean figures of its draws."""
        config, data = context.config, context.data
        bn_loader = data.eval_loader("bonafide", device=context.device)

        def with_bn(m: nn.Module) -> nn.Module:
            update_bn(m, bn_loader, context.device)
            return m.eval()

        rows = []
        for sigma in config.noise_sigmas:
            draws = noisy_models(
                context.tampered.model, sigma, config.noise_draws, config.seed, with_bn
            )
            mean = mean_candidate(self.name, [context.evaluate(self.name, m) for m in draws], "")
            rows.append({"sigma": sigma, **mean.metrics})
        return rows

    def build(self, context: RepairContext) -> Built:
        rows = self.sigma_rows(context)
        ref = HOLDOUT_METRIC(context.tampered.model, context.data, context.device)[HOLDOUT]
        ok = [r for r in rows if r[HOLDOUT] >= ref - context.config.tolerance]
        pick = max(ok, key=lambda r: r["sigma"]) if ok else rows[0]
        detail = (
            f"σ={pick['sigma']} (largest within tolerance), "
            f"mean of {context.config.noise_draws} draws"
        )
        figures = {k: v for k, v in pick.items() if k != "sigma"}
        return Built(None, detail, figures=figures, table=rows)
