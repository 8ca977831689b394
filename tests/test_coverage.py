"""Issue 15, classes 4 and 7: per-sample ops (stochastic depth, drop-path) and advanced indexing / strided
slices (LeViT's bias table and subsampling) keep channels coupled. Each fixture (tests/coverage_models.py)
prunes at 50% with the invariant, at a second batch size, exports to ONNX, and loses as many MACs as the
same model with the op replaced by a plain element-wise op (or a plain slice)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.graph import BuildOptions, DependencyGraph
from fxprune.passes.trace import trace
from tests._checks import check_result
from tests.coverage_models import ConvNeXtLike, EfficientNetLike, LeViTLike

SD = "torchvision.ops.stochastic_depth.stochastic_depth"
HIDDEN = {"sparsity": 0.5, "prune_hidden": True}  # ConvNeXt's residual stream is its LayerNorm's hidden size

# name -> (factory taking plain, config)
CASES: dict[str, tuple[Callable[[bool], nn.Module], dict[str, Any]]] = {
    "efficientnet_stochastic_depth": (lambda plain: EfficientNetLike(plain=plain), {"sparsity": 0.5}),
    "convnext_stochastic_depth": (lambda plain: ConvNeXtLike("stochastic_depth", plain=plain), HIDDEN),
    "convnext_drop_path": (lambda plain: ConvNeXtLike("drop_path", plain=plain), HIDDEN),
    "levit_bias_index_and_strided_subsample": (lambda plain: LeViTLike(plain=plain), {"sparsity": 0.5}),
}


def _compile(model: Any, config: dict[str, Any], x: torch.Tensor) -> fxprune.CompileResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a barrier would warn
        return fxprune.compile(model, config, x)


def _removed(result: fxprune.CompileResult) -> int:
    return result.report.macs_before - result.report.macs_after


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_prunes_through_as_if_the_op_were_plain(name: str, tmp_path) -> None:
    factory, config = CASES[name]
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    result = _compile(factory(False).eval(), config, x)
    check_result(result, (torch.randn(5, 3, 32, 32),))  # masked == pruned at another batch size; counts
    exported = fxprune.export_onnx(result.model, (x,), tmp_path / f"{name}.onnx")
    assert exported.dynamic_batch and exported.max_abs_err < 1e-3
    torch.manual_seed(0)
    plain = _compile(factory(True).eval(), config, x)
    assert abs(_removed(result) - _removed(plain)) <= 0.05 * _removed(plain), (_removed(result), _removed(plain))
    assert result.report.mac_reduction > 0.3


@pytest.mark.slow
@pytest.mark.parametrize(("name", "config"), [("efficientnet_stochastic_depth", {"sparsity": 0.5})])
def test_without_its_row_stochastic_depth_is_a_costly_barrier(name: str, config: dict[str, Any]) -> None:
    """The fixture measures something: with the row taken out, the op is a barrier named in the warning and the
    model loses far fewer MACs (the cost the row removes)."""
    factory, _ = CASES[name]
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    with_row = _compile(factory(False).eval(), config, x)
    row = fxprune.rules.RULES.pop(SD)
    try:
        torch.manual_seed(0)
        with pytest.warns(UserWarning, match="torchvision.ops.stochastic_depth.stochastic_depth: 4 node"):
            without = fxprune.compile(factory(False).eval(), config, x)
    finally:
        fxprune.register_rule(SD, row)
    assert _removed(without) < 0.8 * _removed(with_row)


@pytest.mark.slow
def test_levit_under_torch_export() -> None:
    """The export front end spells the same ops aten.index.Tensor(biases, [None, idxs]) and aten.slice(x, 1, 0,
    end, 2): it removes what fx removes, the bias table loses the pruned heads' rows."""
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    gm = trace(LeViTLike().eval(), (x,), frontend="export")
    targets = {n.target for n in gm.graph.nodes}
    assert torch.ops.aten.index.Tensor in targets and torch.ops.aten.slice.Tensor in targets
    exported = _compile(gm, {"sparsity": 0.5}, x)
    check_result(exported, (torch.randn(3, 3, 32, 32),))
    torch.manual_seed(0)
    traced = _compile(LeViTLike().eval(), {"sparsity": 0.5}, x)
    assert _removed(exported) == _removed(traced)
    for result in (exported, traced):
        heads = result.model.get_submodule("stage1.0.m").attention_biases.shape[0]
        assert heads < 4


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_per_sample_mask_of_a_train_mode_graph_couples(frontend: str) -> None:
    """Traced in train mode, drop-path and stochastic depth are a per-sample (N, 1, 1, 1) mask drawn with
    new_empty/empty + bernoulli_ + div_, times x (fx keeps torchvision's wrapped stochastic_depth whole): the mask
    broadcasts, the channels stay prunable."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    models = [ConvNeXtLike("drop_path").train(), EfficientNetLike().train()]
    for model in models:
        for m in model.modules():  # p > 0 everywhere, so every block draws its mask; BN statistics stay put
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
            if hasattr(m, "drop_prob"):
                m.drop_prob = 0.2
            if hasattr(m, "p") and isinstance(m.p, float):
                m.p = 0.2
        graph = torch.fx.symbolic_trace(model) if frontend == "fx" else \
            torch.export.export(model, (x,), strict=False).module()
        names = {fxprune.rules.spelling_name(n.target) for n in graph.graph.nodes
                 if n.op in ("call_function", "call_method")}
        assert names & {"Tensor.bernoulli_", "aten.bernoulli_.float", "aten.bernoulli.p", SD}, sorted(names)
        dg = DependencyGraph.build(trace(graph, (x,)), BuildOptions(prune_hidden=True))
        assert not dg.unsupported, dg.unsupported_message()
        assert not any("no rule" in r or "does not handle" in r for g in dg.groups for r in g.reasons)
        assert sum(int(g.prunable.sum()) for g in dg.groups) > 100


def test_a_boolean_mask_index_stays_a_barrier_named_once() -> None:
    """Indexing channels with a boolean mask has a data-dependent size: no coupling describes it, so it stays a
    barrier (never a guessed element-wise rule), named once in one warning with the fix."""

    class BoolIndex(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(4, 2, 1)
            self.register_buffer("keep", torch.arange(8) % 2 == 0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x))[:, self.keep])

    with pytest.warns(UserWarning) as record:
        result = fxprune.compile(BoolIndex().eval(), {"sparsity": 0.5}, torch.randn(2, 3, 8, 8))
    messages = [str(w.message) for w in record if str(w.message).startswith("fxprune has no rule")]
    assert len(messages) == 1 and "boolean mask" in messages[0] and "register_rule" in messages[0]
    assert "1 node" in messages[0]
    assert result.model.conv.out_channels == 8
