"""The rule table: everything fxprune knows about an op, one row per op, keyed by every spelling of it.

A row is a `Rule` (hooks get a context object, all defined in `fxprune.rules.context`):

- `couple(c: RuleContext)` links the channels of the op's inputs, outputs and parameters. Any dimension
  the rule does not mention is frozen: channels only flow where a rule says so.
- `rewrite(c: RewriteContext)` (optional) fixes what the speedup pass makes stale once channels are
  gone: module attributes (`out_channels`, `groups`, ...) and shape constants held in the node's arguments.
- `macs(c: NodeView) -> int` (optional) counts multiply-accumulates from the shapes of the traced run.
- `out_param` names the parameter dimension that holds a layer's output channels (for config
  selection: `op_types=['Conv2d']` selects the group of `conv.weight` dim 0). For a function spelling
  (`F.linear`, `aten.addmm`) the weight is positional arg `weight_arg`.
- `mask(c: MaskContext)` (optional) makes the masked model compute what the pruned one will where zeroing
  inputs is not enough (a norm or a mean over a pruned dim divides by the channel count): the mask pass
  calls it and it swaps the node for a masked twin; speedup swaps it back.

Spellings (keys), all of one op in ONE row (`register_rule([...], rule)`):

- a module class (`nn.Conv2d`), for `call_module` nodes (a parametrized module is seen as its class);
- a function (`F.relu`, `torch.add`, `operator.add`), for `call_function` nodes of torch.fx;
- a Tensor method name (`"view"`; never contains a dot), for `call_method` nodes;
- an ATen overload (`torch.ops.aten.relu.default`), as the torch.export front end spells ops;
- the qualified name `"package.module.name"` of a function or class of a library fxprune does not
  import (`"torchvision.ops.stochastic_depth.stochastic_depth"`): a node whose target has no row of its
  own is looked up by `f"{target.__module__}.{target.__qualname__}"`. Names are matched exactly, never
  by substring.

Registering a spelling that already has a row raises `fxprune.errors.RuleError` unless `replace=True`.

Errors inside a rule: a `couple` hook that meets a use of its op it cannot describe raises `NotHandled`;
the node becomes a barrier (its groups are kept whole) and the compile's one warning names it. Any other
exception is a bug in the rule: fxprune raises `fxprune.errors.RuleError` naming the node and the rule.

Rows by family: `layers` (conv, linear, matmul, norms, embedding, attention), `attention` (nn.MultiheadAttention's
heads), `shape` (cat, split,
slicing and indexing, reshape, permute, expand, reductions, pooling, softmax), `pointwise` (activations,
arithmetic, dropout and drop-path, casts, created tensors).
"""

from __future__ import annotations

from ..errors import NotHandled
from . import attention, layers, pointwise, shape
from .context import BuildOptions, MaskContext, NodeView, RewriteContext, RuleContext, Slot
from .couplings import all_but, along_dims, created, elementwise, first_input, metadata, opaque, per_channel
from .pointwise import ELEMENTWISE, PER_SAMPLE
from .table import RULES, Rule, lookup, module_class, register_rule, spelling, spelling_name

__all__ = [
    "Rule", "RULES", "register_rule", "lookup", "spelling", "spelling_name", "module_class", "NotHandled",
    "RuleContext", "NodeView", "MaskContext", "RewriteContext", "Slot", "BuildOptions",
    "elementwise", "metadata", "along_dims", "all_but", "per_channel", "first_input", "created", "opaque",
    "ELEMENTWISE", "PER_SAMPLE", "layers", "shape", "pointwise", "attention",
]
