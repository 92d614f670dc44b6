"""The weight average of models that share a start (``connectivity.averaging``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modeconn.connectivity.averaging import average_models


def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_the_average_is_the_mean_of_the_weights_and_leaves_the_models_alone():
    a, b, c = _bn_net(0), _bn_net(1), _bn_net(2)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    average = average_models([a, b, c])
    for key, value in average.state_dict().items():
        if value.is_floating_point():
            mean = (a.state_dict()[key] + b.state_dict()[key] + c.state_dict()[key]) / 3
            assert torch.allclose(value, mean)
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())
    assert not average.training


def test_batchnorm_statistics_are_recomputed_on_the_loader():
    a, b = _bn_net(0), _bn_net(1)
    x = 3.0 + 2.0 * torch.randn(256, 3)
    average = average_models([a, b], [(x, None)])  # one batch: its statistics exactly
    hidden = average[0](x)
    bn = average[1]
    assert torch.allclose(bn.running_mean, hidden.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, hidden.var(0), rtol=1e-3)


def test_models_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="different parameters"):
        average_models([nn.Linear(2, 1), nn.Sequential(nn.Linear(2, 1))])
    with pytest.raises(ValueError, match="at least one"):
        average_models([])
