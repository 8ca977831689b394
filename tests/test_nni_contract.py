"""NNI's pruner contract (issue 12): the seeds' snippets and NNI's example scripts run with only their imports changed.

`compress()` returns `(model, masks)`: the model passed in, masked in place, and NNI's `{layer: {'weight', 'bias'}}`;
without `dummy_input` (NNI's normal mode) the masks come per layer from each module's own weights; `_unwrap_model()`,
`ModelSpeedup(model, dummy_input, masks).speedup_model()` shrink `model` itself; the v1 forms mask in place.
"""

from __future__ import annotations

import logging
import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fxprune
from fxprune.errors import InputError
from fxprune.models import small_resnet
from fxprune.nni import ModelSpeedup, count_flops_params
from tests.realdata import digits_cnn, digits_evaluator, digits_finetuner, digits_input

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "nni"
CONVS = {"conv1": 16, "conv2": 32, "conv3": 64, "conv4": 64}  # the digits CNN's conv widths


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _alive(mask: torch.Tensor) -> torch.Tensor:
    """Bool per output channel: some weight of it is kept."""
    return (mask != 0).flatten(1).any(1)


def _filter_scores(weight: torch.Tensor, criterion: str) -> torch.Tensor:
    """NNI's per-filter metric, computed here by hand."""
    rows = weight.detach().flatten(1).double()
    if criterion == "l1":
        return rows.abs().sum(1)
    if criterion == "l2":
        return rows.square().sum(1).sqrt()
    return torch.cdist(rows, rows).sum(1)  # fpgm: sum of distances to the other filters


# -- the v2 seed's snippets, imports changed only ---------------------------------------------------------------------
def test_v2_seed_level_snippet():
    model = digits_cnn()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    from fxprune.pruners import LevelPruner

    config_list = [{'sparsity': 0.8, 'op_types': ['default']}]
    pruner = LevelPruner(model, config_list)
    masked_model, masks = pruner.compress()

    assert masked_model is model
    assert sorted(masks) == ["conv1", "conv2", "conv3", "conv4", "fc"]  # 'default': convs and linears, no BN
    for name, entry in masks.items():
        assert set(entry) == {"weight"}  # Level masks the weight only, as NNI
        w = before[f"{name}.weight"]
        mask = entry["weight"]
        assert int((mask == 0).sum()) == int(0.8 * w.numel())
        assert w.abs()[mask == 0].max() <= w.abs()[mask != 0].min()  # the smallest magnitudes go
        torch.testing.assert_close(getattr(model, name).weight, w * mask)  # masked in place


@pytest.mark.parametrize("name,criterion", [("L1NormPruner", "l1"), ("L2NormPruner", "l2"), ("FPGMPruner", "fpgm")])
def test_v2_seed_channel_snippets(name, criterion):
    model = digits_cnn()
    weights = {n: getattr(model, n).weight.detach().clone() for n in CONVS}
    import fxprune.pruners

    cls = getattr(fxprune.pruners, name)
    config_list = [{'sparsity': 0.8, 'op_types': ['Conv2d']}]
    pruner = cls(model, config_list)
    masked_model, masks = pruner.compress()

    assert masked_model is model and pruner.session is None  # normal mode: nothing traced
    assert sorted(masks) == sorted(CONVS)
    for layer, width in CONVS.items():
        keep = _alive(masks[layer]["weight"])
        assert int(keep.sum()) == width - int(0.8 * width)  # NNI's int(s * n) per layer
        scores = _filter_scores(weights[layer], criterion)
        assert scores[~keep].max() <= scores[keep].min(), layer  # the lowest-scored filters of the layer go
        assert torch.equal(masks[layer]["weight"], keep.float().view(-1, 1, 1, 1).expand_as(weights[layer]))
    x = digits_input(8)
    with torch.no_grad():  # the model computes with the masked weights
        manual = model.conv1._conv_forward(x, weights["conv1"] * masks["conv1"]["weight"], None)
        torch.testing.assert_close(model.conv1(x), manual)


def test_channel_masks_cover_the_bias():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10))
    from fxprune.pruners import L1NormPruner

    _, masks = L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}]).compress()
    assert set(masks["0"]) == {"weight", "bias"}
    assert torch.equal(masks["0"]["bias"], _alive(masks["0"]["weight"]).float())
    assert int((model[0].bias == 0).sum()) >= 4


# -- the v1 seed's snippets (TensorFlow-free forms) -------------------------------------------------------------------
def test_v1_seed_snippets_mask_in_place():
    from fxprune.pruners.v1 import FPGMPruner, L1FilterPruner, L2FilterPruner, LevelPruner

    model = digits_cnn()
    config_list = [{'sparsity': 0.8, 'op_types': ['default']}]
    pruner = LevelPruner(model, config_list)
    assert pruner.compress() is model
    assert int((model.conv2.weight == 0).sum()) == int(0.8 * model.conv2.weight.numel())

    for cls, config_list in ((L1FilterPruner, [{'sparsity': 0.8, 'op_types': ['Conv2d']}]),
                             (L2FilterPruner, [{'sparsity': 0.8, 'op_types': ['Conv2d']}]),
                             (FPGMPruner, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])):
        model = digits_cnn()
        pruner = cls(model, config_list)
        assert pruner.compress() is model
        s = config_list[0]["sparsity"]
        assert int(_alive(model.conv3.weight).sum()) == 64 - int(s * 64), cls.__name__
        assert set(pruner.get_masks()) == set(CONVS)


def test_dependency_aware_needs_dummy_input():
    from fxprune.pruners import L1NormPruner, v1

    model = digits_cnn()
    with pytest.raises(InputError, match="dummy_input="):
        L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], mode="dependency_aware")
    with pytest.raises(InputError, match="dummy_input="):
        v1.L1FilterPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], dependency_aware=True)
    pruner = v1.L1FilterPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], dependency_aware=True,
                               dummy_input=digits_input(2))
    assert pruner.compress() is model and pruner.session is not None  # traced: dependency-aware masks


# -- the wrapper API ----------------------------------------------------------------------------------------------
def test_unwrap_keeps_the_parameters_and_an_optimizer_trains_the_masked_model(tmp_path):
    from fxprune.pruners import L1NormPruner

    model = digits_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # built before compress(), as NNI users do
    weight = model.conv2.weight
    pruner = L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}])
    _, masks = pruner.compress()
    x, y = digits_input(16), torch.arange(16) % 10
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    dead = ~_alive(masks["conv2"]["weight"])
    assert (model.conv2.weight[dead] == 0).all()  # masked through training
    pruner._unwrap_model()
    assert not hasattr(model.conv2, "parametrizations") and type(model.conv2) is nn.Conv2d
    assert model.conv2.weight is weight  # the same Parameter: the optimizer still holds it
    assert (model.conv2.weight[dead] == 0).all()  # weight * mask written in
    assert all(p is q for p, q in zip(model.parameters(), optimizer.param_groups[0]["params"]))

    pruner._wrap_model()
    pruner.export_model(tmp_path / "model.pth", tmp_path / "mask.pth")
    state = torch.load(tmp_path / "model.pth")
    assert (state["conv2.weight"][dead] == 0).all() and "conv2.parametrizations.weight.original" not in state
    saved = torch.load(tmp_path / "mask.pth")
    assert torch.equal(saved["conv2"]["weight"], masks["conv2"]["weight"])
    assert hasattr(model.conv2, "parametrizations")  # export_model leaves the model masked, as NNI re-wraps


def test_show_pruned_weights_logs_remain_total(caplog):
    from fxprune.pruners import L2NormPruner

    pruner = L2NormPruner(digits_cnn(), [{"sparsity": 0.5, "op_types": ["Conv2d"]}])
    pruner.compress()
    with caplog.at_level(logging.INFO, logger="fxprune"):
        pruner.show_pruned_weights()
    assert "simulated prune conv3 remain/total: 32/64" in caplog.text


def test_compile_on_a_masked_model_traces_the_masked_weights():
    from fxprune.pruners import LevelPruner

    model = digits_cnn()
    LevelPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}]).compress()
    x = digits_input(4)
    with torch.no_grad():
        ref = model(x)
    result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.25}, x)
    assert result.report.params_after < result.report.params_before
    assert hasattr(model.conv1, "parametrizations")  # compile leaves the input model as it was
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref)
    counted = count_flops_params(model, x, verbose=False)
    assert counted[:2] == count_flops_params(digits_cnn(), x, verbose=False)[:2]  # counted through the masks


# -- speedup: NNI's flow, and masks that disagree inside a channel group -----------------------------------------
def test_nni_flow_compress_unwrap_speedup_evaluate():
    from fxprune.pruners import L1NormPruner

    model = digits_cnn()
    before = _params(model)
    pruner = L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}])
    _, masks = pruner.compress()
    pruner._unwrap_model()
    returned = ModelSpeedup(model, dummy_input=digits_input(10), masks_file=masks).speedup_model()
    assert returned is model and [model.get_submodule(n).out_channels for n in CONVS] == [8, 16, 32, 32]
    assert _params(model) < 0.3 * before
    digits_finetuner(1, lr=1e-2)(model)
    assert digits_evaluator()(model) > 0.5  # chance is 0.1


def test_speedup_takes_a_model_still_masked():
    from fxprune.pruners import FPGMPruner

    model = digits_cnn()
    _, masks = FPGMPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}]).compress()
    x = digits_input(4)
    pruned = fxprune.speedup(model, masks, x)  # a new GraphModule; `model` stays masked
    assert _params(pruned) < 0.3 * _params(model) and hasattr(model.conv1, "parametrizations")
    fxprune.speedup(model, masks, x, inplace=True)
    assert not hasattr(model.conv1, "parametrizations") and model.conv1.out_channels == 8
    with torch.no_grad():
        torch.testing.assert_close(model(x), pruned(x), rtol=1e-4, atol=1e-5)


def test_per_layer_masks_on_a_residual_model_are_reconciled_and_reported(caplog):
    """Normal mode masks each conv alone; where a residual add couples two convs that masked different channels,
    a channel goes only if every producer masks it; the others are kept and the warning names them."""
    from fxprune.pruners import L1NormPruner

    torch.manual_seed(0)
    model = small_resnet().eval()
    x = torch.randn(2, 1, 28, 28)
    before = _params(model)
    _, masks = L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}]).compress()
    pruned_by_both = _alive(masks["conv1"]["weight"]) | _alive(masks["layer1.conv2"]["weight"])
    speedup = ModelSpeedup(model, dummy_input=x, masks_file=masks)
    with caplog.at_level(logging.WARNING, logger="fxprune"):
        speedup.speedup_model()
    assert _params(model) < before
    assert model.conv1.out_channels == int(pruned_by_both.sum())  # kept: a channel either conv still produces
    kept_notes = [n for n in speedup.result.report.notes if n.startswith("conv1:") and "masked but kept" in n]
    assert kept_notes and "not masked in layer1.conv2" in kept_notes[0]
    assert "masked but kept" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(model(x), speedup.result.model(x), rtol=1e-4, atol=1e-5)


# -- seed-style VGG: conv1..conv13 as attributes AND inside a Sequential -----------------------------------------------
class _SeedVGG(nn.Module):
    """VGG-16 for CIFAR as the v1 seed's experiment writes it: each conv an attribute, the forward a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
        layers, in_ch, i = [], 3, 0
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            i += 1
            conv = nn.Conv2d(in_ch, v, 3, padding=1)
            setattr(self, f"conv{i}", conv)
            layers += [conv, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_ch = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                        nn.Linear(512, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.mark.slow
def test_seed_vgg_prunes_to_pruned_a_by_attribute_names():
    from fxprune.pruners.v1 import L1FilterPruner

    model = _SeedVGG().eval()
    assert _params(model) == pytest.approx(15.0e6, rel=0.01)
    config_list = [{"sparsity": 0.5, "op_names": ["conv1", "conv8", "conv9", "conv10", "conv11", "conv12", "conv13"]}]
    pruner = L1FilterPruner(model, config_list)
    pruner.compress()
    assert sorted(pruner.get_masks()) == sorted(config_list[0]["op_names"])
    pruner._unwrap_model()
    ModelSpeedup(model, dummy_input=torch.randn(2, 3, 32, 32), masks_file=pruner.get_masks()).speedup_model()
    assert _params(model) == pytest.approx(5.4e6, rel=0.01)
    assert [getattr(model, f"conv{i}").out_channels for i in range(1, 14)] == \
        [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]


# -- NNI's example scripts, imports and data changed only ----------------------------------------------------------
def _run(script: str, *args: str) -> dict:
    argv = sys.argv
    sys.argv = [script, *args]
    try:
        torch.manual_seed(0)
        return runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    finally:
        sys.argv = argv


@pytest.mark.slow
@pytest.mark.parametrize("script,args", [("norm_pruning.py", ()), ("norm_pruning.py", ("--pruner", "l2norm")),
                                         ("fpgm_pruning.py", ())])
def test_nni_channel_examples_end_smaller_and_accurate(script, args):
    out = _run(script, "--pretrain-epochs", "10", "--fine-tune-epochs", "3", *args)  # 3 epochs: 33 SGD steps
    assert out["params"] < 0.4 * out["pre_params"]  # half the filters of every conv, and their next layers' inputs
    assert out["flops"] < 0.4 * out["pre_flops"]
    assert out["best_acc"] > 50.0  # the script's own evaluator, in %; chance is 10


@pytest.mark.slow
def test_nni_level_example_ends_half_sparse_and_accurate():
    out = _run("level_pruning.py", "--pretrain-epochs", "10", "--fine-tune-epochs", "1")
    model = out["model"]
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((m.weight == 0).sum()) for m in convs)
    assert zeros >= 0.5 * sum(m.weight.numel() for m in convs) - len(convs)  # int(0.5 * n) per layer, kept in training
    assert out["params"] == out["pre_params"]  # unstructured: NNI's script does not speed it up
    assert out["best_acc"] > 50.0


@pytest.mark.slow
def test_nni_simple_example_ends_smaller_and_accurate():
    out = _run("simple_pruning.py")
    model = out["model"]
    assert [model.get_submodule(n).out_channels for n in CONVS] == [4, 7, 13, 13]  # 80%: int(0.8 * n) removed
    assert out["evaluator"](model) > 50.0


def test_nni_call_forms_reject_bad_argument_lists_by_name() -> None:
    """One binder (`fxprune.pruners.base.bind_call`) reads both NNI forms of every class's extra arguments."""
    from fxprune.pruners import ADMMPruner, AGPPruner, TaylorFOWeightPruner, TorchEvaluator

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    rules = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
    too_many = "TaylorFOWeightPruner takes at most 6 arguments after config_list in the NNI 2.6"
    with pytest.raises(fxprune.InputError, match=too_many):
        TaylorFOWeightPruner(model, rules, *[None] * 7)
    with pytest.raises(fxprune.InputError, match="'traced_optimizer' is given twice"):
        TaylorFOWeightPruner(model, rules, None, None, optimizer=None, traced_optimizer=None)
    with pytest.raises(fxprune.InputError, match="ADMMPruner: 'traced_optimizer' is given twice"):
        ADMMPruner(model, rules, None, None, optimizer=None)
    with pytest.raises(fxprune.InputError, match="AGPPruner: unexpected argument 'speedp'.*it takes: finetuner"):
        AGPPruner(model, rules, "l1", 3, speedp=True)
    evaluator = TorchEvaluator(lambda *a, **k: None, torch.optim.SGD, lambda out, y: out.sum())
    with pytest.raises(fxprune.InputError, match="either evaluator=TorchEvaluator.*or finetuner="):
        AGPPruner(model, rules, "l1", 3, ".", False, evaluator, finetuner=lambda m: None)
