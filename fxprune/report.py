"""Report: per layer and in total, channels, parameters and MACs before and after; frozen groups and why.

MACs are counted from the traced shapes for the example inputs as given (their batch size), by the
`macs` entry of each op's rule (conv, linear, matmul): the ideal speedup is macs_before / macs_after.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.fx

from .graph import DependencyGraph, NodeView, module_map, rule_nodes, tensor_shapes
from .layers import find_layers
from .masks import Masks

__all__ = ["Report", "LayerStats", "GroupStats", "Baseline", "count_macs", "build_report"]


@dataclass
class LayerStats:
    """One module that owns parameters."""

    name: str
    type: str
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass
class GroupStats:
    """One channel group: its layers, channel counts and, when frozen, why."""

    id: int
    layers: list[str]
    channels: int
    kept: int
    frozen: int
    reasons: list[str]


@dataclass
class Report:
    """What compile did, in numbers. `str(report)` is a table; `to_dict()` is JSON-ready."""

    pruner: str
    frontend: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    nonzero_params_after: int
    layers: list[LayerStats] = field(default_factory=list)
    groups: list[GroupStats] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    max_abs_diff: float = 0.0
    unsupported: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def param_reduction(self) -> float:
        return 1 - self.params_after / max(self.params_before, 1)

    @property
    def mac_reduction(self) -> float:
        return 1 - self.macs_after / max(self.macs_before, 1)

    @property
    def ideal_speedup(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "param_reduction": self.param_reduction, "mac_reduction": self.mac_reduction}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        rows = [f"{'layer':<32} {'type':<16} {'channels':>13} {'params':>21} {'MACs':>25}"]
        for s in self.layers:
            if s.params_before == s.params_after and s.channels_before == s.channels_after:
                continue
            rows.append(f"{s.name[:32]:<32} {s.type[:16]:<16} {s.channels_before:>6} -> {s.channels_after:<4}"
                        f" {s.params_before:>9,} -> {s.params_after:<9,} {s.macs_before:>11,} -> {s.macs_after:<11,}")
        frozen = [g for g in self.groups if g.frozen == g.channels and g.reasons]
        rows += [
            "",
            f"pruner {self.pruner}, front end {self.frontend}; {len(self.layers)} layers, "
            f"{sum(1 for s in self.layers if s.channels_after < s.channels_before)} pruned",
            f"params {self.params_before:,} -> {self.params_after:,} (-{self.param_reduction:.1%})"
            + (f", nonzero {self.nonzero_params_after:,}"
               if self.nonzero_params_after < 0.99 * self.params_after else ""),
            f"MACs   {self.macs_before:,} -> {self.macs_after:,} (-{self.mac_reduction:.1%}, ideal speedup "
            f"{self.ideal_speedup:.2f}x)",
            f"verify: max |masked - pruned| = {self.max_abs_diff:.2e}",
        ]
        if frozen:
            rows.append(f"{len(frozen)} group(s) with layers kept whole, e.g.:")
            rows += [f"  {', '.join(g.layers[:3])}: {g.reasons[0]}" for g in frozen[:5]]
        rows += [f"note: {n}" for n in self.notes]
        if self.timings:
            rows.append("time: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.timings.items()))
        if self.unsupported:
            rows += ["", self.unsupported]
        return "\n".join(rows)


def count_macs(gm: torch.fx.GraphModule, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """MACs per node (by node name) from each op's rule, using `shapes` for tensor shapes."""
    out: dict[str, int] = {}
    modules, view = module_map(gm), MappingProxyType(shapes)  # read-only, no copy
    for node, rule in rule_nodes(gm, "macs", modules):
        try:
            out[node.name] = int(rule.macs(NodeView(gm, node, view, modules)))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _params(module: torch.nn.Module, recurse: bool = True) -> int:
    return sum(p.numel() for p in module.parameters(recurse=recurse))


@dataclass
class Baseline:
    """The model as it came in, measured once before any mask is inserted: the report's "before" column."""

    params: int
    layer_params: dict[str, int]
    macs: dict[str, int]

    @classmethod
    def measure(cls, gm: torch.fx.GraphModule, dg: DependencyGraph) -> Baseline:
        shapes = {k: v for n in gm.graph.nodes for k, v in tensor_shapes(n).items()}
        layer_params = {layer.name: _params(gm.get_submodule(layer.name), False) for layer in find_layers(dg)}
        return cls(_params(gm), layer_params, count_macs(gm, shapes))


def build_report(baseline: Baseline, pruned: torch.fx.GraphModule, dg: DependencyGraph, masks: Masks,
                 new_shapes: dict[str, tuple[int, ...]], *, pruner: str, frontend: str) -> Report:
    """Compare the model as it came in (`baseline`) and the pruned GraphModule, layer by layer."""
    shapes_before = {k: v for n in dg.gm.graph.nodes for k, v in tensor_shapes(n).items()}
    shapes_after = {**shapes_before, **{k: v for k, v in new_shapes.items() if not k.startswith("@")}}
    macs_before, macs_after = baseline.macs, count_macs(pruned, shapes_after)
    model_layers = find_layers(dg)
    layers = []
    for layer in model_layers:
        nodes = layer.nodes
        key, dim = layer.slot
        layers.append(LayerStats(
            layer.name, layer.type_name, dg.shapes[key][dim], new_shapes.get(key, dg.shapes[key])[dim],
            baseline.layer_params[layer.name], _params(pruned.get_submodule(layer.name), False),
            sum(macs_before.get(n, 0) for n in nodes), sum(macs_after.get(n, 0) for n in nodes)))
    layer_of = {lay.slot: lay.name for lay in model_layers}
    groups = []
    for g in dg.groups:
        if not g.param_slots():
            continue
        names = [layer_of[s] for s in g.slots if s in layer_of]
        if not names:  # kernel dims, input channels of the first layer, ...: no layer's channels
            continue
        keep = masks.keep.get(g.id)
        groups.append(GroupStats(g.id, names, g.n_units, int(keep.sum()) if keep is not None else g.n_units,
                                 int(g.frozen.sum()), g.reasons[:3]))
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in pruned.parameters())  # one pass, no bool copy
    return Report(pruner, frontend, baseline.params, _params(pruned), sum(macs_before.values()),
                  sum(macs_after.values()), nonzero, layers, groups, unsupported=dg.unsupported_message())
