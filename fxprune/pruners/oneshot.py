"""One-shot pruners scored from the weights alone: Level, L1, L2, FPGM (NNI's basic pruners).

One step: score every selected group with the catalogue's criterion, choose what to keep under the
config's rules, apply the masks once.
"""

from __future__ import annotations

from ..session import Session
from .base import Pruner

__all__ = ["run_weights", "LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner"]


def run_weights(session: Session) -> None:
    """Score with the config's criterion (weights only) and apply the masks once."""
    session.apply(session.compute_masks())


class _WeightPruner(Pruner):
    def run(self, session: Session) -> None:
        run_weights(session)


class LevelPruner(_WeightPruner):
    """Unstructured magnitude pruning: zero the smallest weights of each selected layer."""

    algorithm = "level"


class L1NormPruner(_WeightPruner):
    """Remove the channels with the smallest L1 norm (filters and everything they own)."""

    algorithm = "l1"


class L2NormPruner(_WeightPruner):
    """Remove the channels with the smallest L2 norm."""

    algorithm = "l2"


class FPGMPruner(_WeightPruner):
    """Remove the channels closest to the geometric median of their group (most replaceable)."""

    algorithm = "fpgm"
