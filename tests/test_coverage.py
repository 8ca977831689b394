"""Issue 15's coverage classes, each with a fixture of tests/coverage_models.py pruned at 50% with the invariant
and at a second batch size: (1) `forward(self, *args/**kwargs)` wrappers, (2) Res2Net's split pieces, (3) pruned
timm ViTs exporting with both ONNX exporters, (4) per-sample ops (stochastic depth, drop-path), (5) conv subclasses
of video ResNets, (6) nn.MultiheadAttention's heads, (7) advanced indexing and strided slices (LeViT), (8) the
report's estimate of what prune_hidden=True would cut. Classes 4-7 lose as many MACs as the same model with the op
replaced by a plain one."""

from __future__ import annotations

import os
import re
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
from tests.coverage_models import (
    ArgsWrapper,
    ConvNeXtLike,
    EfficientNetLike,
    KwargsWrapper,
    LeViTLike,
    Res2NetLike,
    SegmentationLike,
    TimmViTLike,
    TorchvisionViTLike,
    TwoInputArgsWrapper,
    VideoResNetLike,
)

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


def _exports_with_both(model: torch.nn.Module, inputs: tuple[Any, ...], tmp_path: Any, name: str) -> None:
    """The legacy and the dynamo exporter both write a file onnxruntime runs like torch (at twice the batch too)."""
    for exporter in ("legacy", "dynamo"):
        exported = fxprune.export_onnx(model, inputs, tmp_path / f"{name}-{exporter}.onnx", exporter=exporter)
        assert exported.dynamic_batch and exported.max_abs_err < 1e-3, (exporter, exported.max_abs_err)


# -- class 1: forward(self, *args) / **kwargs wrappers -------------------------------------------------------

WRAPPERS = {"args": ArgsWrapper, "kwargs": KwargsWrapper}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
@pytest.mark.parametrize("frontend", ["auto", "fx", "export"])
def test_var_positional_wrapper_around_a_dict_model_prunes(wrapper: str, frontend: str) -> None:
    """A wrapper taking `*args` (and `**kwargs`) around a model returning an OrderedDict traces with both front
    ends (the default picks fx) and prunes as the bare model's `out` path does."""
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(0)
    result = _compile(WRAPPERS[wrapper](SegmentationLike()).eval(), {"sparsity": 0.5, "frontend": frontend}, x)
    assert result.report.frontend == ("fx" if frontend == "auto" else frontend)
    check_result(result, (torch.randn(3, 3, 16, 16),))
    placeholders = [n.name for n in result.model.graph.nodes if n.op == "placeholder"]
    assert len(placeholders) == 1
    assert result.model.get_parameter("model.backbone.1.0.weight").shape[0] == 16


@pytest.mark.slow
def test_var_positional_wrapper_exports_with_both_exporters(tmp_path) -> None:
    x = torch.randn(2, 3, 16, 16)
    result = _compile(ArgsWrapper(SegmentationLike()).eval(), {"sparsity": 0.5}, x)
    _exports_with_both(result.model, (x,), tmp_path, "wrapped")


def test_named_parameter_then_var_positional() -> None:
    """`forward(self, x, *rest)` with two inputs: one placeholder per input, named after the signature."""
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    for frontend in ("fx", "export"):
        result = _compile(TwoInputArgsWrapper().eval(), {"sparsity": 0.5, "frontend": frontend}, (x, y))
        names = [n.name for n in result.model.graph.nodes if n.op == "placeholder"]
        assert len(names) == 2 and (names[0] == "x" if frontend == "fx" else True), names
        check_result(result, (torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)))


@pytest.mark.slow
def test_var_positional_wrapper_around_hugging_face_bert() -> None:
    """`forward(self, *args, **kwargs)` around BertModel (returns a ModelOutput dataclass): fx cannot trace BERT,
    the default falls back to torch.export with the wrapper's signature, and heads and FFN prune."""
    T = pytest.importorskip("transformers")
    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    torch.manual_seed(0)
    bert = T.BertModel(T.BertConfig(vocab_size=100, attn_implementation="eager", **tiny)).eval()
    ids = torch.randint(0, 100, (2, 8))
    for wrapper in WRAPPERS.values():
        result = fxprune.compile(wrapper(bert), {"sparsity": 0.5}, (ids,))
        assert result.report.frontend == "export"
        check_result(result, (torch.randint(0, 100, (3, 13)),))
        assert result.report.mac_reduction > 0.3
        assert any("attention heads" in n and "units removed" in n for n in result.report.notes)


# -- class 3: pruned timm-style ViTs export with both exporters -------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("attention", ["heads", "head_dim"])
def test_pruned_timm_vit_exports_with_both_exporters(causal: bool, attention: str, tmp_path) -> None:
    """qkv.unbind(0) couples the heads (they used to stay whole); `is_causal` computed from the sequence length at
    run time becomes a mask built with tensor ops, so the legacy exporter no longer passes it a Tensor."""
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(0)
    result = _compile(TimmViTLike(causal=causal).eval(), {"sparsity": 0.5, "attention": attention}, x)
    check_result(result, (torch.randn(3, 3, 16, 16),))
    assert result.model.get_submodule("blocks.0.attn.qkv").out_features == 48
    rewritten = [n for n in result.model.graph.nodes if n.target is fxprune.rules.layers.sdpa_run_time_causal]
    assert len(rewritten) == (2 if causal else 0)
    _exports_with_both(result.model, (x,), tmp_path, f"vit-{causal}-{attention}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(result.model, (x,), str(tmp_path / "plain-legacy.onnx"), dynamo=False)


def test_failing_exporter_names_the_node_and_the_exporter_that_works(tmp_path) -> None:
    """RMSNorm has no legacy ONNX symbolic: the error names the exporter and the node, and says dynamo works."""

    class Norm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.norm = nn.Linear(8, 8), nn.RMSNorm(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.fc(x))

    gm = torch.fx.symbolic_trace(Norm().eval())
    with pytest.raises(fxprune.ExportError) as info:
        fxprune.export_onnx(gm, (torch.randn(2, 8),), tmp_path / "n.onnx", exporter="legacy")
    text = str(info.value)
    assert "legacy exporter" in text and "rms_norm" in text and "exporter='dynamo'" in text, text
    assert os.listdir(tmp_path) == []
    with pytest.raises(fxprune.errors.InputError, match="exporter='jit'"):
        fxprune.export_onnx(gm, (torch.randn(2, 8),), tmp_path / "n.onnx", exporter="jit")


# -- class 2: split pieces with different fates, concatenated back (Res2Net) ------------------------------------

@pytest.mark.slow
def test_res2net_split_pieces_prune_and_export(tmp_path) -> None:
    """`spx[-1]` (the last piece, passed through or pooled) is the split's last window: it used to be read as an
    unknown item, kept whole while its window lost channels, and conv3 then got fewer channels than it kept."""
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    result = _compile(Res2NetLike().eval(), {"sparsity": 0.5}, x)
    check_result(result, (torch.randn(3, 3, 32, 32),))
    block = result.model.get_submodule("layers.1")  # not first: the last piece passes through untouched
    pieces = [n for n in result.model.graph.nodes if n.target is torch.split and "layers_1" in n.args[0].name]
    assert len(pieces) == 1 and sum(pieces[0].args[1]) == block.conv3.in_channels < 4 * 6
    assert result.report.mac_reduction > 0.5
    _exports_with_both(result.model, (x,), tmp_path, "res2net")


def test_negative_item_of_a_tuple_is_its_last_item() -> None:
    x = torch.randn(2, 3, 8, 8)

    class LastPiece(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pieces = torch.split(self.conv(x), 4, 1)
            return self.head(torch.cat([pieces[0] * 2, pieces[-1]], 1))

    result = _compile(LastPiece().eval(), {"sparsity": 0.5}, x)
    check_result(result, (torch.randn(3, 3, 8, 8),))
    assert result.model.conv.out_channels == 4


# -- class 5: layers that subclass a known module (video ResNets) ------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("builder", ["r3d", "r2plus1d", "same"])
def test_conv_subclasses_count_as_layers_and_prune_as_plain_convs(builder: str, tmp_path) -> None:
    """Conv3DSimple(nn.Conv3d), Conv2Plus1D(nn.Sequential) and a 'same'-padded Conv3d subclass: every conv is a
    layer (op_types 'Conv3d' and the subclass's own name select it) and the net loses what the same net of plain
    nn.Conv3d loses."""
    x = torch.randn(2, 3, 4, 16, 16)
    model = VideoResNetLike(builder).eval()
    session = fxprune.prepare(model, {"rules": [{"sparsity": 0.5, "op_types": ["Conv3d"]}]}, x)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == (18 if builder == "r2plus1d" else 10)  # stem, 4 blocks x 2, one downsample
    assert sorted(layer.name for layer in session.layers) == sorted(convs)
    if builder != "r2plus1d":  # the blocks' convs (4 blocks x 2) answer to their own class's name too
        own = type(model.layers[0].conv1[0]).__name__
        assert len(fxprune.prepare(model, {"rules": [{"sparsity": 0.5, "op_types": [own]}]}, x).layers) == 8
    torch.manual_seed(0)
    result = _compile(model, {"sparsity": 0.5}, x)
    check_result(result, (torch.randn(3, 3, 4, 16, 16),))
    torch.manual_seed(0)
    plain = _compile(VideoResNetLike(builder, plain=True).eval(), {"sparsity": 0.5}, x)
    assert abs(_removed(result) - _removed(plain)) <= 0.05 * _removed(plain), (_removed(result), _removed(plain))
    assert result.report.mac_reduction > 0.5
    if builder == "r3d":
        _exports_with_both(result.model, (x,), tmp_path, "r3d")


# -- class 6: nn.MultiheadAttention's heads ---------------------------------------------------------------------

@pytest.mark.slow
def test_multihead_attention_heads_prune_as_hand_written_attention(tmp_path) -> None:
    """torchvision's ViT (nn.MultiheadAttention, need_weights=False) loses what the same network with the attention
    written by hand loses; the pruned graph runs multi_head_attention over the sliced tensors and exports."""
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(0)
    model = TorchvisionViTLike().eval()
    plain = TorchvisionViTLike(plain=True).eval().load_mha_weights(model)
    result, by_hand = _compile(model, {"sparsity": 0.5}, x), _compile(plain, {"sparsity": 0.5}, x)
    check_result(result, (torch.randn(3, 3, 16, 16),))
    assert abs(_removed(result) - _removed(by_hand)) <= 0.05 * _removed(by_hand), (_removed(result), _removed(by_hand))
    attn = result.model.get_submodule("layers.0.self_attention")
    assert attn.in_proj_weight.shape == (48, 32) and attn.out_proj.weight.shape == (32, 16)
    assert "attention heads: 4 units removed in 2 group(s)" in result.report.notes
    _exports_with_both(result.model, (x,), tmp_path, "mha")
    row = fxprune.rules.RULES.pop(nn.MultiheadAttention)
    try:
        with pytest.warns(UserWarning, match="torch.nn.modules.activation.MultiheadAttention: 2 node"):
            barrier = fxprune.compile(model, {"sparsity": 0.5}, x)
    finally:
        fxprune.register_rule(nn.MultiheadAttention, row)
    assert _removed(barrier) < 0.8 * _removed(result)


class _MHAVariant(nn.Module):
    def __init__(self, batch_first: bool = True, bias: bool = True, add_bias_kv: bool = False,
                 add_zero_attn: bool = False, masks: bool = False, read_weights: bool = False) -> None:
        super().__init__()
        self.batch_first, self.masks, self.read_weights = batch_first, masks, read_weights
        self.fc0 = nn.Linear(16, 32)
        self.attn = nn.MultiheadAttention(32, 4, bias=bias, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn,
                                          batch_first=batch_first)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 3)
        self.register_buffer("causal", torch.ones(6, 6, dtype=torch.bool).triu(1))  # sequences of 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc0(x)
        h = h if self.batch_first else h.transpose(0, 1)
        kwargs: dict[str, Any] = {}
        if self.masks:  # a causal mask, and padding where the first feature is large (never a whole row)
            kwargs["attn_mask"] = self.causal
            kwargs["key_padding_mask"] = (x[..., 0] > 1.0) & (torch.arange(6) > 0)
        out, weights = self.attn(h, h, h, **kwargs)  # need_weights defaults to True
        out = out if self.batch_first else out.transpose(0, 1)
        y = self.fc2(torch.relu(self.fc1(out))).mean(1)
        return y + weights.sum((1, 2))[:, None] if self.read_weights else y


@pytest.mark.parametrize("variant", [{}, {"batch_first": False}, {"bias": False}, {"masks": True},
                                     {"add_bias_kv": True, "add_zero_attn": True}, {"read_weights": True}])
def test_multihead_attention_variants_verify(variant: dict[str, Any]) -> None:
    """masked == pruned across MHA's options; averaged attention weights that are read keep the heads (named)."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    result = _compile(_MHAVariant(**variant).eval(), {"sparsity": 0.5}, x)
    check_result(result, (torch.randn(3, 6, 16),))
    heads = result.model.get_submodule("attn").out_proj.weight.shape[1]
    if variant.get("read_weights"):
        assert heads == 32
        assert any("need_weights=True" in r for g in result.masks.graph.groups for r in g.reasons)
    else:
        assert heads == 16


# -- class 8: the hidden size of a CNN with LayerNorm over channels -----------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext", "timm_vit"])
def test_report_estimates_what_prune_hidden_would_cut(name: str) -> None:
    """Kept by default (pruning it changes what the norm computes), the hidden size gets one line saying how much
    more prune_hidden=True would remove; on these models it is within 5 points of what it does remove."""
    factory, x = {"convnext": (ConvNeXtLike, torch.randn(2, 3, 32, 32)),
                  "timm_vit": (TimmViTLike, torch.randn(2, 3, 16, 16))}[name]
    torch.manual_seed(0)
    model = factory().eval()
    kept = _compile(model, {"sparsity": 0.5}, x)
    line = [n for n in kept.report.notes if "prune_hidden=True would also remove" in n]
    assert len(line) == 1 and line[0] in str(kept.report), kept.report.notes
    macs, params = (float(v) for v in re.findall(r"about (\d+)% of MACs \((\d+)% of params\)", line[0])[0])
    pruned = _compile(model, {"sparsity": 0.5, "prune_hidden": True}, x)
    before = kept.report
    actual_macs = 100 * (before.macs_after - pruned.report.macs_after) / before.macs_before
    actual_params = 100 * (before.params_after - pruned.report.params_after) / before.params_before
    assert actual_macs > 10 and abs(macs - actual_macs) <= 5 and abs(params - actual_params) <= 5, (
        line[0], actual_macs, actual_params)
