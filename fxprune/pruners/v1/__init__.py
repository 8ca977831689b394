"""NNI v1 forms of the pruners (`nni.compression.torch`, NNI 1.7-2.2), for code written against the v1 docs.

    from fxprune.pruners.v1 import ADMMPruner      # instead of: from nni.compression.torch import ADMMPruner
"""

from __future__ import annotations

from .training import ADMMPruner

__all__ = ["ADMMPruner"]
