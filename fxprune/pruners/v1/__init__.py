"""NNI v1 forms (`nni.compression.torch`, v1.7-v2.2 signatures) of the pruners, on fxprune's engines."""

from .search import AMCPruner, NetAdaptPruner, SensitivityPruner, SimulatedAnnealingPruner

__all__ = ["SimulatedAnnealingPruner", "NetAdaptPruner", "SensitivityPruner", "AMCPruner"]
