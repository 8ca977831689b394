"""The NNI pruner classes, one module per family, and `run_algorithm`, which runs any catalogue entry
on a session (what `fxprune.compile` calls).

    from fxprune.pruners import L1NormPruner          # instead of NNI's import line

| family (`fxprune.catalog`) | module |
|---|---|
| weights: level, l1, l2, fpgm | `oneshot` |
| data: apoz, mean_activation, taylorfo | `data` |
| training: admm, movement | `training` |
| training: slim | `slim` (its own runner: its sparsity is global over BN scales) |
| iterative: linear, agp, lottery | `iterative` (`fxprune.iterate`; a schedule of rounds, not `compile`) |
| search: sa, netadapt, sensitivity | `search` (need an evaluator: their classes, not `compile`) |
| search: amc | `amc` |
| search: autocompress | `autocompress` (SA + ADMM rounds on the lottery schedule) |
"""

from __future__ import annotations

from collections.abc import Callable

from ..catalog import ALGORITHMS
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

__all__ = ["Pruner", "LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner", "run_algorithm", "RUNNERS",
           "TaylorFOWeightPruner", "ActivationAPoZRankPruner", "ActivationMeanRankPruner", "SlimPruner",
           "ADMMPruner", "MovementPruner", "TorchEvaluator", "SimulatedAnnealingPruner", "NetAdaptPruner",
           "SensitivityPruner", "AMCPruner", "LinearPruner", "AGPPruner", "LotteryTicketPruner", "iterate",
           "AutoCompressPruner"]

_BY_FAMILY: dict[str, Callable[[Session], None]] = {"weights": run_weights, "data": run_data,
                                                    "training": run_training}
#: algorithm name -> how a session runs it: every algorithm `fxprune.compile` can run, and nothing else
RUNNERS: dict[str, Callable[[Session], None]] = {
    **{name: _BY_FAMILY[a.family] for name, a in ALGORITHMS.items() if a.family in _BY_FAMILY},
    "slim": run_slim,  # its sparsity is one global threshold over the BN scales, not its family's per-group cut
}


def run_algorithm(session: Session) -> None:
    """Run the session config's algorithm between prepare and finish (masks computed and applied)."""
    name = session.config.pruner
    if name not in RUNNERS:
        raise ConfigError(f"config['pruner'] = {name!r}: a {session.config.algorithm.family} algorithm does not "
                          "run through fxprune.compile; use its NNI class in fxprune.pruners")
    RUNNERS[name](session)
