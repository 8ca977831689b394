"""Importance criteria: a group (and what the probe pass collected) -> one score per channel, higher = keep.

Every criterion aggregates over the tensors a channel owns in its group: all of them in
dependency-aware mode (the conv filter, the BatchNorm scale and shift, the next layer's input columns,
the activations the probe pass saw), or only those in `slots` (NNI's normal mode: the layer's own).
`CRITERIA[name]` says what each needs: weights (always there), activations or gradients (collected
over batches by `fxprune.passes.probe` into a `Stats`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

from .graph import DependencyGraph, Group, Slot

__all__ = ["Stats", "Criterion", "CRITERIA", "accumulate", "WeightSums", "tensor_scores", "l1", "l2", "fpgm",
           "bn_scale", "apoz", "mean_activation", "taylor", "activation_taylor"]


@dataclass
class Stats:
    """Statistics the probe pass accumulated, per element of a slot (a channel of a tensor).

    Attributes:
        batches: forward passes counted.
        activation_sum: sum of the activation over every position but the channel dim, per channel.
        activation_zeros: how many of those positions were exactly zero, per channel.
        positions: how many positions each channel of a slot was summed over.
        activation_taylor: per channel, sum over backward passes of |mean over positions of a * dL/da|
            (Molchanov et al. 2017), at the same activations.
        activation_backward: backward passes counted per activation slot.
        weight_taylor: per parameter qualname, sum over backward passes of (w * dL/dw)^2 (weight's shape).
        backward: backward passes counted.
    """

    batches: int = 0
    activation_sum: dict[Slot, torch.Tensor] = field(default_factory=dict)
    activation_zeros: dict[Slot, torch.Tensor] = field(default_factory=dict)
    positions: dict[Slot, int] = field(default_factory=dict)
    activation_taylor: dict[Slot, torch.Tensor] = field(default_factory=dict)
    activation_backward: dict[Slot, int] = field(default_factory=dict)
    weight_taylor: dict[str, torch.Tensor] = field(default_factory=dict)
    backward: int = 0


@dataclass(frozen=True)
class Criterion:
    """A scoring function `fn(dg, group, stats, slots) -> scores` and what it needs:
    "weights", "activations" or "gradients"."""

    fn: Callable[[DependencyGraph, Group, Stats | None, set[Slot] | None], torch.Tensor]
    needs: frozenset[str]


def _tensor(dg: DependencyGraph, s: Slot) -> torch.Tensor:
    try:
        return dg.gm.get_parameter(s.tensor[1:]).detach()
    except AttributeError:
        return dg.gm.get_buffer(s.tensor[1:]).detach()


def accumulate(dg: DependencyGraph, group: Group, slots: set[Slot] | None,
                per_element: Callable[[torch.Tensor, int], torch.Tensor],
                tensor: Callable[[Slot], torch.Tensor | None] | None = None) -> torch.Tensor:
    """Sum `per_element(t, dim)` (one value per element of the slot) into the group's classes, over its
    parameter slots (or the slots `tensor` gives a tensor for)."""
    scores = torch.zeros(group.n_units, dtype=torch.float64)
    candidates = group.param_slots() if tensor is None else group.slots
    for s in candidates:
        if slots is not None and s not in slots:
            continue
        if tensor is None:
            values = _weight_sums(dg, s, per_element)
        else:
            t = tensor(s)
            values = None if t is None else per_element(t, s.dim)
        if values is not None:
            scores.index_add_(0, torch.as_tensor(group.slot_class[s]), values.double())
    return scores


class WeightSums:
    """Per-channel sums of |w| (L1) and w squared (L2), each weight read once: a weight is scored once per group it
    is in (a conv's filters in its own group, its input channels in the previous layer's), so its sums per filter
    and per input channel are taken together. |w| goes into one reused scratch buffer, not a new tensor per weight
    (fresh memory costs page faults: about a third of scoring ResNet-50). Valid while the weights do not change.

    Used as a context manager around scoring calls (`Session.scorer` does)."""

    def __init__(self, largest: int = 0) -> None:
        """`largest`: elements of the largest weight it will be given, so that the scratch buffer is allocated
        once (growing it weight by weight costs fresh memory each time)."""
        self.sums: dict[tuple[str, Callable, int], torch.Tensor] = {}
        self._scratch = torch.empty(0)
        self._largest = largest
        self._tokens: list[Any] = []
        self._tensors: dict[str, torch.Tensor] | None = None  # "@qualname" -> parameter or buffer, built once

    def tensor(self, dg: DependencyGraph, s: Slot) -> torch.Tensor:
        """The parameter or buffer of slot `s` (`_tensor`, from one walk of the model instead of a lookup each)."""
        if self._tensors is None:
            self._tensors = {f"@{name}": t.detach() for named in (dg.gm.named_parameters(remove_duplicate=False),
                                                                  dg.gm.named_buffers(remove_duplicate=False))
                             for name, t in named}
        t = self._tensors.get(s.tensor)
        return _tensor(dg, s) if t is None else t

    def __enter__(self) -> WeightSums:
        self._tokens.append(_active.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _active.reset(self._tokens.pop())

    def add(self, s: Slot, t: torch.Tensor, fn: Callable[..., torch.Tensor]) -> torch.Tensor:
        """`t`'s sums of `fn(t)` per element of dims 0, 1 and `s.dim`, kept; the one of `s.dim` returned."""
        if self._scratch.numel() < t.numel() or (self._scratch.dtype, self._scratch.device) != (t.dtype, t.device):
            self._scratch = torch.empty(max(t.numel(), self._largest), dtype=t.dtype, device=t.device)
        values = fn(t, out=self._scratch[:t.numel()].view(t.shape))
        for d in {0, 1, s.dim}:
            self.sums[(s.tensor, fn, d)] = _sum_but(values, d)
        return self.sums[(s.tensor, fn, s.dim)]


_active: ContextVar[WeightSums | None] = ContextVar("fxprune_weight_sums", default=None)


def _weight_sums(dg: DependencyGraph, s: Slot,
                 per_element: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """`per_element` of the parameter or buffer of slot `s`; from the active `WeightSums` when it holds it (the
    tensor is not even looked up then)."""
    sums, fn = _active.get(), _ELEMENTWISE.get(per_element)
    if sums is not None and (s.tensor, fn, s.dim) in sums.sums:
        return sums.sums[(s.tensor, fn, s.dim)]
    t = _tensor(dg, s) if sums is None else sums.tensor(dg, s)
    if sums is None or fn is None or t.dim() < 2:
        return per_element(t, s.dim)
    return sums.add(s, t, fn)


def _others(t: torch.Tensor, d: int) -> list[int]:
    return [i for i in range(t.dim()) if i != d]


def _rows(t: torch.Tensor, d: int) -> torch.Tensor:
    """`t` as one row per element of dim d (a copy unless d is the first dim)."""
    return t.movedim(d, 0).reshape(t.shape[d], -1)


def _sum_but(v: torch.Tensor, d: int) -> torch.Tensor:
    """Sum of `v` over every dim but d. Dim 0 (a filter): contiguous rows. Another dim (a consumer's input
    channel): first the dims before d (whole rows added together, contiguous), then rows again: 2.5 times faster
    than one reduction over all the other dims (ResNet-50's convs, one thread), which itself costs half of copying
    the tensor into rows first."""
    if v.dim() == 1:
        return v
    if d == 0:
        return v.reshape(v.shape[0], -1).sum(1)
    return v.sum(list(range(d))).reshape(v.shape[d], -1).sum(1)


def _abs_sum(t: torch.Tensor, d: int) -> torch.Tensor:
    return _sum_but(t.abs(), d)


def _square_sum(t: torch.Tensor, d: int) -> torch.Tensor:
    return _sum_but(t.square(), d)


_ELEMENTWISE: dict[Callable[[torch.Tensor, int], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] = {
    _abs_sum: torch.abs, _square_sum: torch.square}


def _distance_sum(t: torch.Tensor, d: int) -> torch.Tensor:
    rows = _rows(t.float(), d)
    return torch.cdist(rows[None], rows[None])[0].sum(1)


def tensor_scores(criterion: str, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """One weight tensor's score per element of `dim` under a weight criterion (NNI's per-layer metric:
    every dim but `dim` reduced). What `l1`, `l2` and `fpgm` compute for a group made of that tensor alone.

    Args:
        criterion: "l1", "l2" or "fpgm".
        t: the weight.
        dim: the channel dim (0 for a conv filter or a linear row).
    """
    if criterion == "l2":
        return _square_sum(t, dim).double().sqrt()
    return {"l1": _abs_sum, "fpgm": _distance_sum}[criterion](t, dim).double()


def l1(dg: DependencyGraph, group: Group, stats: Stats | None = None, slots: set[Slot] | None = None) -> torch.Tensor:
    """L1 norm of everything a channel owns ("Pruning Filters for Efficient ConvNets")."""
    return accumulate(dg, group, slots, _abs_sum)


def l2(dg: DependencyGraph, group: Group, stats: Stats | None = None, slots: set[Slot] | None = None) -> torch.Tensor:
    """L2 norm of everything a channel owns."""
    return accumulate(dg, group, slots, _square_sum).sqrt()


def fpgm(dg: DependencyGraph, group: Group, stats: Stats | None = None,
         slots: set[Slot] | None = None) -> torch.Tensor:
    """Distance to the other channels (geometric-median criterion, FPGM): near-median = replaceable."""
    return accumulate(dg, group, slots, _distance_sum)


def bn_scale(dg: DependencyGraph, group: Group, stats: Stats | None = None,
             slots: set[Slot] | None = None) -> torch.Tensor:
    """|gamma| of the BatchNorm layers in the group (Network Slimming); a group without one scores 0."""

    def is_scale(s: Slot) -> bool:
        owner = s.tensor[1:].rpartition(".")[0]
        cls = dg.gm.meta.get("module_classes", {}).get(owner)
        norm = torch.nn.modules.batchnorm._NormBase
        return s.tensor.endswith(".weight") and s.dim == 0 and cls is not None and issubclass(cls, norm)

    return accumulate(dg, group, slots, lambda t, d: t.abs(), lambda s: _tensor(dg, s) if is_scale(s) else None)


def _activation(stats: Stats | None,
                per_channel: Callable[[Slot], torch.Tensor]) -> Callable[[Slot], torch.Tensor | None]:
    if stats is None:
        raise ValueError("this criterion needs activation statistics: collect them with the probe pass first")
    return lambda s: per_channel(s) if s in stats.activation_sum else None


def apoz(dg: DependencyGraph, group: Group, stats: Stats | None = None,
         slots: set[Slot] | None = None) -> torch.Tensor:
    """1 - APoZ (average percentage of zeros) of the activations the probes saw: mostly-zero channels go."""
    return accumulate(dg, group, slots, lambda t, d: t, _activation(
        stats, lambda s: 1 - stats.activation_zeros[s].double() / stats.positions[s]))


def mean_activation(dg: DependencyGraph, group: Group, stats: Stats | None = None,
                    slots: set[Slot] | None = None) -> torch.Tensor:
    """Mean activation per channel over every batch and position the probes saw."""
    return accumulate(dg, group, slots, lambda t, d: t, _activation(
        stats, lambda s: stats.activation_sum[s].double() / stats.positions[s]))


def activation_taylor(dg: DependencyGraph, group: Group, stats: Stats | None = None,
                      slots: set[Slot] | None = None) -> torch.Tensor:
    """First-order Taylor on activations: mean over backward passes of |mean over positions of a * dL/da|."""
    if stats is None or not stats.activation_taylor:
        raise ValueError("activation_taylor needs activations and their gradients: collect both with the probe pass")
    return accumulate(dg, group, slots, lambda t, d: t, lambda s: stats.activation_taylor[s].double()
                      / stats.activation_backward[s] if s in stats.activation_taylor else None)


def taylor(dg: DependencyGraph, group: Group, stats: Stats | None = None,
           slots: set[Slot] | None = None) -> torch.Tensor:
    """First-order Taylor: sum over backward passes of (w * dL/dw)^2, summed over what a channel owns."""
    if stats is None or not stats.weight_taylor:
        raise ValueError("taylor needs weight gradients: collect them with the probe pass first")
    return accumulate(dg, group, slots, lambda t, d: t.sum(_others(t, d)) if t.dim() > 1 else t,
                       lambda s: stats.weight_taylor.get(s.tensor[1:]))


_W, _A, _G = frozenset({"weights"}), frozenset({"activations"}), frozenset({"gradients"})
#: name -> Criterion. `magnitude` (Level) and `movement` score single weights and live with their algorithms.
CRITERIA: dict[str, Criterion] = {
    "l1": Criterion(l1, _W), "l2": Criterion(l2, _W), "fpgm": Criterion(fpgm, _W), "bn_scale": Criterion(bn_scale, _W),
    "apoz": Criterion(apoz, _A), "mean_activation": Criterion(mean_activation, _A), "taylor": Criterion(taylor, _G),
    "activation_taylor": Criterion(activation_taylor, _A | _G),
}
