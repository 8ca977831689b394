"""Masks: which channels of each group are kept, and (unstructured) which weights are zero; and the
selection that turns scores into them (`compute_masks`: per group with per-tensor quotas, or ranked
globally; `round_to`; NNI's `max_sparsity_per_layer`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.utils.parametrize as parametrize

from .config import Config, RuleConfig
from .graph import DependencyGraph, Group, Slot
from .layers import Layer

__all__ = ["Masks", "compute_masks", "magnitude_masks", "magnitude_keep", "current_weight", "promote_zero_channels",
           "Scorer", "keep_largest"]

#: scores for one group: (group, slots or None for the whole group) -> one score per channel, higher = keep
Scorer = Callable[[Group, "set[Slot] | None"], torch.Tensor]


@dataclass
class Masks:
    """Per group, a bool per channel (True = keep); per parameter, an optional weight mask.

    `graph` is the dependency graph the masks were computed on: the speedup pass needs it to know
    which dimension of which tensor each channel lives in.
    """

    graph: DependencyGraph
    keep: dict[int, np.ndarray] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for the report: what was decided beyond the scores

    def slot_keep(self, s: Slot) -> np.ndarray | None:
        """Bool per element of a slot, or None when nothing in it is removed."""
        gid = self.graph.group_of.get(s)
        if gid is None or gid not in self.keep or self.keep[gid].all():
            return None
        return self.keep[gid][self.graph.groups[gid].slot_class[s]]

    def kept(self, key: str, dim: int) -> np.ndarray | None:
        """Indices kept along (tensor key, dim), or None when nothing there is removed."""
        shape = self.graph.shapes.get(key)
        if shape is None:
            return None
        keep = self.slot_keep(Slot(key, dim % len(shape)))
        return None if keep is None else np.flatnonzero(keep)

    def pruned_slots(self) -> list[tuple[Slot, np.ndarray]]:
        """Every slot that loses elements, with its bool keep vector."""
        out = []
        for gid, keep in self.keep.items():
            if not keep.all():
                group = self.graph.groups[gid]
                out += [(s, keep[group.slot_class[s]]) for s in group.slots]
        return out

    @property
    def structured(self) -> bool:
        return any(not k.all() for k in self.keep.values())

    def to_nni(self) -> dict[str, dict[str, torch.Tensor]]:
        """NNI's format: {layer: {param: 0/1 float mask of the param's shape}}, for masked params only."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for key, shape in self.graph.shapes.items():
            if not key.startswith("@"):
                continue
            mask = self.weights[key[1:]].float() if key[1:] in self.weights else torch.ones(shape)
            for d in range(len(shape)):
                keep = self.slot_keep(Slot(key, d))
                if keep is not None:
                    view = [1] * len(shape)
                    view[d] = -1
                    mask = mask * torch.as_tensor(keep, dtype=torch.float32).view(view)
            if (mask == 0).any():
                layer, _, attr = key[1:].rpartition(".")
                out.setdefault(layer, {})[attr] = mask
        return out


def _cap(rule: RuleConfig, layer_names: list[str]) -> float:
    cap = rule.max_sparsity_per_layer
    if cap is None:
        return 1.0
    if isinstance(cap, dict):
        return min((cap.get(n, 1.0) for n in layer_names), default=1.0)
    return cap


def compute_masks(dg: DependencyGraph, cfg: Config, layers: list[Layer], score: Scorer,
                  previous: Masks | None = None) -> Masks:
    """Scores -> per-group keep vectors for the selected layers.

    Args:
        dg: the dependency graph.
        cfg: the config (rules, global ranking, round_to, mode).
        layers: the selected layers (`fxprune.layers.select_layers`).
        score: the criterion, bound to its statistics: `score(group, slots)` (slots None: the whole group).
        previous: masks already applied: their removed channels stay removed and count towards the
            sparsity (they score below every other channel), so a later step only removes more.
    """
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
        scores = score(group, only)
        scores[~torch.as_tensor(prunable)] = float("inf")
        gone = previous.keep.get(gid) if previous is not None else None
        if gone is not None and not gone.all():
            finite = scores[torch.isfinite(scores)]
            floor = (finite.min().item() if finite.numel() else 0.0) - 1.0
            scores[torch.as_tensor(~gone)] = floor
        if cfg.ranks_globally or any(r.total_sparsity is not None for r in rules):
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
    if previous is not None:  # never revive: what an earlier step removed stays removed
        for gid, keep in previous.keep.items():
            masks.keep[gid] = masks.keep.get(gid, keep) & keep
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


def magnitude_masks(dg: DependencyGraph, cfg: Config, layers: list[Layer]) -> Masks:
    """Unstructured magnitude masks (Level) on each selected layer's weight (per layer, or global)."""
    masks = Masks(dg)
    masks.weights.update(magnitude_keep(dg.gm, cfg, layers))
    return masks


def magnitude_keep(module: torch.nn.Module, cfg: Config, layers: list[Layer]) -> dict[str, torch.Tensor]:
    """Level's keep mask per selected layer's weight of `module` (a traced graph or the user's own model):
    `{weight qualname: bool tensor}`, per layer or over a pool of layers ranked globally."""
    keep: dict[str, torch.Tensor] = {}
    chosen = [lay for lay in layers if not lay.excluded]
    pools: dict[int, list[Layer]] = {}
    for layer in chosen:
        weight = current_weight(module, layer.slot.tensor[1:]).detach().abs()
        if layer.rule.total_sparsity is not None or cfg.ranks_globally:
            pools.setdefault(id(layer.rule), []).append(layer)
            continue
        keep[layer.slot.tensor[1:]] = keep_largest(weight, layer.rule.sparsity)
    for members in pools.values():
        weights = [current_weight(module, m.slot.tensor[1:]).detach().abs() for m in members]
        flat = torch.cat([w.flatten() for w in weights])
        k = int(math.floor(members[0].rule.target * flat.numel()))
        threshold = flat.kthvalue(k).values if k > 0 else -1.0
        for m, w in zip(members, weights):
            keep[m.slot.tensor[1:]] = w > threshold
    by_tensor: dict[int, list[str]] = {}  # tied weights: one tensor, one mask (zero what any name zeroes)
    for name in keep:
        by_tensor.setdefault(id(current_weight(module, name, original=True)), []).append(name)
    for names in by_tensor.values():
        if len(names) > 1:
            tied = torch.stack([keep[n] for n in names]).all(0)
            for n in names:
                keep[n] = tied
    return keep


def current_weight(module: torch.nn.Module, name: str, original: bool = False) -> torch.Tensor:
    """A weight by qualname; once a session masked it (a parametrization), its masked value, so the weights
    an earlier step removed are zeros, the smallest, and count towards the sparsity (`original`: the
    stored parameter, to tell tied weights apart)."""
    owner, _, attr = name.rpartition(".")
    owner_module = module.get_submodule(owner)
    if parametrize.is_parametrized(owner_module, attr):
        return owner_module.parametrizations[attr].original if original else getattr(owner_module, attr)
    return module.get_parameter(name)


def keep_largest(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool keep mask of `weight`'s shape: all but its `int(sparsity * numel)` smallest values (ties by position),
    NNI's per-layer rule (Level on |w|; a layer's channel scores in normal mode)."""
    k = int(math.floor(sparsity * weight.numel() + 1e-9))  # k/n * n of a relative sparsity is k, not k - 1
    keep = torch.ones_like(weight, dtype=torch.bool)
    if k > 0:
        keep.view(-1)[torch.argsort(weight.flatten(), stable=True)[:k]] = False
    return keep


def _effective(gm: torch.nn.Module, qualname: str) -> torch.Tensor | None:
    """A parameter's value as the model uses it (weight masks applied), or None for a buffer."""
    owner, _, attr = qualname.rpartition(".")
    module = gm.get_submodule(owner)
    if attr not in module._parameters and not (hasattr(module, "parametrizations") and attr in module.parametrizations):
        return None
    return getattr(module, attr).detach()


def _zero_classes(masks: Masks) -> dict[int, np.ndarray]:
    """Per group, the kept, prunable channels whose every parameter element is zero, or whose every input-side
    weight (a channel a layer reads: dim >= 1 of a 2-D+ weight) is zero, weight masks applied."""
    dg, out = masks.graph, {}
    for group in dg.groups:
        if "hidden" in group.roles or not group.prunable.any():  # norms over the hidden size would change
            continue
        nonzero_all = np.zeros(group.n_units, dtype=np.int64)
        nonzero_in = np.zeros(group.n_units, dtype=np.int64)
        has_in = False
        for s in group.param_slots():
            t = _effective(dg.gm, s.tensor[1:])
            if t is None:
                continue
            others = [d for d in range(t.dim()) if d != s.dim]
            per_element = (t.ne(0).sum(others) if others else t.ne(0)).numpy().astype(np.int64)
            np.add.at(nonzero_all, group.slot_class[s], per_element)
            if t.dim() >= 2 and s.dim >= 1:
                has_in = True
                np.add.at(nonzero_in, group.slot_class[s], per_element)
        kept = masks.keep.get(group.id, np.ones(group.n_units, dtype=bool))
        dead = ((nonzero_all == 0) | (has_in & (nonzero_in == 0))) & group.prunable & kept
        if dead.any():
            out[group.id] = dead
    return out


def _outputs(model: torch.nn.Module, inputs: tuple) -> list[torch.Tensor]:
    flags = {name: m.training for name, m in model.named_modules()}
    for m in model.modules():
        m.training = False
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        for name, m in model.named_modules():
            m.training = flags[name]
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.allclose(x, y, rtol=1e-4, atol=1e-5, equal_nan=True)
                                    for x, y in zip(a, b))


def promote_zero_channels(masks: Masks, apply: Callable[[Masks], None], model: torch.nn.Module,
                          inputs: tuple) -> Masks:
    """After unstructured pruning (Level, ADMM, Movement): remove whole the channels that weight masks left
    without effect, so that the speedup pass really shrinks the model.

    A channel qualifies when every parameter element it owns in its group is zero, or when every layer that
    reads it has zero weights for it. Each such group's promotion is kept only if the masked model's outputs
    on `inputs` do not change (it never changes what the model computes); the rest stay weight masks.

    Args:
        masks: the session's masks (with weight masks).
        apply: writes masks into the model (`Session.apply`).
        model: the masked model; inputs: its example inputs.

    Returns:
        The masks to finish with (the same object when nothing qualifies), `notes` saying what was removed.
    """
    if not any((~k).any() for k in masks.weights.values()):
        return masks
    dead = _zero_classes(masks)
    if not dead:
        return masks
    reference = _outputs(model, inputs)
    dg = masks.graph

    def with_groups(gids: list[int]) -> Masks:
        new = Masks(dg, dict(masks.keep), dict(masks.weights), list(masks.notes))
        for gid in gids:
            new.keep[gid] = masks.keep.get(gid, np.ones(dg.groups[gid].n_units, dtype=bool)) & ~dead[gid]
        return new

    def works(gids: list[int]) -> bool:
        apply(with_groups(gids))
        return _same(reference, _outputs(model, inputs))

    accepted = list(dead) if works(list(dead)) else [gid for gid in dead if works([gid])]
    final = with_groups(accepted)
    apply(final)
    removed = sum(int(dead[gid].sum()) for gid in accepted)
    if removed:
        final.notes.append(f"{removed} channel(s) in {len(accepted)} group(s) had all-zero weights after "
                           "unstructured pruning and were removed")
    return final
