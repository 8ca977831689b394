"""Probe pass: collect the statistics data-driven criteria need, inside the graph.

Pre:  a shape-annotated GraphModule (fx or torch.export front end), its DependencyGraph, and the
      points to observe: `(node name, channel dim)` for activations, parameter qualnames for gradients.
Post: (`insert_probes`) every observed node is followed by a `call_module` to a `Probe` (registered
      as `fxprune_probe_<i>`) that returns its input unchanged and, while the graph runs, adds the
      per-channel sum and count of zeros of the activation into a `Stats` (up to `limit` batches), and,
      when a backward pass reaches it, |mean of a * dL/da| per channel (activation gradients);
      every observed parameter gets a post-accumulate-grad hook adding (w * dL/dw)^2 (up to `limit`
      backward passes). Probes change no value and no gradient. `remove_probes` takes every probe
      node, module and hook out again (the speedup pass never sees them).

The user's own training loop runs the probed model as it would the masked one, or
`fxprune.Session.collect` runs it over a plain iterable of batches.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from ..graph import Slot
from ..importance import Stats

__all__ = ["Probe", "insert_probes", "remove_probes", "taylor_hook", "PROBE_PREFIX"]

PROBE_PREFIX = "fxprune_probe_"


class Probe(torch.nn.Module):
    """Identity that accumulates per-channel activation statistics of the tensor passing through."""

    def __init__(self, slot: Slot, stats: Stats, limit: int | None) -> None:
        super().__init__()
        self.slot, self.stats, self.limit, self.seen, self.seen_backward = slot, stats, limit, 0, 0

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        return t.movedim(self.slot.dim, 0).reshape(t.shape[self.slot.dim], -1)

    def _gradient(self, a: torch.Tensor, grad: torch.Tensor) -> None:
        """dL/da arrived for an observed activation: add |mean over positions of a * dL/da| per channel."""
        if self.limit is not None and self.seen_backward >= self.limit:
            return
        self.seen_backward += 1
        with torch.no_grad():
            value = self._rows(a * grad).double().mean(1).abs()
            prev = self.stats.activation_taylor.get(self.slot)
            self.stats.activation_taylor[self.slot] = value if prev is None else prev + value
            self.stats.activation_backward[self.slot] = self.seen_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():  # activation gradients, when a backward comes
            a = x.detach()
            x.register_hook(lambda grad: self._gradient(a, grad))
        if self.limit is None or self.seen < self.limit:
            self.seen += 1
            self.stats.batches = max(self.stats.batches, self.seen)
            with torch.no_grad():
                per_channel = self._rows(x.detach())
                s, zeros = per_channel.double().sum(1), (per_channel == 0).sum(1)
                if self.slot in self.stats.activation_sum:
                    self.stats.activation_sum[self.slot] += s
                    self.stats.activation_zeros[self.slot] += zeros
                    self.stats.positions[self.slot] += per_channel.shape[1]
                else:
                    self.stats.activation_sum[self.slot] = s
                    self.stats.activation_zeros[self.slot] = zeros
                    self.stats.positions[self.slot] = per_channel.shape[1]
        return x


def taylor_hook(qualname: str, stats: Stats, limit: int | None, seen: list[int]) -> Any:
    """A post-accumulate-grad hook adding (w * dL/dw)^2 of one parameter into `stats` (the first `limit` passes)."""
    def hook(param: torch.Tensor) -> None:
        if param.grad is None or (limit is not None and seen[0] >= limit):
            return
        seen[0] += 1
        stats.backward = max(stats.backward, seen[0])
        with torch.no_grad():
            value = (param.detach() * param.grad.detach()).double().square()
            if qualname in stats.weight_taylor:
                stats.weight_taylor[qualname] += value
            else:
                stats.weight_taylor[qualname] = value

    return hook


def insert_probes(gm: torch.fx.GraphModule, activations: list[Slot], gradients: list[str], stats: Stats,
                  limit: int | None = None) -> list[Any]:
    """Insert probes after the nodes of `activations` and gradient hooks on `gradients` (in place).

    Args:
        gm: the (masked) GraphModule to observe.
        activations: `Slot(node name, channel dim)` per activation to observe.
        gradients: parameter qualnames whose (w * grad)^2 to accumulate.
        stats: where the statistics go.
        limit: batches (forward passes; backward passes for gradients) to count; None: every one.

    Returns:
        The gradient hook handles (`remove_probes` removes them).
    """
    nodes = {n.name: n for n in gm.graph.nodes}
    for i, slot in enumerate(activations):
        node = nodes[slot.tensor]
        name = f"{PROBE_PREFIX}{i}"
        gm.add_submodule(name, Probe(slot, stats, limit))
        with gm.graph.inserting_after(node):
            probe = gm.graph.call_module(name, (node,))
        probe.meta.update({k: node.meta[k] for k in ("tensor_meta", "val") if k in node.meta})
        probe.meta["fxprune_probe"] = True
        node.replace_all_uses_with(probe, delete_user_cb=lambda user, p=probe: user is not p)
    handles = [gm.get_parameter(q).register_post_accumulate_grad_hook(taylor_hook(q, stats, limit, [0]))
               for q in gradients]
    gm.graph.lint()
    gm.recompile()
    return handles


def remove_probes(gm: torch.fx.GraphModule, handles: list[Any]) -> None:
    """Take every probe out of `gm` (nodes, submodules, gradient hooks); the graph is as before."""
    for handle in handles:
        handle.remove()
    for node in list(gm.graph.nodes):
        if node.meta.get("fxprune_probe"):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            gm.delete_submodule(node.target)
    gm.graph.lint()
    gm.recompile()
