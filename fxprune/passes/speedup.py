"""Speedup pass: physically remove the masked channels.

Pre:  a GraphModule (masked by `passes.mask` or not) whose original nodes are the ones `masks.graph`
      was built on (same names), and the Masks.
Post: a new GraphModule (the input is not modified) where mask nodes are gone, unstructured weight
      masks are baked into the weights, every parameter and buffer is sliced along its pruned dims,
      module attributes (`out_channels`, `groups`, `num_features`, ...) match the new shapes, and the
      shape constants held in node arguments (`view`/`reshape`/`expand` sizes, `split` sizes, slice
      bounds, `chunk`) are rewritten by each op's rule. Unpruned tensors are shared with the input
      model until `detach_shared` copies them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.fx

from ..errors import FxPruneError, node_context
from ..graph import module_map, rule_nodes
from ..masks import Masks
from ..rules.context import RewriteContext
from .mask import MASK_PREFIX, bake_parametrizations, is_mask_node, unmask_node
from .trace import init_without_code

__all__ = ["speedup_pass", "RewriteContext", "new_shapes"]


def new_shapes(masks: Masks) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor after removal: each pruned dim shrinks to its kept count."""
    out: dict[str, tuple[int, ...]] = {}
    for s, keep in masks.pruned_slots():
        shape = list(out.get(s.tensor, masks.graph.shapes[s.tensor]))
        shape[s.dim] = int(np.count_nonzero(keep))
        out[s.tensor] = tuple(shape)
    return out


def _drop_mask_nodes(gm: torch.fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if "fxprune_unmasked" in node.meta:
            unmask_node(node)
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and is_mask_node(node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    for node in list(gm.graph.nodes):
        if is_mask_node(node) and not node.users:
            gm.graph.erase_node(node)
    for name in [n for n, _ in gm.named_buffers() if n.startswith(MASK_PREFIX)]:
        delattr(gm, name)


def _slice_tensors(gm: torch.fx.GraphModule, masks: Masks) -> None:
    by_tensor: dict[str, list[tuple[int, np.ndarray]]] = {}
    for s, keep in masks.pruned_slots():
        if s.tensor.startswith("@"):
            by_tensor.setdefault(s.tensor[1:], []).append((s.dim, np.flatnonzero(keep)))
    done: dict[int, torch.Tensor] = {}  # tied tensors (one object, several names) stay one object
    for qualname, dims in by_tensor.items():
        owner_name, _, attr = qualname.rpartition(".")
        owner = gm.get_submodule(owner_name)
        old = getattr(owner, attr)
        if id(old) not in done:
            new = old.detach()
            for dim, idx in sorted(dims, key=lambda t: t[0]):  # index_select copies: no clone needed
                new = new.index_select(dim, torch.as_tensor(idx, device=new.device))
            done[id(old)] = (torch.nn.Parameter(new, requires_grad=old.requires_grad)
                             if isinstance(old, torch.nn.Parameter) else new)
        setattr(owner, attr, done[id(old)])  # a Parameter, a buffer or a plain tensor attribute alike


_CONTAINERS = (dict, OrderedDict, list, set)


def _copy_memo(gm: torch.fx.GraphModule) -> dict[int, Any]:
    """A `copy.deepcopy` memo that makes the copy of `gm` share every tensor and give each submodule a shallow
    copy: its own `__dict__` and its own containers one level down (`_parameters`, `_modules`, hook dicts, ...),
    the same tensors and other attribute values. Rewrite rules assign module attributes (`out_channels = n`),
    they never mutate a value in place, so this isolates the copy from `gm` at a fraction of a deep copy's cost
    (which walks every object of every module)."""
    memo: dict[int, Any] = {id(t): t for t in list(gm.parameters()) + list(gm.buffers())}
    modules = [m for m in gm.modules() if m is not gm]
    for m in modules:
        new = m.__class__.__new__(m.__class__)
        new.__dict__.update({k: v.copy() if type(v) in _CONTAINERS else v for k, v in vars(m).items()})
        memo[id(m)] = new
    for m in modules:
        children = memo[id(m)]._modules
        for k, child in children.items():
            if child is not None:
                children[k] = memo[id(child)]
    # gm's own bookkeeping: a new meta without the mask buffers' record (the copy has none, and a session on it
    # would look for them; the trace pass's entries are written once and only read), and no line map (generated
    # again with the copy's code)
    memo[id(gm.meta)] = {k: v for k, v in gm.meta.items() if k != "fxprune_masks"}
    if isinstance(vars(gm).get("_lineno_map"), dict):
        memo[id(vars(gm)["_lineno_map"])] = None
    return memo


def _copy_without_code(gm: torch.fx.GraphModule, memo: dict[int, Any]) -> torch.fx.GraphModule:
    """`copy.deepcopy(gm, memo)` without generating the copy's code (`speedup_pass` generates it once, at the end):
    `GraphModule.__deepcopy__` initialises the copy with `gm._deepcopy_init()`, here `init_without_code` (the
    instance attribute is gone again on return)."""
    vars(gm)["_deepcopy_init"] = lambda: init_without_code
    try:
        return copy.deepcopy(gm, memo)
    finally:
        del vars(gm)["_deepcopy_init"]


def speedup_pass(gm: torch.fx.GraphModule, masks: Masks) -> torch.fx.GraphModule:
    """Return a physically pruned copy of `gm`. See the module docstring for pre/postconditions."""
    pruned = _copy_without_code(gm, _copy_memo(gm))  # shares weights; sliced or baked ones get replaced below
    _drop_mask_nodes(pruned)
    bake_parametrizations(pruned)
    _slice_tensors(pruned, masks)
    new = new_shapes(masks)
    modules = module_map(pruned)
    for node, rule in rule_nodes(pruned, "rewrite", modules):
        c = RewriteContext(pruned, node, masks, new, modules)
        if not any(k in new for k in c.inputs() + [node.name] + [f"{node.name}[0]"]):
            continue
        try:
            rule.rewrite(c)
        except Exception as e:
            raise FxPruneError(f"speedup pass: cannot rewrite {node_context(node)}: {e}") from e
    pruned.graph.lint()
    pruned.recompile()
    return pruned


def detach_shared(pruned: torch.nn.Module, other: torch.nn.Module) -> None:
    """Give `pruned` its own copy of every tensor it still shares with `other`."""
    theirs = {id(t) for t in list(other.parameters()) + list(other.buffers())}
    copies: dict[int, torch.Tensor] = {}  # one copy per tensor, so tied weights stay tied
    for module in pruned.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and id(p) in theirs:
                if id(p) not in copies:
                    copies[id(p)] = torch.nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
                module._parameters[name] = copies[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None and id(b) in theirs:
                module._buffers[name] = copies.setdefault(id(b), b.clone())
