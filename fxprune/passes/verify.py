"""Verify pass: the pruned model computes what the masked model computes.

Pre:  the masked GraphModule, the pruned one from `passes.speedup`, the Masks, example inputs.
Post: nothing changes. If any output differs beyond tolerance, VerifyError names the first node (in
      graph order) whose pruned output differs from the masked output restricted to kept channels.
      Returns the largest absolute difference seen on the outputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.utils._pytree import tree_leaves

from ..errors import VerifyError, node_context
from ..masks import Masks
from .mask import is_mask_node

__all__ = ["verify", "tensors_close"]


def tensors_close(ref: torch.Tensor, got: torch.Tensor, rtol: float, atol: float) -> tuple[bool, float]:
    if ref.shape != got.shape:
        return False, float("inf")
    if not ref.is_floating_point():
        return bool(torch.equal(ref, got)), 0.0
    finite = torch.isfinite(ref)
    if not finite.all():  # NaN/inf in the model's own output: they must sit in the same places
        same = torch.equal(finite, torch.isfinite(got)) and torch.equal(ref.isnan(), got.isnan()) and \
            torch.equal(ref[ref.isinf()], got[ref.isinf()])
        if not same:
            return False, float("inf")
        ref, got = ref[finite], got[finite]
    diff = (ref.double() - got.double()).abs().max().item() if ref.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 0.0
    return diff <= atol + rtol * scale, diff


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def _restrict(value: torch.Tensor, key: str, masks: Masks) -> torch.Tensor:
    for dim in range(value.dim()):
        kept = masks.kept(key, dim)
        if kept is not None and value.shape[dim] == masks.graph.shapes[key][dim]:
            value = value.index_select(dim, torch.as_tensor(kept))
    return value


def _first_difference(masked: torch.fx.GraphModule, pruned: torch.fx.GraphModule, masks: Masks,
                      inputs: tuple[Any, ...], rtol: float, atol: float) -> str:
    rec_m, rec_p = _Recorder(masked), _Recorder(pruned)
    try:
        rec_m.run(*inputs)
        rec_p.run(*inputs)
    except Exception as e:  # the pruned model does not even run: name the node it stopped at
        last = list(rec_p.values)[-1] if rec_p.values else None
        node = next((n for n in pruned.graph.nodes if n.name not in rec_p.values), None)
        where = node_context(node) if node is not None else f"after {last}"
        return f"the pruned model fails at {where}: {type(e).__name__}: {e}"
    for node in pruned.graph.nodes:
        if node.op in ("placeholder", "output") or is_mask_node(node) or node.name not in rec_m.values:
            continue
        got, ref = rec_p.values[node.name], rec_m.values[node.name]
        if not isinstance(got, torch.Tensor) or not isinstance(ref, torch.Tensor):
            continue
        ref = _restrict(ref, node.name, masks)
        ok, diff = tensors_close(ref, got, rtol, atol)
        if not ok:
            shapes = f"pruned shape {tuple(got.shape)} vs expected {tuple(ref.shape)}"
            return f"first differing node: {node_context(node)}\n    ({shapes}, max abs diff {diff:.3g})"
    return "no single node differs; the outputs' comparison failed"


def verify(masked: torch.fx.GraphModule, pruned: torch.fx.GraphModule, masks: Masks, inputs: tuple[Any, ...],
           rtol: float = 1e-4, atol: float = 1e-5) -> float:
    """Check masked(inputs) == pruned(inputs). Raises VerifyError naming the first differing node."""
    with torch.no_grad():
        try:
            out_p = pruned(*inputs)
        except Exception as e:
            raise VerifyError(_first_difference(masked, pruned, masks, inputs, rtol, atol)) from e
        out_m = masked(*inputs)
    worst = 0.0
    leaves_m, leaves_p = tree_leaves(out_m), tree_leaves(out_p)
    if len(leaves_m) != len(leaves_p):
        raise VerifyError(f"the pruned model returns {len(leaves_p)} outputs, the masked one {len(leaves_m)}")
    for i, (ref, got) in enumerate(zip(leaves_m, leaves_p)):
        if not isinstance(ref, torch.Tensor):
            continue
        ok, diff = tensors_close(ref, got, rtol, atol)
        worst = max(worst, diff)
        if not ok:
            with torch.no_grad():
                where = _first_difference(masked, pruned, masks, inputs, rtol, atol)
            raise VerifyError(
                f"pruned model output {i} differs from the masked model's (max abs diff {diff:.3g}, "
                f"rtol={rtol}, atol={atol}).\n{where}\n"
                "This is a bug in a rule of fxprune (or a custom rule): please report it with the model.")
    return worst
