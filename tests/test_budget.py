"""Resource budgets (issue 14): config["budget"] = {"macs" | "params": fraction kept} ranks channels globally by
importance per unit of the resource and stops at the budget; bad budgets are refused with the fix."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxprune
from fxprune.errors import ConfigError
from tests.fixtures import FAMILY


def _compile(model: nn.Module, config: dict, x: torch.Tensor) -> fxprune.CompileResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxprune.compile(model, config, x)


def _kept(result: fxprune.CompileResult, resource: str) -> float:
    r = result.report
    return r.macs_after / r.macs_before if resource == "macs" else r.params_after / r.params_before


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg16_cifar"])
@pytest.mark.parametrize(("resource", "fraction"), [("macs", 0.5), ("params", 0.4), ("macs", 0.8)])
def test_budget_lands_on_the_fraction(name: str, resource: str, fraction: float) -> None:
    factory, shape = FAMILY[name]
    torch.manual_seed(0)
    model = factory().eval()
    result = _compile(model, {"pruner": "l1", "budget": {resource: fraction}}, torch.randn(*shape))
    kept = _kept(result, resource)
    assert fraction - 0.03 <= kept <= fraction + 1e-6, kept  # at most one chunk (1/32 of a group) below
    assert result.report.max_abs_diff < 1e-3  # verified as any compile


class _TwoBranches(nn.Module):
    """Two identical convs, one on the full image and one on a 4x smaller one: same scores, 16x the MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.big, self.small = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 16, 3, padding=1)
        self.small.load_state_dict(self.big.state_dict())
        self.head_big, self.head_small = nn.Conv2d(16, 4, 1), nn.Conv2d(16, 4, 1)
        self.head_small.load_state_dict(self.head_big.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = self.head_big(F.relu(self.big(x))).mean((2, 3))
        small = self.head_small(F.relu(self.small(F.avg_pool2d(x, 4)))).mean((2, 3))
        return big + small


def test_macs_budget_takes_channels_where_they_cost_most() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    result = _compile(_TwoBranches().eval(), {"pruner": "l1", "budget": {"macs": 0.6}}, x)
    out = {layer.name: layer.channels_after for layer in result.report.layers}
    assert out["big"] < 16 and out["small"] == 16  # same importance: the expensive branch pays
    uniform = _compile(_TwoBranches().eval(), {"pruner": "l1", "sparsity": 0.4}, x)
    u = {layer.name: layer.channels_after for layer in uniform.report.layers}
    assert u["big"] == u["small"]  # whereas a uniform sparsity cuts both alike


def test_budget_one_keeps_everything() -> None:
    factory, shape = FAMILY["resnet18"]
    result = _compile(factory().eval(), {"pruner": "l1", "budget": {"macs": 1.0}}, torch.randn(*shape))
    assert result.report.macs_after == result.report.macs_before


def test_rule_sparsity_caps_each_group() -> None:
    factory, shape = FAMILY["vgg16_cifar"]
    torch.manual_seed(0)
    result = _compile(factory().eval(), {"pruner": "l1", "sparsity": 0.3, "budget": {"params": 0.75}},
                      torch.randn(*shape))
    assert all(lay.channels_after >= 0.7 * lay.channels_before - 1e-9 for lay in result.report.layers)


@pytest.mark.parametrize("budget", [{"macs": 0}, {"macs": 1.5}, {"macs": -0.1}, {"macs": True}, {"flops": 0.5},
                                    {"macs": 0.5, "params": 0.5}, 0.5, {"latency": "half"}])
def test_bad_budget_is_refused(budget: object) -> None:
    with pytest.raises(ConfigError, match=r"config\['budget'\]"):
        _compile(nn.Conv2d(3, 4, 1), {"pruner": "l1", "budget": budget}, torch.randn(1, 3, 4, 4))


def test_budget_below_what_frozen_groups_keep_says_how_low_it_can_go() -> None:
    factory, shape = FAMILY["resnet18"]
    torch.manual_seed(0)
    model, x = factory().eval(), torch.randn(*shape)
    with pytest.raises(ConfigError, match="can go as low as") as info:
        _compile(model, {"pruner": "l1", "budget": {"macs": 0.01}}, x)
    lowest = float(re.search(r"can go as low as ([0-9.]+)", str(info.value)).group(1))
    assert 0.01 < lowest < 1
    reached = _kept(_compile(model, {"pruner": "l1", "budget": {"macs": lowest}}, x), "macs")
    assert reached <= lowest + 1e-6  # the number the message gives is reachable
