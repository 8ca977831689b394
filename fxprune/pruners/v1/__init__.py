"""NNI v1 pruner classes (the v1 seed: `nni.compression.torch`, v1.7-v2.2 signatures), on fxprune's engines.

    from fxprune.pruners.v1 import SlimPruner      # instead of `from nni.compression.torch import SlimPruner`
"""

from .autocompress import AutoCompressPruner
from .data import (
    ActivationAPoZRankFilterPruner,
    ActivationMeanRankFilterPruner,
    SlimPruner,
    TaylorFOWeightFilterPruner,
)
from .iterative import AGPPruner, LotteryTicketPruner
from .oneshot import FPGMPruner, L1FilterPruner, L2FilterPruner, LevelPruner
from .search import AMCPruner, NetAdaptPruner, SensitivityPruner, SimulatedAnnealingPruner
from .training import ADMMPruner

__all__ = ["SlimPruner", "ActivationAPoZRankFilterPruner", "ActivationMeanRankFilterPruner",
           "TaylorFOWeightFilterPruner", "ADMMPruner", "AGPPruner", "LotteryTicketPruner", "SimulatedAnnealingPruner",
           "NetAdaptPruner", "SensitivityPruner", "AMCPruner", "AutoCompressPruner", "LevelPruner", "L1FilterPruner",
           "L2FilterPruner", "FPGMPruner"]
