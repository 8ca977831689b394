"""The NNI pruner classes, one module per family, and `run_algorithm`, which runs any catalogue entry
on a session (what `fxprune.compile` calls).

    from fxprune.pruners import L1NormPruner          # instead of NNI's import line

| family (`fxprune.catalog`) | module |
|---|---|
| weights: level, l1, l2, fpgm | `oneshot` |
| training: admm, movement (slim: another module) | `training` |
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from ..session import Session
from .base import Pruner
from .oneshot import FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner, run_weights
from .training import ADMMPruner, MovementPruner, run_training

__all__ = ["Pruner", "LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner", "ADMMPruner", "MovementPruner",
           "run_algorithm",
           "FAMILIES"]

#: catalogue family -> how a session runs it
FAMILIES: dict[str, Callable[[Session], None]] = {"weights": run_weights, "training": run_training}


def run_algorithm(session: Session) -> None:
    """Run the session config's algorithm between prepare and finish (masks computed and applied)."""
    family = session.config.algorithm.family
    if family not in FAMILIES:
        raise ConfigError(f"config['pruner'] = {session.config.pruner!r}: its family {family!r} does not run "
                          "through fxprune.compile in this build; use its NNI class in fxprune.pruners")
    FAMILIES[family](session)
