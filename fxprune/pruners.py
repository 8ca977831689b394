"""One-shot pruners: scores + config -> Masks; and NNI-style pruner classes over them.

`select_layers` applies NNI's config_list to the layers of a traced model; `compute_masks` turns
importance scores into per-group keep vectors (per group, or globally ranked); `LevelPruner`,
`L1NormPruner`, `L2NormPruner` and `FPGMPruner` wrap it with NNI's constructor and `compress()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import Config, RuleConfig, parse_config
from .errors import ConfigError, InputError
from .graph import DependencyGraph, Group, Slot, module_class, op_name, rule_nodes
from .importance import IMPORTANCE
from .masks import Masks

__all__ = [
    "Layer", "select_layers", "compute_masks", "LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner",
]

#: What op_types=['default'] means: the layers whose output channels fxprune prunes by default.
DEFAULT_TYPES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear",
                 "Conv1D")  # Conv1D: Hugging Face's transposed linear (GPT-2)


@dataclass
class Layer:
    """A module with an output-channel parameter dim, as the config sees it; `nodes` are its calls."""

    name: str
    type_name: str
    slot: Slot
    rule: RuleConfig | None = None
    excluded: bool = False
    nodes: list[str] = field(default_factory=list)


def _module_type(node: torch.fx.Node, owner: str) -> str | None:
    """Class name of the module `owner` that a torch.export node ran inside, from its nn_module_stack."""
    for path, cls in node.meta.get("nn_module_stack", {}).values():
        if path == owner:
            return (cls if isinstance(cls, str) else cls.__qualname__).rpartition(".")[2]
    return None


def _layers(dg: DependencyGraph) -> list[Layer]:
    """Every layer: a call_module with an out_param rule (fx), or a function call (F.linear, aten.conv2d,
    ...) whose rule has an out_param and whose weight (arg `rule.weight_arg`) is a parameter: the layer
    is the module that owns the weight, typed by the module the call ran inside (torch.export) or by
    the function."""
    layers: dict[str, Layer] = {}
    for node, rule in rule_nodes(dg.gm, "out_param"):
        attr, dim = rule.out_param
        if node.op == "call_module":
            module = dg.gm.get_submodule(node.target)
            if getattr(module, attr, None) is None:
                continue
            name, type_name, key = node.target, module_class(module).__name__, f"@{node.target}.{attr}"
        else:
            weight = node.args[rule.weight_arg] if len(node.args) > rule.weight_arg else None
            if not isinstance(weight, torch.fx.Node) or weight.op != "get_attr" or f"@{weight.target}" not in dg.shapes:
                continue
            name = weight.target.rpartition(".")[0]
            type_name = _module_type(node, name) or op_name(node.target)
            key = f"@{weight.target}"
        layer = layers.setdefault(name, Layer(name, type_name, Slot(key, dim)))
        layer.nodes.append(node.name)
    return list(layers.values())


def select_layers(dg: DependencyGraph, cfg: Config) -> list[Layer]:
    """Apply the config's rules to the model's layers (later entries override; exclude wins).

    Raises:
        ConfigError: an entry matches no layer (lists the layers there are).
    """
    layers = _layers(dg)
    for i, rule in enumerate(cfg.rules):
        default = DEFAULT_TYPES if cfg.pruner != "level" else DEFAULT_TYPES + ("BatchNorm2d",)
        hits = [layer for layer in layers if rule.matches(layer.name, layer.type_name, default)]
        if not hits:
            types = sorted({layer.type_name for layer in layers})
            names = ", ".join(layer.name for layer in layers[:12]) + (" ..." if len(layers) > 12 else "")
            raise ConfigError(
                f"rules[{i}] matches no layer (op_types={rule.op_types}, op_names={rule.op_names}, "
                f"op_partial_names={rule.op_partial_names}); the model has layer types {types} and "
                f"layers {names}")
        for layer in hits:
            if rule.exclude:
                layer.excluded = True
            else:
                layer.rule = rule
    return [layer for layer in layers if layer.rule is not None or layer.excluded]


def _cap(rule: RuleConfig, layer_names: list[str]) -> float:
    cap = rule.max_sparsity_per_layer
    if cap is None:
        return 1.0
    if isinstance(cap, dict):
        return min((cap.get(n, 1.0) for n in layer_names), default=1.0)
    return cap


def compute_masks(dg: DependencyGraph, cfg: Config, layers: list[Layer] | None = None) -> Masks:
    """Scores + config -> Masks. Structured pruners keep per-group channel vectors; Level masks weights."""
    layers = select_layers(dg, cfg) if layers is None else layers
    if cfg.pruner == "level":
        return _level_masks(dg, cfg, layers)
    importance = IMPORTANCE[cfg.pruner]
    masks = Masks(dg)
    by_group: dict[int, list[Layer]] = {}
    for layer in layers:
        by_group.setdefault(dg.group_of[layer.slot], []).append(layer)

    pools: dict[int, list[tuple[int, torch.Tensor, float]]] = {}  # rule id -> (group, norm scores, cap)
    for gid, members in by_group.items():
        group = dg.groups[gid]
        prunable = group.prunable.copy()
        if any(m.excluded for m in members) or not prunable.any():
            continue
        rules = [m.rule for m in members if m.rule is not None]
        only = None if cfg.dependency_aware else {m.slot for m in members}
        scores = importance(dg, group, only)
        scores[~torch.as_tensor(prunable)] = float("inf")
        if cfg.global_ranking or any(r.total_sparsity is not None for r in rules):
            rule = rules[0]
            finite = scores[torch.isfinite(scores)]
            norm = scores / (finite.mean() if finite.numel() and finite.mean() > 0 else 1.0)
            pools.setdefault(id(rule), []).append((gid, norm, _cap(rule, [m.name for m in members])))
            pools[id(rule)].sort(key=lambda t: t[0])
            continue
        sparsity = max(r.sparsity for r in rules)
        masks.keep[gid] = _choose(group, scores, sparsity, sparsity * group.n_units, cfg.round_to)

    rule_of = {id(m.rule): m.rule for m in layers if m.rule is not None}
    for rid, entries in pools.items():
        _global_keep(masks, dg, rule_of[rid].target, entries, cfg.round_to)
    return masks


def _slot_quota(group: Group, sparsity: float) -> tuple[np.ndarray, np.ndarray]:
    """Per slot: elements each class would take from it, and how many it may lose (keeps >= 1)."""
    rows = (np.bincount(group.slot_class[s], minlength=group.n_units) for s in group.slots)
    counts = np.stack(list({r.tobytes(): r for r in rows}.values()))  # equal rows share one quota
    sizes = counts.sum(1)
    caps = np.minimum(np.floor(sparsity * sizes + 1e-9), sizes - 1)
    return counts, caps


def _choose(group: Group, scores: torch.Tensor, sparsity: float, budget: float, round_to: int) -> np.ndarray:
    """Keep vector for one group: drop the lowest scores, at most `budget` channels, and no tensor
    dim of the group (a concat input, a split window, ...) loses more than `sparsity` of itself."""
    counts, caps = _slot_quota(group, sparsity)
    keep = np.ones(group.n_units, dtype=bool)
    values = scores.numpy()
    order = np.argsort(values, kind="stable")
    order = order[np.isfinite(values[order])]
    budget = int(math.floor(budget + 1e-9))
    lowest = order[:budget]
    if np.all(counts[:, lowest].sum(1) <= caps):  # the lowest scores respect every quota: take them all
        keep[lowest] = False
        order = order[:0]
    removed, n_removed = np.zeros(len(caps)), 0
    for c in order:  # otherwise greedily, skipping channels that would empty a slot past its quota
        if n_removed >= budget:
            break
        if np.all(removed + counts[:, c] <= caps):
            keep[c] = False
            removed += counts[:, c]
            n_removed += 1
    if round_to > 1:  # give back the best removed channels until the kept count is a multiple
        n_keep = min(group.n_units, int(math.ceil(keep.sum() / round_to) * round_to))
        back = [c for c in torch.argsort(scores, descending=True).numpy() if not keep[c]]
        keep[back[: n_keep - int(keep.sum())]] = True
    return keep


def _global_keep(masks: Masks, dg: DependencyGraph, sparsity: float,
                 entries: list[tuple[int, torch.Tensor, float]], round_to: int) -> None:
    """Rank normalised scores across groups: remove `sparsity` of all their channels in total, each
    group capped by max_sparsity_per_layer (and keeping at least one channel per tensor dim)."""
    total = sum(dg.groups[gid].n_units for gid, _, _ in entries)
    flat = torch.cat([s for _, s, _ in entries])
    finite = flat[torch.isfinite(flat)]
    k = int(math.floor(sparsity * total + 1e-9))
    threshold = finite.sort().values[k - 1].item() if 0 < k <= finite.numel() else -math.inf
    for gid, scores, cap in entries:
        group = dg.groups[gid]
        want = int((scores <= threshold).sum())
        masks.keep[gid] = _choose(group, scores, cap, min(want, cap * group.n_units), round_to)


def _level_masks(dg: DependencyGraph, cfg: Config, layers: list[Layer]) -> Masks:
    """Unstructured magnitude masks on each selected layer's weight (per layer, or global)."""
    masks = Masks(dg)
    chosen = [lay for lay in layers if not lay.excluded]
    pools: dict[int, list[Layer]] = {}
    for layer in chosen:
        weight = dg.gm.get_parameter(layer.slot.tensor[1:]).detach().abs()
        if layer.rule.total_sparsity is not None or cfg.global_ranking:
            pools.setdefault(id(layer.rule), []).append(layer)
            continue
        masks.weights[layer.slot.tensor[1:]] = _magnitude_keep(weight, layer.rule.sparsity)
    for members in pools.values():
        weights = [dg.gm.get_parameter(m.slot.tensor[1:]).detach().abs() for m in members]
        flat = torch.cat([w.flatten() for w in weights])
        k = int(math.floor(members[0].rule.target * flat.numel()))
        threshold = flat.kthvalue(k).values if k > 0 else -1.0
        for m, w in zip(members, weights):
            masks.weights[m.slot.tensor[1:]] = w > threshold
    by_tensor: dict[int, list[str]] = {}  # tied weights: one tensor, one mask (zero what any name zeroes)
    for name in masks.weights:
        by_tensor.setdefault(id(dg.gm.get_parameter(name)), []).append(name)
    for names in by_tensor.values():
        if len(names) > 1:
            keep = torch.stack([masks.weights[n] for n in names]).all(0)
            for n in names:
                masks.weights[n] = keep
    return masks


def _magnitude_keep(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(math.floor(sparsity * weight.numel()))
    keep = torch.ones_like(weight, dtype=torch.bool)
    if k > 0:
        keep.view(-1)[torch.argsort(weight.flatten(), stable=True)[:k]] = False
    return keep


class _NNIPruner:
    """NNI's pruner API: `Pruner(model, config_list, ...).compress() -> (masked_model, masks)`.

    fxprune needs example inputs to trace shapes: pass `dummy_input=` (NNI's name for it in
    dependency-aware mode) or `example_inputs=`. The model you pass is not modified.
    """

    pruner = "l1"

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], mode: str = "dependency_aware",
                 dummy_input: Any = None, example_inputs: Any = None, **config: Any) -> None:
        self.model = model
        inputs = example_inputs if example_inputs is not None else dummy_input
        if inputs is None:
            raise InputError(
                f"{type(self).__name__} needs example inputs to trace the model: pass "
                "dummy_input=torch.randn(1, 3, 224, 224) (the shape your model takes)")
        self.example_inputs = inputs
        self.config = parse_config({"pruner": self.pruner, "rules": config_list, "mode": mode, **config})

    def compress(self) -> tuple[torch.fx.GraphModule, Masks]:
        """Trace, group, score and insert masks. Returns the masked model (trainable) and the masks."""
        from .compiler import analyze
        from .passes.mask import insert_masks

        gm, dg = analyze(self.model, self.example_inputs, self.config)
        masks = compute_masks(dg, self.config)
        return insert_masks(gm, masks), masks


class LevelPruner(_NNIPruner):
    """Unstructured magnitude pruning: zero the smallest weights of each selected layer."""

    pruner = "level"


class L1NormPruner(_NNIPruner):
    """Remove the channels with the smallest L1 norm (filters and everything they own)."""

    pruner = "l1"


class L2NormPruner(_NNIPruner):
    """Remove the channels with the smallest L2 norm."""

    pruner = "l2"


class FPGMPruner(_NNIPruner):
    """Remove the channels closest to the geometric median of their group (most replaceable)."""

    pruner = "fpgm"
