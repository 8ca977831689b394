"""Config semantics (NNI's config_list), the NNI pruner API, custom rules, and bad input."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.pruners import FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner
from tests.fixtures import BAD_MODELS, FAMILY, RULE_CASES, my_custom_gate


def resnet():
    factory, shape = FAMILY["resnet18"]
    return factory().eval(), torch.randn(*shape)


def channels(result):
    return {s.name: (s.channels_before, s.channels_after) for s in result.report.layers}


# -- config semantics ----------------------------------------------------------------------------


def test_op_names_exclude_and_op_types():
    model, x = resnet()
    config = {"pruner": "l1", "rules": [
        {"sparsity": 0.5, "op_types": ["Conv2d"]},
        {"exclude": True, "op_names": ["layer1.0.conv1"]},
    ]}
    result = fxprune.compile(model, config, x)
    ch = channels(result)
    assert ch["layer1.0.conv1"] == (16, 16)  # excluded
    assert ch["layer1.1.conv1"] == (16, 8)  # selected, pruned alone (its output feeds conv2 only)
    assert ch["fc"][0] == ch["fc"][1]  # Linear not selected; its output is the model output anyway


def test_op_partial_names_and_later_rules_override():
    model, x = resnet()
    config = [
        {"sparsity": 0.25, "op_types": ["default"]},
        {"sparsity": 0.75, "op_partial_names": ["layer2"], "op_types": ["Conv2d"]},
    ]
    ch = channels(fxprune.compile(model, config, x))
    assert ch["layer1.0.conv1"] == (16, 12)
    assert ch["layer2.0.conv1"] == (32, 8)


def test_round_to_keeps_multiples():
    model, x = resnet()
    result = fxprune.compile(model, {"pruner": "l2", "sparsity": 0.3, "round_to": 8}, x)
    for name, (before, after) in channels(result).items():
        if after != before:
            assert after % 8 == 0, name


def test_total_sparsity_ranks_globally_with_cap():
    model, x = resnet()
    config = [{"total_sparsity": 0.5, "max_sparsity_per_layer": 0.8, "op_types": ["Conv2d"]}]
    keep = fxprune.compile(model, config, x).masks.keep
    total, removed = sum(len(k) for k in keep.values()), sum(int((~k).sum()) for k in keep.values())
    ratios = {round(1 - k.mean(), 3) for k in keep.values()}
    assert len(ratios) > 1, "global ranking should give uneven sparsities"
    assert max(ratios) <= 0.8 + 1e-9
    assert 0.45 * total <= removed <= 0.5 * total


def test_level_is_unstructured_and_keeps_shapes():
    model, x = resnet()
    result = fxprune.compile(model, {"pruner": "level", "sparsity": 0.8}, x)
    assert result.report.params_after == result.report.params_before
    conv = result.model.get_submodule("layer1.0.conv1").weight
    assert (conv == 0).float().mean().item() == pytest.approx(0.8, abs=0.01)


def test_normal_mode_scores_the_layer_alone():
    model, x = resnet()
    a = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, x).masks
    b = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5, "mode": "normal"}, x).masks
    assert a.keep.keys() == b.keep.keys()
    assert any(not np.array_equal(a.keep[g], b.keep[g]) for g in a.keep)


# -- NNI API -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [L1NormPruner, L2NormPruner, FPGMPruner, LevelPruner])
def test_nni_api_compress_then_speedup(cls):
    model, x = resnet()
    pruner = cls(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], dummy_input=x)
    returned, masks = pruner.compress()
    assert returned is model  # NNI: the model you passed, masked in place
    assert "layer1.0.conv1" in masks and masks["layer1.0.conv1"]["weight"].shape == (16, 16, 3, 3)
    assert ("bias" in masks["conv1"]) == (cls is not LevelPruner and model.conv1.bias is not None)
    with torch.no_grad():
        ref = pruner.masked_graph(x)
    pruned = fxprune.speedup(pruner.masked_graph, pruner.session.masks, x)  # fxprune's own pair
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), ref, rtol=1e-4, atol=1e-5)
    if cls is not LevelPruner:
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_masked_model_is_trainable_and_stays_masked():
    model, x = resnet()
    pruner = L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], dummy_input=x)
    pruner.compress()
    masked, masks = pruner.masked_graph, pruner.session.masks
    masked.train()
    opt = torch.optim.SGD(masked.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        masked(torch.randn(4, 3, 32, 32)).pow(2).mean().backward()
        opt.step()
    masked.eval()
    pruned = fxprune.speedup(masked, masks, x)  # verifies masked == pruned after fine-tuning
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), rtol=1e-4, atol=1e-5)


def test_result_keeps_train_mode_of_input():
    model, x = resnet()
    model.train()
    result = fxprune.compile(model, {"sparsity": 0.5}, x)
    assert model.training and result.model.training and result.masked_model.training


# -- custom rules and barriers -------------------------------------------------------------------


def test_unknown_op_is_a_barrier_until_a_rule_is_registered():
    factory, shape = BAD_MODELS["unknown_custom_op"]
    model, x = factory().eval(), torch.randn(*shape)
    with pytest.warns(UserWarning, match="my_custom_gate"):
        frozen = fxprune.compile(model, {"sparsity": 0.5}, x)
    assert "my_custom_gate" in frozen.report.unsupported
    try:
        fxprune.register_rule(my_custom_gate, fxprune.rules.elementwise)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pruned = fxprune.compile(model, {"sparsity": 0.5}, x)
    finally:
        fxprune.rules.RULES.pop(my_custom_gate)
    assert pruned.report.params_after < frozen.report.params_after


def test_a_wrong_rule_is_caught_by_verify_and_names_the_node():
    """The invariant check can fail: a rule that lies (flip over channels is not element-wise)."""

    class Flip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3)
            with torch.no_grad():  # filter norms grow with the index: L1 keeps 4..7, not a flip-symmetric set
                self.a.weight.mul_(0).add_(torch.arange(1.0, 9.0).view(8, 1, 1, 1))

        def forward(self, x):
            return self.b(torch.flip(self.a(x), [1]))

    fxprune.register_rule(torch.flip, fxprune.rules.first_input)
    try:
        with pytest.raises(fxprune.VerifyError, match="flip"):
            fxprune.compile(Flip().eval(), {"sparsity": 0.5}, torch.randn(1, 3, 8, 8))
    finally:
        fxprune.rules.RULES.pop(torch.flip)


def test_groups_reaching_the_output_are_frozen_with_a_reason():
    factory, shape = RULE_CASES["output_from_middle"]
    result = fxprune.compile(factory().eval(), {"sparsity": 0.5}, torch.randn(*shape))
    reasons = [r for g in result.report.groups for r in g.reasons]
    assert any("reaches the model output" in r for r in reasons)


# -- bad input: a clear FxPruneError before the model is touched -------------------------------


BAD_CONFIGS = [
    ({"pruner": "l1", "sparsty": 0.5}, "sparsty", "did you mean 'sparsity'"),
    ({"pruner": "l1", "sparsity": 1.0}, "sparsity", "outside [0, 1)"),
    ({"pruner": "l1", "sparsity": -0.1}, "sparsity", "outside [0, 1)"),
    ({"pruner": "l1", "sparsity": "half"}, "sparsity", "must be a number"),
    ({"pruner": "magic", "sparsity": 0.5}, "pruner", "not one of"),
    ({"rules": [{"sparsity": 0.5, "op_types": ["Conv2d"], "op_name": ["x"]}]}, "op_name", "did you mean"),
    ({"rules": [{"sparsity": 0.5, "op_types": ["Conv7d"]}]}, "rules[0] matches no layer", "Conv2d"),
    ({"rules": [{"sparsity": 0.5, "op_names": ["nope"]}]}, "rules[0] matches no layer", "layer1.0.conv1"),
    ({"rules": []}, "rules", "non-empty"),
    ({"rules": [{"op_types": ["Conv2d"]}]}, "rules[0] has no sparsity", "'sparsity'"),
    ({"round_to": 0, "sparsity": 0.5}, "round_to", "positive int"),
    ({"sparsity": 0.5, "rules": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}, "sparsity", "rules"),
    (42, "config must be", "dict"),
]


@pytest.mark.parametrize("config,names,fix", BAD_CONFIGS)
def test_bad_config_is_a_config_error(config, names, fix):
    model, x = resnet()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(fxprune.ConfigError) as err:
        fxprune.compile(model, config, x)
    assert names in str(err.value) and fix in str(err.value)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_untraceable_model_names_the_source_line():
    factory, shape = BAD_MODELS["data_dependent_control_flow"]
    with pytest.raises(fxprune.TraceError) as err:
        fxprune.compile(factory(), {"sparsity": 0.5}, torch.randn(*shape))
    assert "fixtures.py" in str(err.value) and "if " in str(err.value) and "torch.fx.wrap" in str(err.value)


@pytest.mark.parametrize("bad_input,match", [
    (torch.randn(1, 5, 32, 32), "conv1"),  # wrong channel count: names the layer
    (torch.randn(3, 32, 32, 1, 1), "conv1"),
    ((torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)), "takes 1 input"),
    ("not a tensor", "example_inputs"),
])
def test_wrong_example_inputs_name_the_layer(bad_input, match):
    model, _ = resnet()
    with pytest.raises(fxprune.InputError, match=match):
        fxprune.compile(model, {"sparsity": 0.5}, bad_input)


def test_speedup_rejects_a_plain_module_with_fxprune_masks():
    model, x = resnet()
    pruner = L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], dummy_input=x)
    pruner.compress()
    with pytest.raises(fxprune.InputError, match="compress"):
        fxprune.speedup(model, pruner.session.masks, x)


def test_nni_pruner_dependency_aware_without_inputs_says_how():
    model, _ = resnet()
    with pytest.raises(fxprune.InputError, match="dummy_input="):
        L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], mode="dependency_aware")
