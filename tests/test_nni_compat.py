"""fxprune.nni: NNI's user-facing names (trace, ModelSpeedup, count_flops_params) and NNI-format masks."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune import nni
from fxprune.nni import ModelSpeedup, count_flops_params
from tests.test_writeback import _same, _state


class Small(nn.Module):
    """conv-bn-relu, a residual conv-bn, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + y)
        return self.fc(torch.relu(self.conv3(y)).mean((2, 3)))


def _filters(model: nn.Module, layer: str, removed: list[int]) -> dict[str, torch.Tensor]:
    """NNI's mask of a layer whose filters `removed` are pruned (weight and bias), applied to the weights as
    `pruner._unwrap_model()` does."""
    module = model.get_submodule(layer)
    weight, bias = torch.ones_like(module.weight), torch.ones_like(module.bias)
    weight[removed], bias[removed] = 0, 0
    with torch.no_grad():
        module.weight.mul_(weight)
        module.bias.mul_(bias)
    return {"weight": weight, "bias": bias}


def _model() -> Small:
    torch.manual_seed(0)
    model = Small().eval()
    for bn in (model.bn1, model.bn2):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def test_trace_optimizer_is_a_real_optimizer_that_remembers_its_arguments() -> None:
    model = Small()
    opt = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.01)
    assert isinstance(opt, torch.optim.SGD) and type(opt).__name__ == "SGD"
    assert opt.trace_symbol is torch.optim.SGD and opt.trace_args == []
    assert opt.trace_kwargs["lr"] == 0.01
    assert [id(p) for p in opt.trace_kwargs["params"]] == [id(p) for p in model.parameters()]  # generator kept
    rebuilt = opt.trace_symbol(*opt.trace_args, **opt.trace_kwargs)  # what NNI does with it
    assert rebuilt.defaults["lr"] == 0.01
    model(torch.randn(1, 3, 8, 8)).sum().backward()
    before = model.fc.bias.detach().clone()
    opt.step()
    assert not torch.equal(before, model.fc.bias)
    again = pickle.loads(pickle.dumps(opt))
    assert isinstance(again, torch.optim.SGD) and again.trace_kwargs["lr"] == 0.01


def test_trace_function_and_decorator_forms() -> None:
    @nni.trace
    def make(width, depth=2):
        return nn.Linear(width, depth)

    layer = make(4, depth=3)
    assert isinstance(layer, nn.Linear) and layer.trace_kwargs == {"width": 4, "depth": 3}
    Conv = nni.trace()(nn.Conv2d)
    conv = Conv(3, 4, kernel_size=3)
    assert isinstance(conv, nn.Conv2d) and conv.trace_kwargs == {"in_channels": 3, "out_channels": 4,
                                                                 "kernel_size": 3}


def test_model_speedup_shrinks_the_model_in_place_like_the_masked_model(tmp_path) -> None:
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    masks = {"conv3": _filters(model, "conv3", [0, 2, 4])}
    torch.save(masks, tmp_path / "masks.pth")
    result = ModelSpeedup(model, x, str(tmp_path / "masks.pth"))
    assert result.speedup_model() is model
    assert isinstance(model, Small) and model.conv3.out_channels == 3 and model.fc.in_features == 3
    assert model.conv3.weight.shape == (3, 8, 1, 1) and model.fc.weight.shape == (4, 3)
    with torch.no_grad():
        other = torch.randn(5, 3, 8, 8)
        assert torch.allclose(model(other), result.result.masked_model(other), atol=1e-5)


def test_model_speedup_removes_channels_of_a_fully_masked_group_and_drops_the_bn_shift() -> None:
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    masks = {"conv1": _filters(model, "conv1", [1, 5]), "conv2": _filters(model, "conv2", [1, 5])}
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert (model.conv1.out_channels, model.bn1.num_features, model.conv2.in_channels,
            model.conv2.out_channels, model.conv3.in_channels) == (6, 6, 6, 6, 6)
    notes = " ".join(speedup.result.report.notes)
    assert "BatchNorm shift" in notes  # bn1/bn2 add a constant to channels 1 and 5 in the user's model


def test_half_masked_group_is_reported_with_the_channels_kept_and_why() -> None:
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    masks = {"conv1": _filters(model, "conv1", [0, 1, 2, 3]), "conv2": _filters(model, "conv2", [0, 1])}
    speedup = ModelSpeedup(model, x, masks)
    speedup.speedup_model()
    assert model.conv1.out_channels == 6  # 0 and 1 are masked by both layers of the residual group
    note = next(n for n in speedup.result.report.notes if n.startswith("conv1:"))
    assert "channels [2, 3]" in note and "not masked in conv2" in note


def test_unmasked_conv_producing_the_channel_keeps_it() -> None:
    model = _model()
    masks = {"conv2": _filters(model, "conv2", [0, 1])}  # conv1 (not masked) still writes channels 0, 1
    speedup = ModelSpeedup(model, torch.randn(2, 3, 8, 8), masks)
    speedup.speedup_model()
    assert model.conv2.out_channels == 8
    assert any("conv1 (not masked) still produces them" in n for n in speedup.result.report.notes)


def test_slim_style_batchnorm_masks_remove_the_conv_filters_before_them() -> None:
    model = _model()
    removed = [0, 3, 5]
    weight, bias = torch.ones(6), torch.ones(6)
    conv = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()
    weight[removed], bias[removed] = 0, 0
    with torch.no_grad():
        conv[1].weight.mul_(weight)
        conv[1].bias.mul_(bias)
    x = torch.randn(2, 3, 8, 8)
    ref = conv(x)
    ModelSpeedup(conv, x, {"1": {"weight": weight, "bias": bias}}).speedup_model()
    assert conv[0].out_channels == 3 and conv[1].num_features == 3 and conv[3].in_channels == 3
    assert torch.allclose(conv(x), ref, atol=1e-5)  # a zeroed BN channel reaches the next conv as 0
    del model


def test_unstructured_masks_keep_shapes_and_zero_weights() -> None:
    model = _model()
    mask = (torch.rand_like(model.conv2.weight) > 0.5).float()
    result = fxprune.nni_masks.speedup_from_nni(model, {"conv2": {"weight": mask}}, torch.randn(2, 3, 8, 8))
    assert set(result.masks.weights) == {"conv2.weight"} and not result.masks.keep
    pruned = result.model.get_parameter("conv2.weight")
    assert pruned.shape == model.conv2.weight.shape and torch.equal(pruned == 0, mask == 0)


def test_fxprune_masks_in_nni_format_round_trip_through_model_speedup() -> None:
    """NNI's example flow: masks from a pruner (here fxprune's own, as NNI's dict) -> ModelSpeedup -> smaller model
    with the same shapes as fxprune.compile's, evaluated by the script's own code."""
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, x)
    ModelSpeedup(model, x, result.masks.to_nni()).speedup_model()
    shapes = {k: tuple(v.shape) for k, v in result.model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    with torch.no_grad():
        assert torch.allclose(model(x), result.model(x), atol=1e-5)


@pytest.mark.parametrize("masks, error, pattern", [
    ({"conv9": {"weight": torch.ones(8, 3, 3, 3)}}, fxprune.InputError, r"'conv9'.*conv1, bn1, conv2"),
    ({"conv1": {"weight": torch.ones(8, 3, 5, 5)}}, fxprune.InputError,
     r"masks\['conv1'\]\['weight'\] has shape \(8, 3, 5, 5\); expected \(8, 3, 3, 3\)"),
    ({"conv1": {"scale": torch.ones(8)}}, fxprune.InputError, r"'scale'.*\['bias', 'weight'\]"),
    ({"conv1": {"weight": torch.full((8, 3, 3, 3), 0.5)}}, fxprune.InputError, "other than 0 and 1"),
    ({"conv1": torch.ones(8)}, fxprune.InputError, r"masks\['conv1'\] must be a dict"),
])
def test_bad_masks_name_the_layer_and_leave_the_model_untouched(masks, error, pattern) -> None:
    model = _model()
    before = _state(model)
    with pytest.raises(error, match=pattern):
        ModelSpeedup(model, torch.randn(2, 3, 8, 8), masks).speedup_model()
    assert _same(before, _state(model))


def test_a_file_that_is_not_a_masks_file_is_a_format_error(tmp_path) -> None:
    path = tmp_path / "masks.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(fxprune.FormatError, match="masks.pth' is not a masks file"):
        ModelSpeedup(_model(), torch.randn(2, 3, 8, 8), str(path))
    torch.save([1, 2], path)
    with pytest.raises(fxprune.FormatError, match="must be a non-empty dict"):
        ModelSpeedup(_model(), torch.randn(2, 3, 8, 8), str(path))
    with pytest.raises(fxprune.FormatError, match="does not exist"):
        ModelSpeedup(_model(), torch.randn(2, 3, 8, 8), str(tmp_path / "missing.pth"))


def test_count_flops_params_matches_nni_by_hand() -> None:
    model = Small()
    flops, params, results = count_flops_params(model, (2, 3, 8, 8), verbose=False)
    conv = 8 * 64 * 9 * 3 + 8 * 64 * 9 * 8 + 6 * 64 * 1 * 8  # Cout * positions * kernel * Cin, per sample
    assert flops == conv + 6 * 4
    assert params == sum(p.numel() for m in (model.conv1, model.conv2, model.conv3, model.fc) for p in m.parameters())
    assert [r["name"] for r in results] == ["conv1", "conv2", "conv3", "fc"]
    first = results[0]
    assert first["module_type"] == "Conv2d" and first["weight_shape"] == (8, 3, 3, 3)
    assert first["input_size"] == (2, 3, 8, 8) and first["output_size"] == (2, 8, 8, 8)
    assert first["flops"] == 8 * 64 * 27 and first["params"] == 8 * 27 + 8
    full, _, rows = count_flops_params(model, torch.randn(1, 3, 8, 8), verbose=False, mode="full")
    bias = 8 * 64 + 8 * 64 + 6 * 64 + 4
    bn = 2 * (8 * 64) * 2  # 2 per input element of one sample, two BatchNorms
    assert full == flops + bias + bn and {r["module_type"] for r in rows} == {"Conv2d", "BatchNorm2d", "Linear"}


def test_count_flops_params_custom_ops_override() -> None:
    model = Small()

    def linear(m, x, y):
        return {"flops": 7, "params": 1, "weight_shape": (1,)}

    flops, _, results = count_flops_params(model, (1, 3, 8, 8), custom_ops={nn.Linear: linear}, verbose=False)
    assert results[-1]["flops"] == 7 and flops == 8 * 64 * 27 + 8 * 64 * 72 + 6 * 64 * 8 + 7
