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

from ..graph import rule_nodes
from ..masks import Masks
from ..rules.context import MaskContext

__all__ = ["insert_masks", "MASK_PREFIX", "is_mask_node", "WeightMask", "MaskContext",
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


def _mask_buffer(gm: torch.fx.GraphModule, value: torch.Tensor) -> torch.fx.Node:
    count = sum(1 for name, _ in gm.named_buffers() if name.startswith(MASK_PREFIX))
    buf = f"{MASK_PREFIX}{count}"
    gm.register_buffer(buf, value)
    return gm.graph.get_attr(buf)


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


def insert_masks(gm: torch.fx.GraphModule, masks: Masks) -> torch.fx.GraphModule:
    """Insert mask nodes for `masks` into `gm` (in place) and return it."""
    for node, rule in rule_nodes(gm, "mask"):
        if not node.meta.get("fxprune_mask"):
            rule.mask(MaskContext(gm, node, masks, _mask_buffer))
    pruned: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for s, keep in masks.pruned_slots():
        if s in masks.graph.contracted and not s.tensor.startswith("@") and "[" not in s.tensor:
            pruned.setdefault(s.tensor, []).append((s.dim, torch.as_tensor(keep)))
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, dims in pruned.items():
        node = nodes[name]
        if node.op in ("placeholder", "output", "get_attr"):  # parameters are sliced; their users' outputs masked
            continue
        rank = len(masks.graph.shapes[name])
        last = node
        for dim, keep in dims:
            shape = [1] * rank
            shape[dim] = -1
            ref = node.meta.get("tensor_meta")
            dtype = ref.dtype if ref is not None else torch.float32
            with gm.graph.inserting_after(last):
                attr = _mask_buffer(gm, keep.to(dtype).view(shape))
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
