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

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch
import torch.fx

from .errors import NotHandled, RuleError, node_context
from .rules import Rule, lookup
from .rules.context import BuildOptions, NodeView, RuleContext, Slot, fetch_attr, op_name, tensor_shapes
from .rules.table import module_class, module_map, spelling, spelling_name

__all__ = [
    "Slot", "Group", "DependencyGraph", "NodeView", "RuleContext", "BuildOptions", "tensor_shapes", "spelling",
    "op_name", "module_class", "module_map", "rule_nodes",
]


def rule_nodes(gm: torch.fx.GraphModule, hook: str,
               modules: dict[str, torch.nn.Module] | None = None) -> Iterator[tuple[torch.fx.Node, Rule]]:
    """(node, rule) for every op node whose rule has the given hook ('rewrite', 'macs', 'mask', ...).
    `modules`: `module_map(gm)` where the caller has it already."""
    if modules is None:
        modules = module_map(gm)
    for node in list(gm.graph.nodes):
        if node.op in ("call_module", "call_function", "call_method"):
            rule = lookup(spelling(node, gm, modules))
            if rule is not None and getattr(rule, hook, None) is not None:
                yield node, rule


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
        self._edges: list[tuple[Slot, np.ndarray, np.ndarray]] = []  # (slot a, element ids of a, of b): index maps
        self._identities: list[tuple[Slot, Slot]] = []  # links of element i to element i (slots of one size)
        self._frozen: list[tuple[Slot, np.ndarray | None, str]] = []
        self.slot_union = _SlotUnion()
        #: barrier reason -> the nodes it stopped, for the barriers that keep a group with parameters whole
        self.unsupported: dict[str, list[str]] = {}
        self._barriers: list[tuple[str, str, list[Slot]]] = []
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

    def add_link(self, a: Slot, b: Slot, idx: np.ndarray | None = None) -> None:
        """Couple b's element i with a's element idx[i]; idx None: the identity (a and b have one size)."""
        if idx is None:
            self._identities.append((a, b))
        else:
            self._edges.append((a, self.offsets[a] + idx, self.offsets[b] + np.arange(len(idx))))
        self.slot_union.union(a, b)

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
        """Run every node's rule over a shape-annotated GraphModule and form the groups.

        Raises:
            RuleError: a rule's `couple` hook raised anything but `NotHandled` (a bug in the rule).
        """
        g = cls(gm, options)
        modules = module_map(gm)
        for node in gm.graph.nodes:
            for key, shape in tensor_shapes(node).items():
                g.add_tensor(key, shape)
        for node in gm.graph.nodes:
            g._apply(node, modules)
        g._link_aliases()
        g._form_groups()
        g._report_barriers()
        return g

    def _link_aliases(self) -> None:
        """Tied weights: keys naming one tensor (`@a.weight` is `@b.weight`) lose the same elements."""
        by_tensor: dict[int, list[str]] = {}
        for key in self.shapes:
            if key.startswith("@"):
                value = fetch_attr(self.gm, key[1:])
                if isinstance(value, torch.Tensor):
                    by_tensor.setdefault(id(value), []).append(key)
        for keys in by_tensor.values():
            for other in keys[1:]:
                for d in range(len(self.shapes[keys[0]])):
                    self.add_link(Slot(keys[0], d), Slot(other, d))

    def _apply(self, node: torch.fx.Node, modules: dict[str, torch.nn.Module]) -> None:
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
            if isinstance(fetch_attr(self.gm, node.target), torch.Tensor) and outs:
                c = RuleContext(self, node, modules)
                key = f"@{node.target}"
                self.add_tensor(key, self.shapes[node.name])
                c.same(key, node.name)
            return
        key = spelling(node, self.gm, modules)
        rule = lookup(key)
        c = RuleContext(self, node, modules)
        ins = c.inputs()
        if not ins and not outs:  # arithmetic on sizes and other non-tensor values
            return
        if rule is None:
            self._barrier(node, spelling_name(key), f"no rule for {spelling_name(key)}", ins + outs)
            return
        try:
            rule.couple(c)
        except NotHandled as e:  # the rule declines this use of its op: a barrier
            why = f"the rule for {spelling_name(key)} does not handle this use ({e})"
            self._barrier(node, why, why, ins + outs)
            return
        except Exception as e:
            hook = f"{getattr(rule.couple, '__module__', '')}.{getattr(rule.couple, '__qualname__', rule.couple)}"
            raise RuleError(
                f"the rule for {spelling_name(key)} ({hook}) failed on {node_context(node)}: {type(e).__name__}: "
                f"{e}. This is a bug in the rule: fix it, or raise fxprune.rules.NotHandled for a use of the op it "
                "cannot describe (the node then becomes a barrier)") from e
        params = []
        if c.module is not None:
            params = [f"@{node.target}.{n}" for n, _ in c.module.named_parameters(recurse=False)]
            params += [f"@{node.target}.{n}" for n, _ in c.module.named_buffers(recurse=False)]
        for k in ins + outs + [p for p in params if p in self.shapes]:
            for d in range(len(self.shapes[k])):
                if Slot(k, d) not in c.touched:
                    self.add_freeze(Slot(k, d), f"dim {d} not handled by the rule for {spelling_name(key)}",
                                    None)

    def _barrier(self, node: torch.fx.Node, name: str, reason: str, keys: list[str]) -> None:
        """Keep every slot of the node's tensors; `_report_barriers` decides whether the warning names it."""
        slots = [Slot(k, d) for k in keys for d in range(len(self.shapes[k]))]
        self._barriers.append((name, node.format_node(), slots))
        self._freeze_all(keys, reason)

    def _parameter_keys(self) -> set[str]:
        keys = {f"@{n}" for n, _ in self.gm.named_parameters(remove_duplicate=False)}
        for prefix, module in self.gm.named_modules(remove_duplicate=False):
            for attr in getattr(module, "parametrizations", {}):
                keys.add(f"@{prefix}.{attr}" if prefix else f"@{attr}")
        return keys

    def _report_barriers(self) -> None:
        """A barrier costs channels only where it touches a group that holds a parameter; one that only keeps
        constants and positions whole (a slice of the position-ids buffer) is not worth a warning."""
        params = self._parameter_keys()
        costly = {g.id for g in self.groups if any(s.tensor in params for s in g.slots)}
        for name, text, slots in self._barriers:
            if any(self.group_of[s] in costly for s in slots):
                self.unsupported.setdefault(name, []).append(text)

    def _labels(self, slots: list[Slot], sizes: np.ndarray, root: list[Slot]) -> np.ndarray:
        """The element component of every element (`slots` in element order, with their `sizes` and the `root`
        slot of their slot component), numbered 0..k-1: within one slot component, in order of the components'
        first elements. A slot component joined by identity links only (most of them: element-wise ops, norms,
        a conv's output and the next op's input) has one element component per index i, the i-th element of
        each of its slots, which are all of one size; only the slot components that an index map joins (concat,
        split, heads, permutations) need a graph search over their elements, numbered after the others."""
        n = self.n_elements
        mapped = {self.slot_union.find(a) for a, _, _ in self._edges}
        offsets = np.fromiter((self.offsets[s] for s in slots), dtype=np.int64, count=len(slots))
        is_mapped = np.fromiter((r in mapped for r in root), dtype=bool, count=len(slots))
        # identity components: a block of labels each, in order of their first slot
        first: dict[Slot, int] = {}
        for i, r in enumerate(root):
            if not is_mapped[i]:
                first.setdefault(r, i)
        blocks = np.fromiter(first.values(), dtype=np.int64, count=len(first))
        block_start = np.concatenate([[0], np.cumsum(sizes[blocks])[:-1]]) if len(blocks) else blocks
        start_of = dict(zip(first, block_start.tolist()))
        base = np.fromiter((start_of.get(r, 0) for r in root), dtype=np.int64, count=len(slots))
        labels = np.arange(n, dtype=np.int64) + np.repeat(base - offsets, sizes)
        if mapped:  # the others: connected components over their elements only, numbered after the blocks
            ids = np.concatenate([np.arange(o, o + z) for o, z, m in zip(offsets, sizes, is_mapped) if m])
            pos = np.full(n, -1, dtype=np.int64)
            pos[ids] = np.arange(len(ids))
            edges = self._edges + [(x, self.offsets[x] + i, self.offsets[y] + i) for x, y in self._identities
                                   if self.slot_union.find(x) in mapped
                                   for i in (np.arange(self.shapes[x.tensor][x.dim]),)]
            a, b = (pos[np.concatenate([e[k] for e in edges])] for k in (1, 2))
            adj = scipy.sparse.coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(len(ids), len(ids)))
            _, sub = scipy.sparse.csgraph.connected_components(adj, directed=False)
            labels[ids] = int(sizes[blocks].sum()) + sub
        return labels

    def _form_groups(self) -> None:
        n = self.n_elements
        slots_in_order = list(self.offsets)  # elements are numbered in this order, each slot's contiguous
        sizes = np.array([self.shapes[s.tensor][s.dim] for s in slots_in_order], dtype=np.int64)
        root = [self.slot_union.find(s) for s in slots_in_order]
        labels = self._labels(slots_in_order, sizes, root)
        frozen_el = np.zeros(n, dtype=bool)
        reasons_by_slot: dict[Slot, list[str]] = {}
        for s, elements, reason in self._frozen:
            off = self.offsets[s]
            if elements is None:
                frozen_el[off:off + self.shapes[s.tensor][s.dim]] = True
            else:
                frozen_el[off + np.asarray(elements)] = True
            reasons_by_slot.setdefault(s, []).append(reason)
        frozen_label = np.zeros(n, dtype=bool)
        frozen_label[labels[frozen_el]] = True
        param_label = np.zeros(n, dtype=bool)
        param_label[labels[np.repeat([s.tensor.startswith("@") for s in slots_in_order], sizes)]] = True

        components: dict[Slot, list[Slot]] = {}
        for s, r in zip(slots_in_order, root):
            components.setdefault(r, []).append(s)
        ordered = [sorted(comp, key=self._slot_order) for comp in sorted(components.values(), key=self._order)]
        class_of, classes = self._classes(labels, ordered, slots_in_order, sizes)
        element_class = class_of[labels]  # each slot's classes are a view of it
        size_of = dict(zip(slots_in_order, sizes.tolist()))
        for gid, (slots, units) in enumerate(zip(ordered, classes)):
            slot_class = {s: element_class[self.offsets[s]:self.offsets[s] + size_of[s]] for s in slots}
            reasons = sorted({r for s in slots for r in reasons_by_slot.get(s, [])})
            roles = {self.roles[s] for s in slots if s in self.roles}
            self.groups.append(Group(gid, slots, slot_class, frozen_label[units], param_label[units], reasons, roles))
            for s in slots:
                self.group_of[s] = gid

    def _classes(self, labels: np.ndarray, groups: list[list[Slot]], slots: list[Slot],
                 sizes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Number each group's element components (labels) 0..k-1 in increasing label order: (class index of
        every label, the labels of each group in class order). One stable sort of the labels by group, not a
        `np.unique` per group: an element link implies a slot link, so a label lies in one group. `slots` in
        element order, with their `sizes`."""
        gid_of_slot = {s: gid for gid, members in enumerate(groups) for s in members}
        element_group = np.repeat(np.array([gid_of_slot[s] for s in slots], dtype=np.int64), sizes)
        label_group = np.empty(int(labels.max(initial=-1)) + 1, dtype=np.int64)  # every label has elements
        label_group[labels] = element_group  # elements are numbered in `offsets` order
        order = np.argsort(label_group.astype(np.uint16 if len(groups) < 2**16 else np.int64), kind="stable")
        starts = np.searchsorted(label_group[order], np.arange(len(groups) + 1))
        class_of = np.empty(len(label_group), dtype=np.int64)
        class_of[order] = np.arange(len(order)) - starts[label_group[order]]
        return class_of, [order[starts[g]:starts[g + 1]] for g in range(len(groups))]

    # -- queries ---------------------------------------------------------------------------------
    def _slot_order(self, s: Slot) -> tuple[int, int]:
        return (self.offsets[s], s.dim)

    def _order(self, comp: list[Slot]) -> int:
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
            " if output channel i depends only on input channel i, or a rule of your own (see fxprune/rules/)."
        )
