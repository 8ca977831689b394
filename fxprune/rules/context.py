"""The context API rule hooks see: one class per hook, all in this file.

A rule's hooks receive one of these as `c` (see `fxprune.rules.Rule`):

- `couple(c: RuleContext) -> None`, while the dependency graph is built: read the node, then
  `link`/`same`/`broadcast` dims together, `freeze` or `touch` the rest.
- `macs(c: NodeView) -> int`, for the report: read shapes only.
- `mask(c: MaskContext) -> None`, in the mask pass: `keep_buffer` and `swap` the node for a masked twin.
- `rewrite(c: RewriteContext) -> None`, in the speedup pass: `new_shape`, `kept`, `set_arg`, `replace`.

Tensor keys are strings: a node's output (`c.out`, `"name"`, `"name[k]"` for item k of a tuple) or a
parameter/buffer qualname prefixed with `@` (`c.param("weight")` is `"@layer1.conv.weight"`). A slot is
`(key, dim)`; negative dims count from the end.

This module sits at the bottom of fxprune with the rest of the rule table: it imports no other fxprune
module at run time (the graph and masks it is handed are only named for type checking).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.fx

from ..errors import NotHandled

if TYPE_CHECKING:
    from ..graph import DependencyGraph
    from ..masks import Masks

__all__ = [
    "Slot", "BuildOptions", "NodeView", "RuleContext", "MaskContext", "RewriteContext", "tensor_shapes", "op_name",
    "fetch_attr",
]


class Slot(NamedTuple):
    """One dimension of one tensor: a node output (`"name"` / `"name[k]"`) or a param (`"@qualname"`)."""

    tensor: str
    dim: int


@dataclass(frozen=True)
class BuildOptions:
    """Choices the rules read while the graph is built (from the config).

    `split`: when a view splits one dim into (heads, head_dim), channels follow the heads factor
    (`"heads"`, where the view's sizes can be rewritten) or the innermost one (`"head_dim"`).
    `prune_hidden`: let norms over the hidden size (LayerNorm, RMSNorm) couple their channels
    instead of freezing them; the pruned model then normalises over the kept channels only.
    """

    split: str = "heads"
    prune_hidden: bool = False


def tensor_shapes(node: torch.fx.Node) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors a node produces, keyed by tensor key, from the traced run's metadata."""
    meta = node.meta.get("tensor_meta", node.meta.get("val"))
    if meta is None:
        return {}
    if hasattr(meta, "shape"):
        return {node.name: tuple(meta.shape)}
    if isinstance(meta, (tuple, list)):
        return {
            f"{node.name}[{k}]": tuple(m.shape) for k, m in enumerate(meta) if hasattr(m, "shape")
        }
    return {}


def op_name(target: Any) -> str:
    """Short name of a call target: `"transpose"` for `Tensor.transpose`, `torch.transpose` and
    `aten.transpose.int` alike, so one rule reads every spelling of its op the same way."""
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return target._opname
    return getattr(target, "__name__", str(target))


def fetch_attr(module: torch.nn.Module, target: str) -> Any:
    """The attribute at a dotted path (`"layer1.0.conv1.weight"`) under `module`."""
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class NodeView:
    """Read access to one node: its arguments, tensor keys and shapes (what the `macs` hook gets).

    Tensor keys: `c.out` (the node's output), `c.tensor(arg)` (an input node), `c.param(attr)` (a
    parameter or buffer of the called module, `"@qualname"`). Shapes come from `shapes`.
    """

    def __init__(self, gm: torch.fx.GraphModule, node: torch.fx.Node, shapes: Mapping[str, tuple[int, ...]],
                 modules: Mapping[str, torch.nn.Module] | None = None) -> None:
        """`modules`: `fxprune.rules.table.module_map(gm)`, for a caller that visits many nodes."""
        self.gm = gm
        self.node = node
        self.shapes = shapes
        #: the called module for a `call_module` node, else None
        self.module: torch.nn.Module | None = None
        if node.op == "call_module":
            self.module = modules[node.target] if modules is not None else gm.get_submodule(node.target)

    @property
    def out(self) -> str | None:
        """Key of the node's output tensor (None when it produces a tuple or no tensor)."""
        return self.node.name if self.node.name in self.shapes else None

    def target_name(self) -> str:
        """The op's short name, the same for every spelling (see `op_name`)."""
        return op_name(self.node.target)

    def arg(self, i: int, name: str | None = None, default: Any = None) -> Any:
        """Positional arg i, or keyword `name`, or `default`."""
        if i < len(self.node.args):
            return self.node.args[i]
        return self.node.kwargs.get(name, default) if name else default

    def tensor(self, value: Any) -> str | None:
        """The tensor key of an argument (a Node producing one tensor), else None."""
        if isinstance(value, torch.fx.Node) and value.name in self.shapes:
            return value.name
        return None

    def inputs(self) -> list[str]:
        """Tensor keys of every tensor argument, in order."""
        keys: list[str] = []
        torch.fx.node.map_arg((self.node.args, self.node.kwargs), lambda n: keys.append(n.name))
        return [k for k in keys if k in self.shapes]

    def param(self, attr: str) -> str | None:
        """Key of the called module's parameter or buffer `attr`, or None if it has none."""
        if self.module is None or getattr(self.module, attr, None) is None:
            return None
        return f"@{self.node.target}.{attr}"

    def value(self, key: str) -> torch.Tensor:
        """The current tensor of a parameter key, or of a get_attr node's key."""
        if key.startswith("@"):
            return fetch_attr(self.gm, key[1:])
        node = next(n for n in self.gm.graph.nodes if n.name == key)
        return fetch_attr(self.gm, node.target)

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of a tensor key in the traced run."""
        if key not in self.shapes and key.startswith("@"):
            return tuple(self.value(key).shape)
        return self.shapes[key]

    def ndim(self, key: str) -> int:
        return len(self.shape(key))


class RuleContext(NodeView):
    """What a rule's `couple` hook sees of one node while the graph is built, and the calls that couple
    channels. Any slot of the node's tensors that the hook neither links, freezes nor touches is frozen.

    A hook that meets a use of its op it cannot describe raises `fxprune.rules.NotHandled`: the node
    becomes a barrier named in the compile's warning. Any other exception is a bug of the rule and is
    raised as `fxprune.errors.RuleError` naming the node.
    """

    def __init__(self, graph: DependencyGraph, node: torch.fx.Node,
                 modules: Mapping[str, torch.nn.Module] | None = None) -> None:
        super().__init__(graph.gm, node, graph.shapes, modules)
        self.g = graph
        self.options: BuildOptions = graph.options
        self.touched: set[Slot] = set()
        self._ins = set(self.inputs())
        self._outs = set(tensor_shapes(node))

    def param(self, attr: str) -> str | None:
        key = super().param(attr)
        if key is not None:
            self.g.add_tensor(key, tuple(getattr(self.module, attr).shape))  # `value(key)`, without the path walk
        return key

    def slot(self, key: str, dim: int) -> Slot:
        """The slot (key, dim), with a negative dim made positive."""
        return Slot(key, dim % len(self.g.shapes[key]))

    # -- coupling ------------------------------------------------------------------------------
    def link(self, a: tuple[str, int], b: tuple[str, int], idx: np.ndarray | None = None) -> None:
        """Couple slot b's element i with slot a's element idx[i] (idx=None: the identity; the two slots
        must then have the same size, else `NotHandled` is raised)."""
        sa, sb = self.slot(*a), self.slot(*b)
        self.touched.update((sa, sb))
        size_a, size_b = self.g.shapes[sa.tensor][sa.dim], self.g.shapes[sb.tensor][sb.dim]
        if idx is None and size_a != size_b:
            raise NotHandled(f"link of unequal sizes {tuple(sa)}={size_a} and {tuple(sb)}={size_b}")
        self.g.add_link(sa, sb, None if idx is None else np.asarray(idx, dtype=np.int64))
        for s, other in ((sa, sb), (sb, sa)):  # an input channel that does not become an output channel
            if s.tensor in self._ins and other.tensor not in self._outs:
                self.g.contracted.add(s)

    def same(self, a: str, b: str, dims: Iterable[int] | None = None) -> None:
        """Couple a and b dim by dim (all dims, or `dims`), 1:1."""
        for d in dims if dims is not None else range(self.ndim(a)):
            self.link((a, d), (b, d))

    def broadcast(self, out: str, inputs: list[str]) -> None:
        """Element-wise op with numpy broadcasting: align dims from the right, skip broadcast ones."""
        for key in inputs:
            shift = self.ndim(out) - self.ndim(key)
            for d, size in enumerate(self.shape(key)):
                if size == self.shape(out)[d + shift]:
                    self.link((key, d), (out, d + shift))
                elif size == 1:
                    self.touch(key, d)

    def freeze(self, key: str, dim: int, reason: str, elements: np.ndarray | None = None) -> None:
        """Keep slot (key, dim) (or only `elements` of it) whatever the pruner says."""
        s = self.slot(key, dim)
        self.touched.add(s)
        self.g.add_freeze(s, f"{reason} ({self.node.name})", elements)

    def reduce(self, key: str, dim: int) -> None:
        """Declare that the op sums over (key, dim): removed channels must read as zero there, so the mask
        pass zeroes them, as it does for a contraction."""
        s = self.slot(key, dim)
        self.touched.add(s)
        self.g.contracted.add(s)

    def touch(self, key: str, dim: int | None = None) -> None:
        """Declare slots handled without coupling them (the op only reads metadata, or size 1)."""
        dims = range(self.ndim(key)) if dim is None else [dim]
        self.touched.update(self.slot(key, d) for d in dims)

    def role(self, key: str, dim: int, role: str) -> None:
        """Tag a slot with what it is in a transformer ("heads", "hidden"): for the report and errors."""
        self.g.roles[self.slot(key, dim)] = role

    def is_frozen(self, key: str, dim: int) -> bool:
        """Whether a slot is already known frozen as a whole (decisions for reshapes)."""
        return self.g.slot_union.is_frozen(self.slot(key, dim))


class MaskContext(NodeView):
    """What a rule's `mask` hook sees: the kept channels, and ways to swap the node for a masked twin."""

    def __init__(self, gm: torch.fx.GraphModule, node: torch.fx.Node, masks: Masks,
                 keep_buffer: Callable[[torch.fx.GraphModule, Slot], torch.fx.Node | None],
                 modules: Mapping[str, torch.nn.Module] | None = None) -> None:
        """`keep_buffer(gm, slot)` registers the 0/1 mask buffer of a slot on `gm` (or returns None where the
        slot needs none) and returns its get_attr node: the mask pass's own helper, so every mask buffer is
        made, named and later updated one way."""
        super().__init__(gm, node, masks.graph.shapes, modules)
        self.masks = masks
        self._keep_buffer = keep_buffer

    def keep_buffer(self, key: str, dim: int) -> torch.fx.Node | None:
        """A get_attr node of a 0/1 buffer shaped to broadcast along (key, dim), or None if nothing there is
        pruned (nor may be, later in the session)."""
        with self.gm.graph.inserting_before(self.node):
            return self._keep_buffer(self.gm, Slot(key, dim % len(self.shapes[key])))

    def get_attr(self, target: str) -> torch.fx.Node:
        """A get_attr node (marked as a mask node, so speedup drops it once unused) for a module attribute."""
        with self.gm.graph.inserting_before(self.node):
            node = self.gm.graph.get_attr(target)
        node.meta["fxprune_mask"] = True
        return node

    def swap(self, masked: Any, unmasked: Any, args: tuple[Any, ...], keep: torch.fx.Node) -> None:
        """Make the node `masked(*args, keep=keep)`; speedup turns it into `unmasked(*args)`."""
        self.node.meta["fxprune_unmasked"] = unmasked
        self.node.op, self.node.target = "call_function", masked
        self.node.args, self.node.kwargs = args, {**self.node.kwargs, "keep": keep}


class RewriteContext(NodeView):
    """What a rule's `rewrite` sees: old and new shapes, kept indices, and ways to edit the node."""

    def __init__(self, gm: torch.fx.GraphModule, node: torch.fx.Node, masks: Masks,
                 new: dict[str, tuple[int, ...]], modules: Mapping[str, torch.nn.Module] | None = None) -> None:
        super().__init__(gm, node, masks.graph.shapes, modules)
        self.masks = masks
        self._new = new

    def old_shape(self, key: str) -> tuple[int, ...]:
        """Shape of a tensor key before channels are removed."""
        return self.masks.graph.shapes[key]

    def new_shape(self, key: str) -> tuple[int, ...]:
        """Shape of a tensor key once channels are removed."""
        return self._new.get(key, self.masks.graph.shapes[key])

    def kept(self, key: str, dim: int) -> np.ndarray | None:
        """Indices kept along (key, dim), or None when nothing there is removed."""
        return self.masks.kept(key, dim)

    def new_index(self, key: str, dim: int, i: int) -> int:
        """Where position i (0 <= i <= size) of (key, dim) lands once channels are removed: the number of
        kept elements before it. Slice bounds, select indices and split windows use it."""
        kept = self.kept(key, dim)
        return i if kept is None else int(np.searchsorted(kept, i))

    def set_arg(self, i: int, name: str, value: Any) -> None:
        """Set positional arg i if present, else keyword `name`."""
        if i < len(self.node.args):
            args = list(self.node.args)
            args[i] = value
            self.node.args = tuple(args)
        else:
            self.node.kwargs = {**self.node.kwargs, name: value}

    def replace(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Turn the node into `call_function target(*args, **kwargs)` (e.g. chunk -> split)."""
        self.node.op, self.node.target = "call_function", target
        self.node.args, self.node.kwargs = args, kwargs
