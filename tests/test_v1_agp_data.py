"""NNI v1 AGPPruner with the data-driven algorithms (taylorfo, apoz, mean_activation) and slim: statistics from
the user's own training loop, masks on the user's model, speedup verified."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fxprune.pruners.v1 import AGPPruner
from tests.realdata import digits_batches, digits_cnn, digits_input

X = digits_input()
DEAD = [0, 3, 5, 9]  # conv1 channels made dead (always zero after BN + ReLU) but with the largest filters


def _model_with_dead_channels() -> torch.nn.Module:
    """The trained digits CNN, four conv1 channels switched off by their BatchNorm shift and given the largest
    weights: every data criterion must remove exactly these first, while L1 would keep them."""
    model = digits_cnn()
    with torch.no_grad():
        model.conv1.weight[DEAD] *= 10
        model.bn1.bias[DEAD] = -1e4
    return model


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, pruner: AGPPruner, epochs: int) -> None:
    batches = digits_batches()[0]
    for epoch in range(epochs):
        pruner.update_epoch(epoch)
        model.train()
        for i, (x, y) in enumerate(batches):
            if i == 3:
                break
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


@pytest.mark.parametrize("algorithm", ["taylorfo", "apoz", "mean_activation"])
def test_v1_agp_data_algorithms_score_from_your_training(algorithm: str) -> None:
    model = _model_with_dead_channels()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    config_list = [{"initial_sparsity": 0.0, "final_sparsity": 0.25, "start_epoch": 0, "end_epoch": 3,
                    "op_types": ["Conv2d"]}]
    pruner = AGPPruner(model, config_list, optimizer, pruning_algorithm=algorithm, dummy_input=X)
    assert pruner.compress() is model
    _train(model, optimizer, pruner, 4)
    removed = (model.conv1.weight.detach().flatten(1).abs().sum(1) == 0).nonzero().flatten().tolist()
    assert removed == DEAD, f"{algorithm} removed {removed}, the dead channels are {DEAD}"
    for conv in (model.conv2, model.conv3, model.conv4):
        assert (conv.weight.detach().flatten(1).abs().sum(1) == 0).sum().item() == conv.out_channels // 4
    result = pruner.speedup()
    assert result.model.get_parameter("conv1.weight").shape[0] == 12 and result.report.max_abs_diff < 1e-4
    torch.testing.assert_close(result.model.eval()(X), model.eval()(X), rtol=1e-4, atol=1e-5)


def _agp_trained(criterion: str, end_epoch: int, epochs: int) -> tuple[torch.nn.Module, AGPPruner]:
    """The dead-channel model under v1 AGP (25% of the conv channels by `end_epoch`), trained `epochs` epochs."""
    model = _model_with_dead_channels()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    pruner = AGPPruner(model, [{"final_sparsity": 0.25, "end_epoch": end_epoch, "op_types": ["Conv2d"]}], optimizer,
                       criterion, dummy_input=X)
    pruner.compress()
    _train(model, optimizer, pruner, epochs)
    return model, pruner


def test_v1_agp_l1_keeps_the_large_dead_filters_the_data_criteria_remove() -> None:
    """The counter-example that makes the test above mean something: magnitude keeps the dead channels."""
    model, _ = _agp_trained("l1", end_epoch=3, epochs=4)
    removed = set((model.conv1.weight.detach().flatten(1).abs().sum(1) == 0).nonzero().flatten().tolist())
    assert len(removed) == 4 and not removed & set(DEAD)


def test_v1_agp_slim_ranks_batchnorm_scales() -> None:
    model = digits_cnn()
    with torch.no_grad():
        model.bn2.weight[[1, 2]] = 1e-6
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    pruner = AGPPruner(model, [{"final_sparsity": 0.25, "end_epoch": 2, "op_types": ["BatchNorm2d"]}], optimizer,
                       "slim", dummy_input=X)
    pruner.compress()
    _train(model, optimizer, pruner, 3)
    removed = (model.bn2.weight.detach() == 0).nonzero().flatten().tolist()
    assert {1, 2} <= set(removed)
    assert (model.conv2.weight.detach()[removed] == 0).all()  # the whole channel's group is masked
    bns = [model.bn1, model.bn2, model.bn3, model.bn4]  # Slim's threshold is global over the selected scales
    assert sum((bn.weight.detach() == 0).sum().item() for bn in bns) == int(0.25 * sum(bn.num_features for bn in bns))
    result = pruner.speedup()
    torch.testing.assert_close(result.model.eval()(X), model.eval()(X), rtol=1e-4, atol=1e-5)


def test_v1_agp_waits_for_statistics_and_rejects_bad_statistics_batch_num() -> None:
    model = _model_with_dead_channels()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    pruner = AGPPruner(model, [{"initial_sparsity": 0.25, "final_sparsity": 0.25, "end_epoch": 1,
                                "op_types": ["Conv2d"]}], optimizer, "taylorfo", dummy_input=X)
    pruner.compress()  # no backward pass yet: nothing to score, so nothing is masked
    assert pruner.get_masks() == {}
    _train(model, optimizer, pruner, 1)
    assert pruner.get_masks()["conv1"]["weight"].flatten(1).sum(1).eq(0).nonzero().flatten().tolist() == DEAD
    with pytest.raises(Exception, match="statistics_batch_num"):
        AGPPruner(model, [{"final_sparsity": 0.5, "op_types": ["Conv2d"]}], optimizer, "apoz", statistics_batch_num=0)


def test_v1_agp_strip_removes_the_statistics_hooks_from_your_model() -> None:
    model, pruner = _agp_trained("apoz", end_epoch=1, epochs=2)
    assert model._forward_pre_hooks  # the hook that remembers your inputs for apoz
    pruner.strip()
    seen = list(pruner._recent)
    model.eval()(X)
    assert not model._forward_pre_hooks and list(pruner._recent) == seen
