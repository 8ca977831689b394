"""Importance criteria: a group -> one score per channel (class) of the group, higher = keep.

Scores aggregate over every parameter slice that a channel owns in the group (the conv filter, the
BatchNorm scale and shift, the next layer's input columns, ...), so a channel is judged by all it
would take with it. `slots` restricts the aggregation (NNI's 'normal' mode: the layer's own filters).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .graph import DependencyGraph, Group, Slot

__all__ = ["l1", "l2", "fpgm", "IMPORTANCE"]


def _is_param(dg: DependencyGraph, s: Slot) -> bool:
    try:
        dg.gm.get_parameter(s.tensor[1:])
        return True
    except AttributeError:
        return False


def _tensor(dg: DependencyGraph, s: Slot) -> torch.Tensor:
    return (dg.gm.get_parameter(s.tensor[1:]) if _is_param(dg, s) else dg.gm.get_buffer(s.tensor[1:])).detach()


def _accumulate(dg: DependencyGraph, group: Group, slots: set[Slot] | None,
                per_element: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    scores = torch.zeros(group.n_units, dtype=torch.float64)
    for s in group.param_slots():
        if slots is None or s in slots:
            scores.index_add_(0, torch.as_tensor(group.slot_class[s]), per_element(_tensor(dg, s), s.dim).double())
    return scores


def _others(t: torch.Tensor, d: int) -> list[int]:
    return [i for i in range(t.dim()) if i != d]


def l1(dg: DependencyGraph, group: Group, slots: set[Slot] | None = None) -> torch.Tensor:
    """L1 norm of everything a channel owns ("Pruning Filters for Efficient ConvNets")."""
    return _accumulate(dg, group, slots, lambda t, d: torch.linalg.vector_norm(t, 1, _others(t, d)) if t.dim() > 1
                       else t.abs())


def l2(dg: DependencyGraph, group: Group, slots: set[Slot] | None = None) -> torch.Tensor:
    """L2 norm of everything a channel owns."""
    return _accumulate(dg, group, slots, lambda t, d: torch.linalg.vector_norm(t, 2, _others(t, d)).square()
                       if t.dim() > 1 else t.square()).sqrt()


def fpgm(dg: DependencyGraph, group: Group, slots: set[Slot] | None = None) -> torch.Tensor:
    """Distance to the other channels (geometric-median criterion, FPGM): near-median = replaceable."""

    def distance_sum(t: torch.Tensor, d: int) -> torch.Tensor:
        rows = t.float().movedim(d, 0).reshape(t.shape[d], -1)
        return torch.cdist(rows[None], rows[None])[0].sum(1)

    return _accumulate(dg, group, slots, distance_sum)


IMPORTANCE: dict[str, Callable[..., torch.Tensor]] = {"l1": l1, "l2": l2, "fpgm": fpgm}
