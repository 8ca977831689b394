"""NNI v1 forms of the pruners (the v1 seed's `nni.compression.torch` API): the model you train is pruned.

    from fxprune.pruners.v1 import AGPPruner       # instead of: from nni.compression.torch import AGPPruner
"""

from .iterative import AGPPruner, LotteryTicketPruner

__all__ = ["AGPPruner", "LotteryTicketPruner"]
