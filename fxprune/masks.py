"""Masks: which channels of each group are kept, and (unstructured) which weights are zero."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .graph import DependencyGraph, Slot

__all__ = ["Masks"]


@dataclass
class Masks:
    """Per group, a bool per channel (True = keep); per parameter, an optional weight mask.

    `graph` is the dependency graph the masks were computed on: the speedup pass needs it to know
    which dimension of which tensor each channel lives in.
    """

    graph: DependencyGraph
    keep: dict[int, np.ndarray] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

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
        for gid in self.keep:
            for s in self.graph.groups[gid].slots:
                keep = self.slot_keep(s)
                if keep is not None:
                    out.append((s, keep))
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
