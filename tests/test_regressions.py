"""Regression tests for bugs the robustness work (fuzzer, bad-input table) found in the core."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from tests.test_bad_inputs import Net


class _Tied(nn.Module):
    """Two convs sharing one weight (b.weight is a.weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.b.weight = self.a.weight
        self.h = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(F.relu(self.b(F.relu(self.a(self.c0(x))))))


def _compile(model: nn.Module, config: dict, x: torch.Tensor) -> fxprune.CompileResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxprune.compile(model, config, x)


def test_level_pruner_keeps_masked_model_usable() -> None:
    """Level crashed: speedup's remove_parametrizations deleted the property from the parametrized class,
    which the masked model shares with its deep copy ('ParametrizedConv2d' object has no attribute 'weight')."""
    x = torch.randn(2, 3, 8, 8)
    result = _compile(Net().eval(), {"pruner": "level", "sparsity": 0.5}, x)
    torch.testing.assert_close(result.model(x), result.masked_model(x))
    assert not hasattr(result.model.c1, "parametrizations")
    assert result.report.nonzero_params_after < result.report.params_after


def test_level_pruner_does_not_write_into_masked_originals() -> None:
    x = torch.randn(2, 3, 8, 8)
    result = _compile(Net().eval(), {"pruner": "level", "sparsity": 0.5}, x)
    original = result.masked_model.c1.parametrizations.weight.original
    assert (original != 0).all(), "the masked model's trainable weights must keep their values"


def test_tied_weights_stay_tied_and_are_sliced_once() -> None:
    """Tied weights were sliced per module name: the pruned model held two different slices of one tensor."""
    x = torch.randn(2, 3, 8, 8)
    for pruner in ("l1", "level"):
        model = _Tied().eval()
        result = _compile(model, {"pruner": pruner, "sparsity": 0.5}, x)
        assert result.model.a.weight is result.model.b.weight
        assert result.report.params_after == sum(p.numel() for p in result.model.parameters())
        torch.testing.assert_close(result.model(x), result.masked_model(x))
        assert model.a.weight is model.b.weight


def test_level_report_counts_macs_of_masked_layers() -> None:
    """Found by the fuzzer: with Level, macs_before was 0, because the report looked up the rule of the
    parametrized class (ParametrizedConv2d) the mask pass creates, and no rule has that spelling."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    dense = _compile(Net().eval(), {"pruner": "l1", "sparsity": 0.0}, x).report
    level = _compile(Net().eval(), {"pruner": "level", "sparsity": 0.5}, x).report
    assert level.macs_before == dense.macs_before > 0
    if any("all-zero weights" in note for note in level.notes):  # speedup removed a channel Level emptied
        assert 0 < level.macs_after < level.macs_before
    else:
        assert level.macs_after == level.macs_before


class _SplitComputedSizes(nn.Module):
    """torch.split with a size computed in the graph: [s, x.shape[1] - s]."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(9, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c0(x)
        a, b = torch.split(y, [3, y.shape[1] - 3], 1)
        return self.head(torch.cat([self.a(a), torch.sigmoid(b)], 1))


def test_split_with_sizes_computed_in_the_graph() -> None:
    """Found by the fuzzer: split sizes holding a Node (x.shape[1] - s) crashed the speedup pass
    ('unsupported operand type(s) for +: int and Node'); window sizes now come from the traced items."""
    x = torch.randn(2, 3, 8, 8)
    result = _compile(_SplitComputedSizes().eval(), {"pruner": "l1", "sparsity": 0.5}, x)
    torch.testing.assert_close(result.model(x), result.masked_model(x))
    assert result.model.c0.out_channels < 8


class _NaNOutput(nn.Module):
    """Finite inputs, but the model itself produces NaN (log of negative numbers) in some positions."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.c2(F.relu(self.c1(x))))


def test_nan_in_the_models_own_output_is_not_a_verify_error() -> None:
    """A NaN the masked model computes too was reported as 'a bug in a rule of fxprune'; NaN and inf must
    only sit in the same places."""
    x = torch.randn(2, 3, 8, 8)
    result = _compile(_NaNOutput().eval(), {"pruner": "l1", "sparsity": 0.5}, x)
    out = result.model(x)
    assert out.isnan().any()
    assert torch.equal(out.isnan(), result.masked_model(x).isnan())


class _SumOverHidden(nn.Module):
    """A sum over the hidden size of a tensor no contraction reads (only the sum does)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc1, self.fc2, self.head = (nn.Embedding(50, 16), nn.Linear(16, 32), nn.Linear(32, 16),
                                                   nn.Linear(16, 4))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        z = self.fc2(torch.relu(self.fc1(h)))
        energy = z.pow(2).sum(-1, keepdim=True)
        return self.head(h + z) * energy


def test_sum_over_a_pruned_hidden_dim_reads_zeros() -> None:
    """With prune_hidden, the masked model's sum over the hidden size read the removed channels (fc2's
    bias), because only contracted slots were masked: a spurious VerifyError at the sum. Rules now declare
    sums with `c.reduce`, which the mask pass zeroes like a contraction."""
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 8))
    result = _compile(_SumOverHidden().eval(), {"sparsity": 0.5, "prune_hidden": True}, ids)
    assert result.model.get_submodule("fc2").out_features == 8
    torch.testing.assert_close(result.model(ids), result.masked_model(ids), rtol=1e-4, atol=1e-5)
