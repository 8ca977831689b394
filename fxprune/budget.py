"""Resource budgets: keep a fraction of the dense model's MACs, parameters or latency, choosing channels by
importance per unit of that resource.

    fxprune.compile(model, {"pruner": "l1", "budget": {"macs": 0.5}}, x)      # keep half the MACs
    fxprune.compile(model, {"pruner": "l1", "budget": {"latency": 0.5}}, x)   # half the onnxruntime latency

Every prunable unit (channel, head) of every selected group competes globally. A unit's value is its score
(the criterion's, divided by its group's mean so that groups compare) over what removing it saves: the
resource the model loses when the group loses one more unit, at the current widths (a conv's output channel
saves its own MACs and the next layer's input MACs; both shrink as the neighbours shrink). Units go a chunk at
a time (about 1/32 of a group, a multiple of `round_to`), the chunk with the lowest mean score over what the
whole chunk saves first, until the resource is at the budget. The resource is counted
exactly after every step (MACs from each op's rule, parameters from the tensor shapes, latency from
`fxprune.latency.LatencyTable`), so the result lands on the budget within one chunk. For latency that is the
table's count; the table misses what does not shrink with the layers (activations, pooling, adds, reorders,
session overhead), so `compile` then calibrates it end to end (`fxprune.latency.latency_budget_masks`: the
pruned model measured in onnxruntime paired with the dense one, the table's fraction corrected until the
measured ratio is within 3% of the budget; the report's notes give both). `options={"latency_calibration":
False}` keeps the table's choice uncorrected.

`config["budget_worth"] = "macs"` weighs a unit's score by the MACs it carries (what removing it saves in
MACs, at the current widths): with uniform scores the greedy then keeps the most MACs per unit of the resource
(for latency: the fastest model at a given MAC count, the capacity kept where the runtime runs it best); the
criterion still orders the units within a group. The default, "score", keeps the most importance.

A rule's `sparsity` caps what one group may lose (default 0.9: every group keeps a tenth); `round_to` keeps
channel counts a multiple of N (latency budgets default to the channel block the runtime's kernels are
measured to like).
"""

from __future__ import annotations

import heapq
import math
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .config import BUDGET_CAP as DEFAULT_CAP
from .config import Config, RuleConfig
from .errors import ConfigError
from .graph import DependencyGraph, Slot, rule_nodes
from .layers import Layer
from .masks import Masks, Scorer
from .rules.context import NodeView

__all__ = ["Term", "CostModel", "macs_terms", "params_terms", "budget_masks", "RESOURCES",
           "DEFAULT_CAP"]

#: resources a budget can name
RESOURCES = ("macs", "params", "latency")


@dataclass
class Term:
    """One summand of a resource: a function of the shapes of a few tensors (`keys`)."""

    keys: list[str]
    fn: Callable[[dict[str, tuple[int, ...]]], float]


class CostModel:
    """A resource as a sum of terms, evaluated at the widths a set of keep vectors leaves.

    Args:
        dg: the dependency graph.
        terms: the summands (see `macs_terms`, `params_terms`, `fxprune.latency.LatencyTable.terms`).
        round_to: the channel multiple this resource prefers (a latency table's measured block), used where
            the config's `round_to` is left at 1.
        max_cut: the largest fraction of a group's units the resource is known for (a latency table measures
            layers down to a quarter of their channels: 0.75); a budget cuts no group deeper.
    """

    def __init__(self, dg: DependencyGraph, terms: list[Term], round_to: int = 1, max_cut: float = 1.0) -> None:
        self.dg, self.terms, self.round_to, self.max_cut = dg, terms, round_to, max_cut
        self.by_group: dict[int, list[int]] = {}  # group -> terms whose shapes depend on it
        self.groups_of: list[list[int]] = [[] for _ in terms]  # term -> the groups it depends on
        for i, term in enumerate(terms):
            for key in term.keys:
                for d in range(len(dg.shapes.get(key, ()))):
                    gid = dg.group_of.get(Slot(key, d))
                    if gid is not None and i not in self.by_group.setdefault(gid, []):
                        self.by_group[gid].append(i)
                        self.groups_of[i].append(gid)
        self._elements: dict[Slot, np.ndarray] = {}

    def count(self, s: Slot, keep: np.ndarray) -> int:
        """Elements of slot `s` that units `keep` keep."""
        per_unit = self._elements.get(s)
        if per_unit is None:
            group = self.dg.groups[self.dg.group_of[s]]
            per_unit = self._elements[s] = np.bincount(group.slot_class[s], minlength=group.n_units)
        return int(per_unit[keep].sum())

    def shapes(self, term: Term, keep: dict[int, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """The shapes of a term's tensors when each group keeps `keep[group]`."""
        out = {}
        for key in term.keys:
            shape = self.dg.shapes.get(key)
            if shape is None:
                continue
            new = list(shape)
            for d in range(len(shape)):
                gid = self.dg.group_of.get(Slot(key, d))
                if gid is not None and gid in keep:
                    new[d] = self.count(Slot(key, d), keep[gid])
            out[key] = tuple(new)
        return out

    def term(self, i: int, keep: dict[int, np.ndarray]) -> float:
        return float(self.terms[i].fn(self.shapes(self.terms[i], keep)))

    def total(self, keep: dict[int, np.ndarray] | None = None) -> float:
        """The resource at the widths `keep` leaves (dense: None or {})."""
        keep = keep or {}
        return sum(self.term(i, keep) for i in range(len(self.terms)))


def macs_terms(dg: DependencyGraph) -> list[Term]:
    """MACs per op, from each op's rule (the counter of the report)."""
    terms = []
    for node, rule in rule_nodes(dg.gm, "macs"):
        aliases = {}  # a mask multiply (session models have them) has the shape of what it masks
        for arg in node.all_input_nodes:
            src = arg
            while src.meta.get("fxprune_mask") and src.args and isinstance(src.args[0], torch.fx.Node):
                src = src.args[0]
            if src is not arg:
                aliases[arg.name] = src.name
        view = NodeView(dg.gm, node, ChainMap(dict.fromkeys(aliases, ()), dg.shapes))
        keys = [aliases.get(k, k) for k in view.inputs() + [node.name]]
        keys = [k for k in keys if k in dg.shapes]
        if view.module is not None:
            keys += [k for k in (f"@{node.target}.{n}" for n, _ in view.module.named_parameters(recurse=False))
                     if k in dg.shapes]

        def fn(shapes: dict[str, tuple[int, ...]], node: torch.fx.Node = node, rule: object = rule,
               aliases: dict[str, str] = aliases) -> float:
            local = ChainMap(shapes, dg.shapes)
            local = ChainMap({a: local[s] for a, s in aliases.items()}, local)
            try:
                return float(rule.macs(NodeView(dg.gm, node, local)))
            except (KeyError, TypeError, ValueError):
                return 0.0

        terms.append(Term(keys, fn))
    return terms


def params_terms(dg: DependencyGraph) -> list[Term]:
    """Elements per parameter tensor (tied tensors counted once)."""
    seen: set[int] = set()
    terms = []
    for name, p in dg.gm.named_parameters():
        key = f"@{name}"
        if id(p) in seen:
            continue
        seen.add(id(p))
        if key in dg.shapes:
            terms.append(Term([key], lambda shapes, key=key: float(math.prod(shapes[key]))))
        else:
            n = float(p.numel())
            terms.append(Term([], lambda shapes, n=n: n))
    return terms


def _normalised(scores: torch.Tensor) -> np.ndarray:
    values = scores.double().numpy().copy()
    finite = values[np.isfinite(values)]
    mean = finite.mean() if finite.size and finite.mean() > 0 else 1.0
    return values / mean


def budget_masks(dg: DependencyGraph, cfg: Config, layers: list[Layer], score: Scorer, model: CostModel,
                 previous: Masks | None = None) -> Masks:
    """Masks that keep `cfg.budget`'s fraction of `model`'s resource, cheapest importance per cost first.

    Args:
        dg: the dependency graph.
        cfg: the config (its `budget`, rules as per-group caps, `round_to`, `mode`).
        layers: the selected layers.
        score: the criterion, bound to its statistics.
        model: the resource as a cost model (`macs_terms`, `params_terms` or a latency table's terms).
        previous: masks already applied: what they removed stays removed.

    Raises:
        ConfigError: the budget is below what the model can reach (the groups fxprune cannot prune, the
            layers not selected and the per-group caps keep more); the message says how low it can go.
    """
    (resource, fraction), = cfg.budget.items()
    members: dict[int, list[Layer]] = {}
    for layer in layers:
        members.setdefault(dg.group_of[layer.slot], []).append(layer)
    keep: dict[int, np.ndarray] = {gid: k.copy() for gid, k in (previous.keep.items() if previous else [])}
    order: dict[int, list[int]] = {}  # group -> its removable units, lowest score first
    values: dict[int, np.ndarray] = {}
    for gid, group_layers in members.items():
        group = dg.groups[gid]
        if any(m.excluded for m in group_layers) or not group.prunable.any():
            continue
        rules = [m.rule for m in group_layers if m.rule is not None]
        cap = min(min([_group_cap(r, [m.name for m in group_layers]) for r in rules] or [DEFAULT_CAP]), model.max_cut)
        only = None if cfg.dependency_aware else {m.slot for m in group_layers}
        raw = score(group, only)
        raw[~torch.as_tensor(group.prunable)] = float("inf")
        norm = _normalised(raw)
        current = keep.setdefault(gid, np.ones(group.n_units, dtype=bool))
        candidates = [int(u) for u in np.argsort(norm, kind="stable") if np.isfinite(norm[u]) and current[u]]
        most = min(int(math.floor(cap * group.n_units + 1e-9)), group.n_units - 1) - int((~current).sum())
        order[gid], values[gid] = candidates[:max(most, 0)], norm
    dense = model.total()
    target = fraction * dense
    floor_keep = {gid: _without(keep[gid], units) for gid, units in order.items()}
    floor = model.total({**keep, **floor_keep})
    if floor > target * (1 + 1e-9):
        _too_low(resource, fraction, floor, dense, model.max_cut)

    worth = CostModel(dg, macs_terms(dg)) if cfg.budget_worth == "macs" else None
    reached = _greedy(model, keep, order, values, target, cfg.round_to if cfg.round_to > 1 else model.round_to,
                      worth)
    if reached > target * (1 + 1e-6):  # concat windows and split inputs stopped groups before their caps
        _too_low(resource, fraction, reached, dense, model.max_cut)
    masks = Masks(dg)
    for gid in order:
        if not keep[gid].all():
            masks.keep[gid] = keep[gid]
    for gid, k in (previous.keep.items() if previous else []):
        masks.keep[gid] = masks.keep.get(gid, k) & k
    return masks


def _group_cap(rule: RuleConfig, names: list[str]) -> float:
    """What a rule lets one group lose: max_sparsity_per_layer (per layer name or for all), else its sparsity."""
    cap = rule.max_sparsity_per_layer
    if isinstance(cap, dict):
        return min((cap.get(n, rule.target) for n in names), default=rule.target)
    return rule.target if cap is None else cap


def _too_low(resource: str, fraction: float, floor: float, dense: float, max_cut: float = 1.0) -> None:
    measured = f"; at most {max_cut:g} of a group: what the latency table measured" if max_cut < 1 else ""
    raise ConfigError(
            f"config['budget'] = {{{resource!r}: {fraction:g}}} cannot be met: with every selected group pruned as "
            f"far as allowed the model keeps {floor / dense:.1%} of its {resource} (groups fxprune keeps whole, "
            f"layers no rule selects, and per-group caps: a rule's sparsity, default {DEFAULT_CAP}{measured}). The "
            f"budget can go as low as {math.ceil(floor / dense * 1000) / 1000:g}; or select more layers or raise the "
            "caps")


def _without(keep: np.ndarray, units: list[int]) -> np.ndarray:
    out = keep.copy()
    out[units] = False
    return out


def _chunk(group_size: int, kept: int, round_to: int) -> int:
    """Units to remove in one step: a multiple of round_to landing the kept count on one, about 1/32 of the
    group (so that a step is fine-grained but the whole search takes a few hundred steps)."""
    step = max(round_to, (group_size // 32) // round_to * round_to)
    first = kept % round_to
    return first if first else step


def _greedy(model: CostModel, keep: dict[int, np.ndarray], order: dict[int, list[int]],
            values: dict[int, np.ndarray], target: float, round_to: int, worth: CostModel | None = None) -> float:
    """Remove the chunk with the lowest mean value per unit of resource saved until the resource <= target;
    return the resource reached. A chunk that saves nothing (a flat stretch of a latency table) grows by chunks
    until it does, so that the greedy does not stop short of a step. With `worth` (a MAC count), a chunk's value
    is its mean value times the `worth` it removes."""
    term_values = [model.term(i, keep) for i in range(len(model.terms))]
    worth_values = [worth.term(i, keep) for i in range(len(worth.terms))] if worth is not None else []
    current = sum(term_values)
    taken = dict.fromkeys(order, 0)
    version = dict.fromkeys(order, 0)
    heap: list[tuple[float, int, int]] = []
    pending: dict[int, list[int]] = {}  # group -> the units of its entry on the heap (of its current version)

    def proposal(gid: int) -> tuple[list[int], float] | None:
        rest = order[gid][taken[gid]:]
        if not rest:
            return None
        size, kept = 0, int(keep[gid].sum())
        while True:  # a chunk, grown by chunks while it saves nothing (a flat stretch of a runtime's staircase)
            size += _chunk(len(keep[gid]), kept - size, round_to)
            units = rest[:size]
            trial = {**keep, gid: _without(keep[gid], units)}
            if any(model.count(s, keep[gid]) and not model.count(s, trial[gid])
                   for s in model.dg.groups[gid].slots):
                return None  # it would empty a tensor dim (a concat input, a split window): the group stops here
            saved = sum(term_values[i] - model.term(i, trial) for i in model.by_group.get(gid, []))
            if saved > 0 or size >= len(rest):
                break
        value = float(np.mean(values[gid][units]))
        if worth is not None:
            value *= sum(worth_values[i] - worth.term(i, trial) for i in worth.by_group.get(gid, []))
        return units, value / saved if saved > 0 else math.inf

    def push(gid: int) -> None:
        found = proposal(gid)
        if found is not None:
            pending[gid] = found[0]
            heapq.heappush(heap, (found[1], version[gid], gid))

    for gid in order:
        push(gid)
    while current > target and heap:
        value, v, gid = heapq.heappop(heap)
        if v != version[gid]:
            continue
        if math.isinf(value):  # nothing left saves anything
            break
        units = pending[gid]
        keep[gid] = _without(keep[gid], units)
        taken[gid] += len(units)
        touched = model.by_group.get(gid, [])
        for i in touched:
            new = model.term(i, keep)
            current += new - term_values[i]
            term_values[i] = new
        neighbours = {g for i in touched for g in model.groups_of[i] if g in order}
        if worth is not None:
            for i in worth.by_group.get(gid, []):
                worth_values[i] = worth.term(i, keep)
                neighbours |= {g for g in worth.groups_of[i] if g in order}
        for g in neighbours | {gid}:
            version[g] += 1
            push(g)
    return current
