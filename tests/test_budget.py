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
from fxprune.budget import CostModel, Term, budget_masks
from fxprune.config import parse_config
from fxprune.errors import ConfigError
from fxprune.session import prepare
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


def test_budget_worth_macs_keeps_the_channels_that_carry_the_most_macs() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    config = {"pruner": "l1", "budget": {"params": 0.6}}
    by_macs = _compile(_TwoBranches().eval(), {**config, "budget_worth": "macs"}, x)
    out = {layer.name: layer.channels_after for layer in by_macs.report.layers}
    assert out["big"] == 16 and out["small"] < 16  # same scores, same parameters: the cheap branch pays
    by_score = _compile(_TwoBranches().eval(), config, x)
    assert _kept(by_macs, "params") <= 0.6 + 1e-6 and _kept(by_score, "params") <= 0.6 + 1e-6
    assert by_macs.report.macs_after > by_score.report.macs_after  # the same budget, more MACs kept
    assert by_macs.report.max_abs_diff < 1e-3


@pytest.mark.parametrize(("config", "match"), [
    ({"budget": {"macs": 0.5}, "budget_worth": "flops"}, r"config\['budget_worth'\] = 'flops' must be one of"),
    ({"sparsity": 0.5, "budget_worth": "macs"}, r"config\['budget_worth'\].*no 'budget': add one"),
    ({"budget": {"macs": 0.5}, "budget_worth": "macs"}, r"with a 'macs' budget .* rank by score alone"),
])
def test_bad_budget_worth_is_refused(config: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _compile(nn.Conv2d(3, 4, 1), {"pruner": "l1", **config}, torch.randn(1, 3, 4, 4))


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


def test_a_resource_that_falls_in_steps_is_cut_past_its_flat_stretches() -> None:
    """A runtime whose time falls only every 8 channels (a kernel's block): removing one channel saves nothing, eight
    save a block. The budget looks past the flat stretch instead of stopping there, and reaches the lowest value
    its refusal names."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = prepare(_TwoBranches().eval(), {"pruner": "l1", "sparsity": 0.5}, x)
    keys = [k for k in session.graph.shapes if k.startswith("@") and k.endswith(".weight")]
    # time per conv weight: its output channels rounded up to the block of 8 (16 -> 8 is the only step)
    model = CostModel(session.graph, [Term([k], lambda s, k=k: float(-(-s[k][0] // 8) * 8)) for k in keys])
    dense = model.total()

    def masks(fraction: float) -> fxprune.Masks:
        cfg = parse_config({"pruner": "l1", "sparsity": 0.9, "budget": {"latency": fraction}})
        return budget_masks(session.graph, cfg, session.layers, session.scorer("l1"), model)

    with pytest.raises(ConfigError, match="can go as low as") as info:
        masks(0.01)
    lowest = float(re.search(r"can go as low as ([0-9.]+)", str(info.value)).group(1))
    assert lowest < 0.9  # the step is reachable
    assert model.total(masks(lowest).keep) <= lowest * dense + 1e-9
