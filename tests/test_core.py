"""The core invariant on every rule case and every family model, for every pruner in scope.

For each compile: the pruned model equals the masked model (checked here independently of the
verify pass), the reported parameter and MAC counts equal counts taken independently from the
pruned model (parameters by numel, MACs by forward hooks), frozen layers keep their channels, and
the input model is untouched.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn as nn

import fxprune
from tests.fixtures import FAMILY, RULE_CASES

PRUNERS = ["l1", "l2", "fpgm", "level"]
SPARSITIES = [0.1, 0.3, 0.5, 0.7, 0.9]
# 0.5 in the fast loop (`-m "not slow"`); the extremes, where quotas and "keep at least one" bite, in CI
RULE_SPARSITIES = [pytest.param(0.1, marks=pytest.mark.slow), 0.5, pytest.param(0.9, marks=pytest.mark.slow)]


def hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of conv and linear layers counted by forward hooks (independent of the rule table)."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            total += inp[0].numel() * m.weight.shape[1] * math.prod(m.kernel_size)
        else:
            total += out.numel() * m.weight.shape[1] * math.prod(m.kernel_size)

    def linear_hook(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that BN slicing errors show up in outputs."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def check_result(model: nn.Module, x: torch.Tensor, result: fxprune.CompileResult) -> None:
    report = result.report
    with torch.no_grad():
        ref, got = result.masked_model.eval()(x), result.model.eval()(x)
    for a, b in zip(torch.utils._pytree.tree_leaves(ref), torch.utils._pytree.tree_leaves(got)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * max(1.0, a.abs().max().item()))
    assert report.params_before == sum(p.numel() for p in model.parameters())
    assert report.params_after == sum(p.numel() for p in result.model.parameters())
    assert report.macs_before == hook_macs(model, x)
    assert report.macs_after == hook_macs(result.model, x)
    for layer in report.layers:  # frozen layers keep their channels
        group = next((g for g in report.groups if layer.name in g.layers), None)
        if group is not None and group.frozen == group.channels:
            assert layer.channels_after == layer.channels_before, layer.name
    assert not any(name.startswith("fxprune_mask_") for name, _ in result.model.named_buffers())


def compile_and_check(factory, shape, pruner, sparsity):
    torch.manual_seed(0)
    model = randomize_bn(factory()).eval()
    x = torch.randn(*shape)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        before = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fxprune.compile(model, {"pruner": pruner, "sparsity": sparsity}, x)
    check_result(model, x, result)
    for k, v in model.state_dict().items():  # the input model is never modified
        assert torch.equal(v, state[k]), k
    with torch.no_grad():
        for a, b in zip(torch.utils._pytree.tree_leaves(before), torch.utils._pytree.tree_leaves(model(x))):
            assert torch.equal(a, b)
    return result


@pytest.mark.parametrize("sparsity", RULE_SPARSITIES)
@pytest.mark.parametrize("pruner", PRUNERS)
@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_rule_case(case, pruner, sparsity):
    factory, shape = RULE_CASES[case]
    result = compile_and_check(factory, shape, pruner, sparsity)
    if pruner != "level" and sparsity >= 0.5:
        assert result.report.params_after < result.report.params_before, "nothing was pruned"


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("pruner", PRUNERS)
@pytest.mark.parametrize("family", sorted(FAMILY))
def test_family(family, pruner, sparsity):
    factory, shape = FAMILY[family]
    result = compile_and_check(factory, shape, pruner, sparsity)
    report = result.report
    if pruner == "level":  # shapes stay, unless whole channels were left all-zero (removed, and the report says so)
        promoted = any("all-zero weights" in n for n in report.notes)
        assert report.params_after == report.params_before or promoted
        removed = report.params_before - report.nonzero_params_after
        conv_linear = sum(m.weight.numel() for m in factory().modules() if isinstance(m, (nn.Conv2d, nn.Linear,
                                                                                          nn.ConvTranspose2d)))
        assert removed >= 0.9 * sparsity * conv_linear
    else:
        assert report.params_after < report.params_before
        assert report.macs_after < report.macs_before


def test_vgg16_pruned_a_matches_the_paper():
    """'Pruning Filters for Efficient ConvNets': conv1 and conv8-13 at 50% -> 5.4M params (from 15M)."""
    from tests.fixtures import vgg16_cifar, vgg16_conv_names

    model = vgg16_cifar().eval()
    names = vgg16_conv_names(model)
    config = {"pruner": "l1", "rules": [{"sparsity": 0.5, "op_names": [names[0]] + names[7:]}]}
    result = fxprune.compile(model, config, torch.randn(1, 3, 32, 32))
    assert result.report.params_before == pytest.approx(15.0e6, rel=0.01)
    assert result.report.params_after == pytest.approx(5.4e6, rel=0.01)
    assert result.report.param_reduction == pytest.approx(0.64, abs=0.005)
    pruned = {s.name: s.channels_after for s in result.report.layers}
    assert [pruned[n] for n in names] == [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]
