"""The channel-dependency graph.

Every tensor dimension in the traced graph is a *slot*: `Slot(tensor, dim)`, where `tensor` is a node
name (`"conv1"`, or `"split[1]"` for the second item of a tuple output) or a parameter/buffer
qualname prefixed with `@` (`"@layer1.0.conv1.weight"`). Each slot has one integer id per element
(channel). Rules link elements of slots ("removing conv1's output channel 3 removes bn1's channel 3
and the input channel 3 of conv2's weight"); the connected components of those links are the atomic
units of pruning (*classes*); the connected components of slots are *groups*.

A slot nobody links is frozen by default: channels only move where a rule says how.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import networkx as nx
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch
import torch.fx
import torch.nn.utils.parametrize as parametrize

__all__ = [
    "Slot", "Group", "DependencyGraph", "NodeView", "RuleContext", "BuildOptions", "tensor_shapes", "spelling",
    "op_name", "module_class",
]


class Slot(NamedTuple):
    """One dimension of one tensor: a node output (`"name"` / `"name[k]"`) or a param (`"@qualname"`)."""

    tensor: str
    dim: int


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


def module_class(module: torch.nn.Module) -> type:
    """A module's class as the rule table knows it (seen through torch parametrizations)."""
    cls = type(module)
    return cls.__bases__[0] if parametrize.is_parametrized(module) else cls


def rule_nodes(gm: torch.fx.GraphModule, hook: str) -> Iterator[tuple[torch.fx.Node, Any]]:
    """(node, rule) for every op node whose rule has the given hook ('rewrite', 'macs', 'mask', ...)."""
    from .rules import lookup

    for node in list(gm.graph.nodes):
        if node.op in ("call_module", "call_function", "call_method"):
            rule = lookup(spelling(node, gm))
            if rule is not None and getattr(rule, hook, None) is not None:
                yield node, rule


def spelling(node: torch.fx.Node, gm: torch.fx.GraphModule) -> Any:
    """The rule-table key of a node: module class, function object, method name or ATen overload."""
    if node.op == "call_module":
        return module_class(gm.get_submodule(node.target))
    return node.target


def op_name(target: Any) -> str:
    """Short name of a call target: `"transpose"` for `Tensor.transpose`, `torch.transpose` and
    `aten.transpose.int` alike, so one rule reads every spelling of its op the same way."""
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return target._opname
    return getattr(target, "__name__", str(target))


def _spelling_name(key: Any) -> str:
    if isinstance(key, str):
        return f"Tensor.{key}"
    if isinstance(key, torch._ops.OpOverload):
        return str(key)
    module = getattr(key, "__module__", "") or ""
    return f"{module}.{getattr(key, '__qualname__', getattr(key, '__name__', key))}".lstrip(".")


@dataclass
class Group:
    """A connected set of slots whose channels must be removed together.

    `classes` are the atomic pruning units (element components); `slot_class[slot]` maps each element
    of a slot to its class index (0..n_units-1). `frozen[i]` says class i must be kept.
    """

    id: int
    slots: list[Slot]
    slot_class: dict[Slot, np.ndarray]
    frozen: np.ndarray
    has_param: np.ndarray
    reasons: list[str] = field(default_factory=list)
    roles: set[str] = field(default_factory=set)

    @property
    def n_units(self) -> int:
        return len(self.frozen)

    @property
    def prunable(self) -> np.ndarray:
        """Bool per class: not frozen and owns at least one parameter element."""
        return ~self.frozen & self.has_param

    def param_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.tensor.startswith("@")]


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


class _SlotUnion:
    """Slot-level union-find with a 'fully frozen' flag, for decisions taken while building."""

    def __init__(self) -> None:
        self.parent: dict[Slot, Slot] = {}
        self.frozen: set[Slot] = set()

    def find(self, s: Slot) -> Slot:
        self.parent.setdefault(s, s)
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: Slot, b: Slot) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb
            if ra in self.frozen:
                self.frozen.add(rb)

    def freeze(self, s: Slot) -> None:
        self.frozen.add(self.find(s))

    def is_frozen(self, s: Slot) -> bool:
        return self.find(s) in self.frozen


class NodeView:
    """Read access to one node for rules: its arguments, tensor keys and shapes.

    Tensor keys: `c.out` (the node's output), `c.tensor(arg)` (an input node), `c.param(attr)` (a
    parameter or buffer of the called module, `"@qualname"`). Shapes come from `shapes`.
    """

    def __init__(self, gm: torch.fx.GraphModule, node: torch.fx.Node, shapes: dict[str, tuple[int, ...]]):
        self.gm = gm
        self.node = node
        self.shapes = shapes
        self.module = gm.get_submodule(node.target) if node.op == "call_module" else None

    @property
    def out(self) -> str | None:
        return self.node.name if self.node.name in self.shapes else None

    def target_name(self) -> str:
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
            return _fetch_attr(self.gm, key[1:])
        node = next(n for n in self.gm.graph.nodes if n.name == key)
        return _fetch_attr(self.gm, node.target)

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self.shapes and key.startswith("@"):
            return tuple(self.value(key).shape)
        return self.shapes[key]

    def ndim(self, key: str) -> int:
        return len(self.shape(key))


class RuleContext(NodeView):
    """What a rule sees of one node while the graph is built, and the calls that couple channels.

    Slots are `(key, dim)`; negative dims count from the end.
    """

    def __init__(self, graph: DependencyGraph, node: torch.fx.Node) -> None:
        super().__init__(graph.gm, node, graph.shapes)
        self.g = graph
        self.options = graph.options
        self.touched: set[Slot] = set()
        self._ins = set(self.inputs())
        self._outs = set(tensor_shapes(node))

    def param(self, attr: str) -> str | None:
        key = super().param(attr)
        if key is not None:
            self.g.add_tensor(key, tuple(self.value(key).shape))
        return key

    def slot(self, key: str, dim: int) -> Slot:
        return Slot(key, dim % len(self.g.shapes[key]))

    # -- coupling ------------------------------------------------------------------------------
    def link(self, a: tuple[str, int], b: tuple[str, int], idx: np.ndarray | None = None) -> None:
        """Couple slot b's element i with slot a's element idx[i] (idx=None: the identity)."""
        sa, sb = self.slot(*a), self.slot(*b)
        self.touched.update((sa, sb))
        size_a, size_b = self.g.shapes[sa.tensor][sa.dim], self.g.shapes[sb.tensor][sb.dim]
        if idx is None:
            if size_a != size_b:
                raise ValueError(f"link of unequal sizes {sa}={size_a} and {sb}={size_b}")
            idx = np.arange(size_a)
        self.g.add_link(sa, sb, np.asarray(idx, dtype=np.int64))
        for s, other in ((sa, sb), (sb, sa)):  # an input channel that does not become an output channel
            if s.tensor in self._ins and other.tensor not in self._outs:
                self.g.contracted.add(s)

    def same(self, a: str, b: str, dims: Iterator[int] | None = None) -> None:
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


class DependencyGraph:
    """Slots, links and frozen elements of one traced GraphModule, and the groups they form.

    Build with `DependencyGraph.build(gm)`; `gm` must carry shape metadata (see `passes.trace`).
    """

    def __init__(self, gm: torch.fx.GraphModule, options: BuildOptions | None = None) -> None:
        self.gm = gm
        self.options = options or BuildOptions()
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.offsets: dict[Slot, int] = {}
        self.n_elements = 0
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._frozen: list[tuple[Slot, np.ndarray | None, str]] = []
        self.slot_union = _SlotUnion()
        self.coarse = nx.Graph()
        self.unsupported: dict[str, list[str]] = {}
        #: input slots an op contracts or sums over (conv/linear/matmul inputs, `reduce`): the mask pass zeroes these
        self.contracted: set[Slot] = set()
        self.roles: dict[Slot, str] = {}
        self.groups: list[Group] = []
        self.group_of: dict[Slot, int] = {}

    # -- building --------------------------------------------------------------------------------
    def add_tensor(self, key: str, shape: tuple[int, ...]) -> None:
        if key in self.shapes:
            return
        self.shapes[key] = shape
        for d, size in enumerate(shape):
            s = Slot(key, d)
            self.offsets[s] = self.n_elements
            self.n_elements += size
            self.coarse.add_node(s)

    def add_link(self, a: Slot, b: Slot, idx: np.ndarray) -> None:
        ids_b = self.offsets[b] + np.arange(len(idx))
        self._edges.append((self.offsets[a] + idx, ids_b))
        self.slot_union.union(a, b)
        self.coarse.add_edge(a, b)

    def add_freeze(self, s: Slot, reason: str, elements: np.ndarray | None) -> None:
        self._frozen.append((s, elements, reason))
        if elements is None:
            self.slot_union.freeze(s)

    def _freeze_all(self, keys: list[str], reason: str) -> None:
        for key in keys:
            for d in range(len(self.shapes[key])):
                self.add_freeze(Slot(key, d), reason, None)

    @classmethod
    def build(cls, gm: torch.fx.GraphModule, options: BuildOptions | None = None) -> DependencyGraph:
        """Run every node's rule over a shape-annotated GraphModule and form the groups."""
        from .rules import lookup

        g = cls(gm, options)
        for node in gm.graph.nodes:
            for key, shape in tensor_shapes(node).items():
                g.add_tensor(key, shape)
        for node in gm.graph.nodes:
            g._apply(node, lookup)
        g._link_aliases()
        g._form_groups()
        return g

    def _link_aliases(self) -> None:
        """Tied weights: keys naming one tensor (`@a.weight` is `@b.weight`) lose the same elements."""
        by_tensor: dict[int, list[str]] = {}
        for key in self.shapes:
            if key.startswith("@"):
                value = _fetch_attr(self.gm, key[1:])
                if isinstance(value, torch.Tensor):
                    by_tensor.setdefault(id(value), []).append(key)
        for keys in by_tensor.values():
            for other in keys[1:]:
                for d in range(len(self.shapes[keys[0]])):
                    self.add_link(Slot(keys[0], d), Slot(other, d), np.arange(self.shapes[keys[0]][d]))

    def _apply(self, node: torch.fx.Node, lookup: Callable[[Any], Any]) -> None:
        outs = [k for k in tensor_shapes(node) if k in self.shapes]
        if node.op == "placeholder":
            self._freeze_all(outs, f"model input {node.name}")
            return
        if node.op == "output":
            keys: list[str] = []
            torch.fx.node.map_arg(node.args, lambda n: keys.append(n.name))
            self._freeze_all([k for k in keys if k in self.shapes], "reaches the model output")
            return
        if node.op == "get_attr":
            if isinstance(_fetch_attr(self.gm, node.target), torch.Tensor) and outs:
                c = RuleContext(self, node)
                key = f"@{node.target}"
                self.add_tensor(key, self.shapes[node.name])
                c.same(key, node.name)
            return
        key = spelling(node, self.gm)
        rule = lookup(key)
        c = RuleContext(self, node)
        ins = c.inputs()
        if not ins and not outs:  # arithmetic on sizes and other non-tensor values
            return
        if rule is None:
            self.unsupported.setdefault(_spelling_name(key), []).append(node.format_node())
            self._freeze_all(ins + outs, f"no rule for {_spelling_name(key)}")
            return
        try:
            rule.couple(c)
        except Exception as e:  # a rule that cannot handle this use of its op makes it a barrier
            why = f"the rule for {_spelling_name(key)} does not handle this use ({e})"
            self.unsupported.setdefault(why, []).append(node.format_node())
            self._freeze_all(ins + outs, why)
            return
        params = []
        if c.module is not None:
            params = [f"@{node.target}.{n}" for n, _ in c.module.named_parameters(recurse=False)]
            params += [f"@{node.target}.{n}" for n, _ in c.module.named_buffers(recurse=False)]
        for k in ins + outs + [p for p in params if p in self.shapes]:
            for d in range(len(self.shapes[k])):
                if Slot(k, d) not in c.touched:
                    self.add_freeze(Slot(k, d), f"dim {d} not handled by the rule for {_spelling_name(key)}",
                                    None)

    def _form_groups(self) -> None:
        n = self.n_elements
        if self._edges:
            a = np.concatenate([e[0] for e in self._edges])
            b = np.concatenate([e[1] for e in self._edges])
        else:
            a = b = np.zeros(0, dtype=np.int64)
        adj = scipy.sparse.coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
        _, labels = scipy.sparse.csgraph.connected_components(adj, directed=False)
        frozen_el = np.zeros(n, dtype=bool)
        reasons_by_slot: dict[Slot, list[str]] = {}
        for s, elements, reason in self._frozen:
            ids = self.offsets[s] + (np.arange(self.shapes[s.tensor][s.dim]) if elements is None
                                     else np.asarray(elements))
            frozen_el[ids] = True
            reasons_by_slot.setdefault(s, []).append(reason)
        frozen_label = np.zeros(n, dtype=bool)
        frozen_label[labels[frozen_el]] = True
        param_label = np.zeros(n, dtype=bool)
        for s, off in self.offsets.items():
            if s.tensor.startswith("@"):
                param_label[labels[off:off + self.shapes[s.tensor][s.dim]]] = True

        for gid, comp in enumerate(sorted(nx.connected_components(self.coarse), key=self._order)):
            slots = sorted(comp, key=self._slot_order)
            ranges = [self._ids(s) for s in slots]
            classes = np.unique(labels[np.concatenate(ranges)]) if ranges else np.zeros(0, np.int64)
            slot_class = {s: np.searchsorted(classes, labels[r]) for s, r in zip(slots, ranges)}
            reasons = sorted({r for s in slots for r in reasons_by_slot.get(s, [])})
            roles = {self.roles[s] for s in slots if s in self.roles}
            self.groups.append(Group(gid, slots, slot_class, frozen_label[classes], param_label[classes],
                                     reasons, roles))
            for s in slots:
                self.group_of[s] = gid

    # -- queries ---------------------------------------------------------------------------------
    def _ids(self, s: Slot) -> np.ndarray:
        return self.offsets[s] + np.arange(self.shapes[s.tensor][s.dim])

    def _slot_order(self, s: Slot) -> tuple[int, int]:
        return (self.offsets[s], s.dim)

    def _order(self, comp: set[Slot]) -> int:
        return min(self.offsets[s] for s in comp)

    def unsupported_message(self) -> str:
        """One aggregated text naming every node no rule understood, and how to add a rule."""
        if not self.unsupported:
            return ""
        lines = [f"  {name}: {len(nodes)} node(s), e.g. {nodes[0]}" for name, nodes in self.unsupported.items()]
        return (
            "fxprune has no rule for these ops; channels do not propagate through them and the groups "
            "they touch are kept whole:\n" + "\n".join(lines) +
            "\nTo prune through one, register a rule: fxprune.register_rule(<op>, fxprune.rules.elementwise)"
            " (or a rule of your own; see fxprune/rules.py)."
        )


def _fetch_attr(gm: torch.nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj

