"""Path-aware unlearning (PAM): the objective's shifted gradient and the ``pam`` candidate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from modeconn.data.prepare import DataConfig
from modeconn.defenses.pam import PathAwareObjective
from modeconn.training import Objective


class Probe(Objective):
    """Records the weights the loss was evaluated at."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def loss(self, model, x, y):
        self.seen.append(model.weight.detach().clone())
        return super().loss(model, x, y)


def test_the_gradient_is_taken_rho_towards_the_tampered_model_and_the_step_lands_at_theta():
    torch.manual_seed(0)
    tampered, model = nn.Linear(3, 2, bias=False), nn.Linear(3, 2, bias=False)
    inner = Probe()
    objective = PathAwareObjective(tampered, rho=0.5, inner=inner)
    start = model.weight.detach().clone()
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    loss, _ = objective.loss(model, x, y)
    away = tampered.weight.detach() - start
    expected = start + 0.5 * away / away.norm()
    assert torch.allclose(inner.seen[0], expected, atol=1e-6)
    loss.backward()
    grad = model.weight.grad.clone()
    with torch.no_grad():
        model.weight.sub_(0.1 * grad)  # the optimiser's step, taken at the shifted point
    objective.after_step(model)
    assert torch.allclose(model.weight, start - 0.1 * grad, atol=1e-6)
    # the gradient is the shifted point's, not θ's
    plain = nn.Linear(3, 2, bias=False)
    plain.weight.data.copy_(start)
    nn.functional.cross_entropy(plain(x), y).backward()
    assert not torch.allclose(plain.weight.grad, grad)
    with pytest.raises(ValueError):
        PathAwareObjective(tampered, rho=-1.0)


@pytest.mark.slow
def test_repair_method_pam_unlearns_with_path_aware_steps(tmp_path: Path, digits_backdoor):
    from modeconn.commands.repair import run_repair
    from modeconn.defenses.repair import RepairConfig, with_budget

    cfg = with_budget(RepairConfig(method="pam", points=5, eot=False), batch_size=32, scan_steps=40)
    data = DataConfig(dataset=None, bonafide=300)
    summary = run_repair([digits_backdoor], tmp_path / "r", config=cfg, data=data, progress=False)
    assert summary["method"] == "PAM unlearning"
    assert summary["pam_unlearning_asr"] == summary["asr"] < 0.5 * summary["tampered_asr"]
    assert "nc_unlearning_clean_acc" not in summary
    assert {p.name for p in (tmp_path / "r" / "stages").iterdir()} == {"unlearn_pam"}
    assert summary["pam_unlearning_backdoor_t"] is None or summary["pam_unlearning_backdoor_t"] > 0
