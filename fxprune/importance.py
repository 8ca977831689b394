"""Importance criteria: a group -> one score per channel (class) of the group, higher = keep.

Scores aggregate over every parameter slice that a channel owns in the group (the conv filter, the
BatchNorm scale and shift, the next layer's input columns, ...), so a channel is judged by all it
would take with it. `slots` restricts the aggregation (NNI's 'normal' mode: the layer's own filters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .graph import DependencyGraph, Group, Slot

__all__ = ["l1", "l2", "fpgm", "IMPORTANCE", "param_rows"]


def param_rows(dg: DependencyGraph, group: Group, slots: set[Slot] | None = None
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(rows, class index) per parameter slot: rows[i] is the flattened slice of element i."""
    for s in group.param_slots():
        if slots is not None and s not in slots:
            continue
        t = dg.gm.get_parameter(s.tensor[1:]) if _is_param(dg, s) else dg.gm.get_buffer(s.tensor[1:])
        t = t.detach().float()
        yield t.movedim(s.dim, 0).reshape(t.shape[s.dim], -1), torch.as_tensor(group.slot_class[s])


def _is_param(dg: DependencyGraph, s: Slot) -> bool:
    try:
        dg.gm.get_parameter(s.tensor[1:])
        return True
    except AttributeError:
        return False


def _accumulate(dg: DependencyGraph, group: Group, slots: set[Slot] | None,
                per_row: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    scores = torch.zeros(group.n_units, dtype=torch.float64)
    for rows, cls in param_rows(dg, group, slots):
        scores.index_add_(0, cls, per_row(rows).double())
    return scores


def l1(dg: DependencyGraph, group: Group, slots: set[Slot] | None = None) -> torch.Tensor:
    """L1 norm of everything a channel owns ("Pruning Filters for Efficient ConvNets")."""
    return _accumulate(dg, group, slots, lambda r: r.abs().sum(1))


def l2(dg: DependencyGraph, group: Group, slots: set[Slot] | None = None) -> torch.Tensor:
    """L2 norm of everything a channel owns."""
    return _accumulate(dg, group, slots, lambda r: r.pow(2).sum(1)).sqrt()


def fpgm(dg: DependencyGraph, group: Group, slots: set[Slot] | None = None) -> torch.Tensor:
    """Distance to the other channels (geometric-median criterion, FPGM): near-median = replaceable."""
    return _accumulate(dg, group, slots, lambda r: torch.cdist(r[None], r[None])[0].sum(1))


IMPORTANCE: dict[str, Callable[..., torch.Tensor]] = {"l1": l1, "l2": l2, "fpgm": fpgm}
