"""Mask pass: make pruned channels exactly zero wherever they are consumed, in a trainable model.

Pre:  a shape-annotated GraphModule and Masks computed on its dependency graph.
Post: the same GraphModule (modified in place and returned) where every tensor whose removed
      channels some op contracts (a conv, linear or matmul input; `DependencyGraph.contracted`) is
      followed by `torch.mul(x, <buffer>)`, the buffer named `fxprune_mask_<i>` (0/1 along the
      pruned dim); every user of the node reads the masked value. Elsewhere a removed channel only
      ever reaches other removed channels (that is what the rules guarantee), so it needs no mask.
      Unstructured weight masks become a parametrization (weight = original * mask). Mask nodes carry
      `meta["fxprune_mask"] = True`, and the speedup pass removes them again. Ops whose rule has a
      `mask` hook (norms and means over a pruned dim) are swapped for a masked twin that takes the keep
      vector as `keep=` and computes over kept channels only (`meta["fxprune_unmasked"]` holds the op to
      swap back to); the pruned model computes exactly that.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.utils.parametrize as parametrize

from ..graph import Slot, module_map, rule_nodes
from ..masks import Masks
from ..rules.context import MaskContext

__all__ = ["insert_masks", "update_masks", "MASK_PREFIX", "is_mask_node", "WeightMask", "MaskContext",
           "bake_parametrizations"]

MASK_PREFIX = "fxprune_mask_"


class WeightMask(torch.nn.Module):
    """Parametrization multiplying a weight by a fixed 0/1 mask (kept in a buffer).

    The buffer is the bool keep tensor itself (shared with `Masks.weights`, no copy): a float mask would
    cost as much memory as the weight it masks.
    """

    def __init__(self, keep: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", keep.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def is_mask_node(node: torch.fx.Node) -> bool:
    """Whether a node is a mask multiply inserted by this pass (or the get_attr of its buffer)."""
    if node.op == "get_attr":
        return str(node.target).startswith(MASK_PREFIX) or bool(node.meta.get("fxprune_mask"))
    return node.op == "call_function" and node.target is torch.mul and any(
        isinstance(a, torch.fx.Node) and a.op == "get_attr" and str(a.target).startswith(MASK_PREFIX)
        for a in node.args)


def _mask_buffer(gm: torch.fx.GraphModule, value: torch.Tensor, slot: Slot) -> torch.fx.Node:
    """Register a mask buffer for `slot` (recorded in `gm.meta["fxprune_masks"]` for `update_masks`)."""
    slots = gm.meta.setdefault("fxprune_masks", {})
    buf = f"{MASK_PREFIX}{len(slots)}"
    gm.register_buffer(buf, value)
    slots[buf] = slot
    return gm.graph.get_attr(buf)


def _keep_or_ones(masks: Masks, slot: Slot, maskable: set[int]) -> torch.Tensor | None:
    """Bool keep vector of a slot; all ones where its group is maskable but nothing is removed; else None."""
    keep = masks.slot_keep(slot)
    if keep is not None:
        return torch.as_tensor(keep)
    gid = masks.graph.group_of.get(slot)
    if gid in maskable:
        return torch.ones(masks.graph.shapes[slot.tensor][slot.dim], dtype=torch.bool)
    return None


def _slot_buffer(gm: torch.fx.GraphModule, masks: Masks, slot: Slot, maskable: set[int]) -> torch.fx.Node | None:
    """A 0/1 buffer broadcasting along `slot` (for a norm's masked twin), or None where it needs none."""
    keep = _keep_or_ones(masks, slot, maskable)
    if keep is None:
        return None
    shape = [1] * len(masks.graph.shapes[slot.tensor])
    shape[slot.dim] = -1
    return _mask_buffer(gm, keep.float().view(shape), slot)


def update_masks(gm: torch.fx.GraphModule, masks: Masks) -> None:
    """Write `masks` into the mask buffers `insert_masks` made (in place; no new node, no re-trace).

    Raises:
        ValueError: `masks` remove channels of a group that has no mask buffer (not maskable when inserted).
    """
    slots: dict[str, Slot] = gm.meta.get("fxprune_masks", {})
    covered = {masks.graph.group_of.get(s) for s in slots.values()}
    missing = [gid for gid, keep in masks.keep.items() if not keep.all() and gid not in covered
               and any(s in masks.graph.contracted for s in masks.graph.groups[gid].slots)]
    if missing:
        raise ValueError(f"the masks remove channels of group(s) {missing}, which have no mask buffer in this model")
    for name, slot in slots.items():
        keep = masks.slot_keep(slot)
        buf = gm.get_buffer(name)
        with torch.no_grad():
            buf.fill_(1) if keep is None else buf.copy_(torch.as_tensor(keep).to(buf.dtype).view(buf.shape))


def unmask_node(node: torch.fx.Node) -> None:
    """Swap a masked twin made by `MaskContext.swap` back to its plain op (without `keep`)."""
    unmasked = node.meta.pop("fxprune_unmasked")
    node.op = "call_method" if isinstance(unmasked, str) else "call_function"
    node.target = unmasked
    node.kwargs = {k: v for k, v in node.kwargs.items() if k != "keep"}


def bake_parametrizations(root: torch.nn.Module, only: set[str] | None = None) -> None:
    """Replace every parametrized tensor under `root` by a plain Parameter (or buffer) of its value.

    Unlike `parametrize.remove_parametrizations`, this never writes into the original tensor and never
    edits the parametrized class, which a deep copy shares with the module it was copied from (removing
    the class's property there breaks the other copy). Tied originals stay tied. `only`: qualnames.
    """
    baked: dict[int, torch.Tensor] = {}
    for prefix, module in list(root.named_modules()):
        if not parametrize.is_parametrized(module):
            continue
        for attr in list(module.parametrizations.keys()):
            qualname = f"{prefix}.{attr}" if prefix else attr
            if only is not None and qualname not in only:
                continue
            original = module.parametrizations[attr].original
            with torch.no_grad():
                value = getattr(module, attr).detach()
            if id(original) not in baked:
                baked[id(original)] = (torch.nn.Parameter(value.clone(), requires_grad=original.requires_grad)
                                       if isinstance(original, torch.nn.Parameter) else value.clone())
            del module.parametrizations[attr]
            cls = module.__class__
            if not module.parametrizations:
                del module._modules["parametrizations"]
                module.__class__ = cls.__bases__[0]
            else:  # a class of its own, without this tensor's property (the old class stays intact)
                body = {k: v for k, v in cls.__dict__.items() if k not in (attr, "__dict__", "__weakref__")}
                module.__class__ = type(cls.__name__, cls.__bases__, body)
            new = baked[id(original)]
            if isinstance(new, torch.nn.Parameter):
                module.register_parameter(attr, new)
            else:
                module.register_buffer(attr, new)


def insert_masks(gm: torch.fx.GraphModule, masks: Masks, maskable: set[int] | None = None) -> torch.fx.GraphModule:
    """Insert mask nodes for `masks` into `gm` (in place) and return it.

    Args:
        gm: the traced, shape-annotated model.
        masks: what to remove now.
        maskable: groups that get mask nodes even where `masks` removes nothing yet (all-ones buffers), so
            that later masks are applied by `update_masks` without touching the graph (a pruning session).
    """
    maskable = maskable or set()
    modules = module_map(gm)
    for node, rule in rule_nodes(gm, "mask", modules):
        if not node.meta.get("fxprune_mask"):
            rule.mask(MaskContext(gm, node, masks, lambda g, slot: _slot_buffer(g, masks, slot, maskable), modules))
    pruned: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for s in masks.graph.contracted:
        keep = _keep_or_ones(masks, s, maskable)
        if keep is not None and not s.tensor.startswith("@") and "[" not in s.tensor:
            pruned.setdefault(s.tensor, []).append((s.dim, keep))
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in sorted(pruned, key=lambda n: masks.graph.offsets.get(Slot(n, 0), 0)):
        node = nodes[name]
        if node.op in ("placeholder", "output", "get_attr"):  # parameters are sliced; their users' outputs masked
            continue
        rank = len(masks.graph.shapes[name])
        last = node
        for dim, keep in sorted(pruned[name], key=lambda t: t[0]):
            shape = [1] * rank
            shape[dim] = -1
            ref = node.meta.get("tensor_meta")
            dtype = ref.dtype if ref is not None else torch.float32
            with gm.graph.inserting_after(last):
                attr = _mask_buffer(gm, keep.to(dtype).view(shape), Slot(name, dim))
            with gm.graph.inserting_after(attr):
                mul = gm.graph.call_function(torch.mul, (last, attr))
            # Only shape and source meta: e.g. 'is_wrapped' would make codegen call fx.wrap("torch.mul").
            mul.meta.update({k: node.meta[k] for k in ("tensor_meta", "val", "stack_trace") if k in node.meta})
            mul.meta["fxprune_mask"] = True
            last.replace_all_uses_with(mul, delete_user_cb=lambda user, m=mul: user is not m)
            last = mul
    for qualname, keep in masks.weights.items():
        owner, _, attr = qualname.rpartition(".")
        module = gm.get_submodule(owner)
        if parametrize.is_parametrized(module, attr):
            bake_parametrizations(module, {attr})
        parametrize.register_parametrization(module, attr, WeightMask(keep))
    gm.graph.lint()
    gm.recompile()
    return gm
