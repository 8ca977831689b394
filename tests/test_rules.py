"""The rule table as a package: one row per op with every spelling, refused duplicates, qualified-name keys,
a rule's own bug raised as RuleError naming the node, NotHandled as a named barrier, quiet constant slices."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.errors import FxPruneError, RuleError
from fxprune.passes.trace import trace
from fxprune.rules import NotHandled, RuleContext, elementwise, lookup, register_rule

aten = torch.ops.aten


@torch.fx.wrap
def _gate(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(_gate(self.a(x)))


@pytest.fixture
def gate_rule():
    """Register a rule for `_gate` for one test, and take it out again."""
    def register(rule):
        register_rule(_gate, rule)
    yield register
    fxprune.rules.RULES.pop(_gate, None)


@pytest.mark.parametrize("spellings", [
    [nn.ReLU, F.relu, torch.relu, "relu", aten.relu.default],
    [nn.Conv2d, F.conv2d, aten.conv2d.default, aten.convolution.default],
    [nn.Linear, F.linear, aten.linear.default],
    [torch.add, operator_add := __import__("operator").add, "add", aten.add.Tensor],
    ["view", aten.view.default],
    [nn.Softmax, F.softmax, torch.softmax, "softmax", aten._softmax.default],
    [nn.LayerNorm, F.layer_norm, aten.layer_norm.default],
    [nn.BatchNorm2d, F.batch_norm, aten.batch_norm.default],
    [torch.cat, aten.cat.default],
])
def test_every_spelling_of_an_op_is_one_row(spellings: list) -> None:
    rows = {id(lookup(s)) for s in spellings}
    assert None not in {lookup(s) for s in spellings}
    assert len(rows) == 1, [fxprune.rules.spelling_name(s) for s in spellings]


def test_a_second_row_for_a_spelling_is_refused_unless_replace() -> None:
    row = lookup(torch.relu)
    with pytest.raises(RuleError, match=r"torch\.relu already has a rule; pass replace=True"):
        register_rule([_gate, torch.relu], elementwise)
    assert lookup(_gate) is None, "a refused registration registers nothing"
    try:
        register_rule(torch.relu, fxprune.rules.first_input, replace=True)
        assert lookup(torch.relu).couple is fxprune.rules.first_input
    finally:
        register_rule(torch.relu, row, replace=True)
    assert lookup(torch.relu) is row


def test_a_bug_in_a_rule_is_a_rule_error_naming_node_and_rule(gate_rule) -> None:
    def buggy(c: RuleContext) -> None:
        c.link((c.out, 1), ("no such tensor", 0))  # a KeyError: a bug, not a use the rule declines

    gate_rule(buggy)
    model = _Gated().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuleError) as info:
        fxprune.compile(model, {"sparsity": 0.5}, torch.randn(2, 3, 8, 8))
    text = str(info.value)
    assert "_gate" in text and "buggy" in text, text  # the node's target and the rule's hook
    assert "call_function[target=" in text  # node_context
    assert "raise fxprune.rules.NotHandled" in text  # the fix
    assert isinstance(info.value.__cause__, KeyError)
    assert isinstance(info.value, FxPruneError)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_not_handled_makes_a_barrier_named_once_in_the_warning(gate_rule) -> None:
    def declines(c: RuleContext) -> None:
        raise NotHandled("gates of this shape")

    gate_rule(declines)
    with pytest.warns(UserWarning, match="does not handle this use \\(gates of this shape\\): 1 node") as record:
        result = fxprune.compile(_Gated().eval(), {"sparsity": 0.5}, torch.randn(2, 3, 8, 8))
    barrier_warnings = [w for w in record if str(w.message).startswith("fxprune has no rule")]
    assert len(barrier_warnings) == 1 and "gates of this shape" in str(barrier_warnings[0].message)
    assert result.model.a.out_channels == 8  # the barrier keeps conv a's group whole


def test_built_in_rules_decline_with_not_handled() -> None:
    """A 1-D matmul operand: the matmul rule declines (a barrier with its reason), it does not crash."""

    class Vec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.v = nn.Linear(6, 8), nn.Parameter(torch.randn(8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(torch.relu(self.fc(x)), self.v)

    with pytest.warns(UserWarning, match="1-D matmul operands"):
        result = fxprune.compile(Vec().eval(), {"sparsity": 0.5}, torch.randn(4, 6))
    assert result.model.fc.out_features == 8


def test_qualified_name_keys_match_exactly() -> None:
    """A function of a library fxprune cannot import is keyed by its `module.qualname`, never by substring."""

    def op(x: torch.Tensor) -> torch.Tensor:
        return x

    op.__module__, op.__qualname__ = "somelib.ops.gates", "op"
    try:
        register_rule("somelib.ops.gates.op", elementwise)
        assert lookup(op) is lookup("somelib.ops.gates.op") is not None
        op.__qualname__ = "op2"
        assert lookup(op) is None
    finally:
        fxprune.rules.RULES.pop("somelib.ops.gates.op")
    assert lookup("torchvision.ops.stochastic_depth.stochastic_depth") is lookup(torch.relu)


def test_rules_package_imports_nothing_above_it() -> None:
    """Imports go one way: the rule table imports only itself and fxprune.errors (graph, masks, passes import
    it, never the reverse, except names for type checking)."""
    root = Path(fxprune.__file__).parent / "rules"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: `if TYPE_CHECKING:` blocks are skipped
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                allowed = node.level == 1 or (node.level == 2 and node.module == "errors")
                assert allowed, f"{path.name} imports from {'.' * node.level}{node.module}"


def test_a_barrier_that_keeps_no_parameter_whole_is_quiet() -> None:
    """An op no rule knows (aten.flip), on a buffer whose groups hold no parameter, costs no channel: no warning.
    The same op on a conv's output keeps the conv's group whole and is named."""

    class Flips(nn.Module):
        def __init__(self, on_activations: bool) -> None:
            super().__init__()
            self.on_activations = on_activations
            self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
            self.register_buffer("table", torch.linspace(0, 1, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.conv(x))
            y = torch.flip(y, [1]) if self.on_activations else y + torch.flip(self.table, [0]).sum()
            return self.head(y)

    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        quiet = fxprune.compile(trace(Flips(False).eval(), (x,), frontend="export"), {"sparsity": 0.5}, x)
    assert quiet.report.unsupported == ""
    assert any("no rule for aten.flip.default" in r for g in quiet.masks.graph.groups for r in g.reasons)
    assert quiet.model.conv.weight.shape[0] == 4
    with pytest.warns(UserWarning, match="aten.flip.default: 1 node"):
        named = fxprune.compile(trace(Flips(True).eval(), (x,), frontend="export"), {"sparsity": 0.5}, x)
    assert named.model.conv.weight.shape[0] == 8


@pytest.mark.slow
def test_bert_compiles_without_a_warning() -> None:
    """Hugging Face BERT slices its position-ids buffer to the sequence length (bounds computed at run time):
    not a barrier and not a warning."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fxprune.compile(model, {"sparsity": 0.5}, torch.randint(0, 100, (2, 8)))
    ours = [w for w in record if "fxprune" in str(w.message) or w.category is UserWarning]
    assert not ours, [str(w.message)[:300] for w in ours]
    assert result.report.unsupported == "" and not result.masks.graph.unsupported
    assert result.report.macs_after < result.report.macs_before
