"""The NNI pruner classes, one module per family, and `run_algorithm`, which runs any catalogue entry
on a session (what `fxprune.compile` calls).

    from fxprune.pruners import L1NormPruner          # instead of NNI's import line

| family (`fxprune.catalog`) | module |
|---|---|
| weights: level, l1, l2, fpgm | `oneshot` |
| data: apoz, mean_activation, taylorfo | `data` |
| training: admm, movement | `training` |
| training: slim | `slim` (through `RUNNERS`: an algorithm with a runner of its own, ahead of its family's) |
| iterative: linear, agp, lottery | `iterative` (`fxprune.iterate`; a schedule of rounds, not `compile`) |
| search: sa, netadapt, sensitivity | `search` (need an evaluator: their classes, not `compile`) |
| search: amc | `amc` |
| search: autocompress | `autocompress` (SA + ADMM rounds on the lottery schedule) |
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from ..session import Session
from .amc import AMCPruner
from .autocompress import AutoCompressPruner
from .base import Pruner
from .data import ActivationAPoZRankPruner, ActivationMeanRankPruner, TaylorFOWeightPruner, run_data
from .evaluator import TorchEvaluator
from .iterative import AGPPruner, LinearPruner, LotteryTicketPruner, iterate
from .oneshot import FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner, run_weights
from .search import NetAdaptPruner, SensitivityPruner, SimulatedAnnealingPruner
from .slim import SlimPruner, run_slim
from .training import ADMMPruner, MovementPruner, run_training

__all__ = ["Pruner", "LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner", "run_algorithm", "FAMILIES",
           "RUNNERS", "TaylorFOWeightPruner", "ActivationAPoZRankPruner", "ActivationMeanRankPruner", "SlimPruner",
           "ADMMPruner", "MovementPruner", "TorchEvaluator", "SimulatedAnnealingPruner", "NetAdaptPruner",
           "SensitivityPruner", "AMCPruner", "LinearPruner", "AGPPruner", "LotteryTicketPruner", "iterate",
           "AutoCompressPruner"]

#: catalogue family -> how a session runs it
FAMILIES: dict[str, Callable[[Session], None]] = {"weights": run_weights, "data": run_data, "training": run_training}
#: algorithm name -> its own runner, ahead of its family's (one algorithm of a family another module runs)
RUNNERS: dict[str, Callable[[Session], None]] = {"slim": run_slim}


def run_algorithm(session: Session) -> None:
    """Run the session config's algorithm between prepare and finish (masks computed and applied)."""
    if session.config.pruner in RUNNERS:
        RUNNERS[session.config.pruner](session)
        return
    family = session.config.algorithm.family
    if family not in FAMILIES:
        raise ConfigError(f"config['pruner'] = {session.config.pruner!r}: its family {family!r} does not run "
                          "through fxprune.compile in this build; use its NNI class in fxprune.pruners")
    FAMILIES[family](session)
