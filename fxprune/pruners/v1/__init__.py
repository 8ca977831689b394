"""NNI v1 pruner classes (the v1 seed: `nni.compression.torch`, v1.7-v2.2 signatures).

    from fxprune.pruners.v1 import SlimPruner      # instead of `from nni.compression.torch import SlimPruner`
"""

from .data import (
    ActivationAPoZRankFilterPruner,
    ActivationMeanRankFilterPruner,
    SlimPruner,
    TaylorFOWeightFilterPruner,
)

__all__ = ["SlimPruner", "ActivationAPoZRankFilterPruner", "ActivationMeanRankFilterPruner",
           "TaylorFOWeightFilterPruner"]
