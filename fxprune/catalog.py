"""The algorithm catalogue: ONE table of every pruning algorithm fxprune knows, by its config name.

The config validates `pruner` against it, the CLI lists its names, the NNI classes
(`fxprune.pruners`) name their entry, and `fxprune.pruners.run_algorithm` dispatches on `family`.
An entry whose `family` has no implementation yet is listed with `implemented=False`: asking for it is
a ConfigError that says so, never a silent fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Algorithm", "ALGORITHMS", "names", "implemented"]


@dataclass(frozen=True)
class Algorithm:
    """One algorithm of the NNI catalogue.

    Attributes:
        name: the config name (`config["pruner"]`).
        family: how it runs: "weights" (scores from weights, one apply), "data" (scores from statistics
            the probe pass collects over batches), "training" (changes training: Slim, ADMM, Movement),
            "iterative" (a schedule of rounds), "search" (per-layer sparsities searched).
        unit: "channels" (structured: removes channels and everything coupled to them) or "weights".
        criterion: the importance criterion (`fxprune.importance.CRITERIA`) it scores with, if any.
        nni: the NNI class names (v2, then v1) users know it by.
        summary: one line for tables and `--help`.
        implemented: whether this build runs it.
    """

    name: str
    family: str
    unit: str
    criterion: str | None
    nni: tuple[str, ...]
    summary: str
    implemented: bool = False


_TABLE = [
    Algorithm("level", "weights", "weights", "magnitude", ("LevelPruner",),
              "smallest-magnitude single weights (unstructured; shapes stay)", True),
    Algorithm("l1", "weights", "channels", "l1", ("L1NormPruner", "L1FilterPruner"),
              "L1 norm of everything a channel owns", True),
    Algorithm("l2", "weights", "channels", "l2", ("L2NormPruner", "L2FilterPruner"),
              "L2 norm of everything a channel owns", True),
    Algorithm("fpgm", "weights", "channels", "fpgm", ("FPGMPruner",),
              "distance to the geometric median (most replaceable channels go)", True),
    Algorithm("slim", "training", "channels", "bn_scale", ("SlimPruner",),
              "BatchNorm scale |gamma| after L1-penalised training", True),
    Algorithm("apoz", "data", "channels", "apoz", ("ActivationAPoZRankPruner", "ActivationAPoZRankFilterPruner"),
              "fraction of zero activations after the layer (more zeros go first)", True),
    Algorithm("mean_activation", "data", "channels", "mean_activation",
              ("ActivationMeanRankPruner", "ActivationMeanRankFilterPruner"), "mean activation after the layer", True),
    Algorithm("taylorfo", "data", "channels", "taylor", ("TaylorFOWeightPruner", "TaylorFOWeightFilterPruner"),
              "first-order Taylor: sum over batches of (w * dL/dw)^2", True),
    Algorithm("admm", "training", "weights", "magnitude", ("ADMMPruner",),
              "ADMM: train towards a sparse copy of the weights, then prune", True),
    Algorithm("movement", "training", "weights", "movement", ("MovementPruner",),
              "movement scores learned while fine-tuning", True),
    Algorithm("linear", "iterative", "channels", None, ("LinearPruner",), "rounds at sparsity i/N * s", True),
    Algorithm("agp", "iterative", "channels", None, ("AGPPruner",), "rounds at s * (1 - (1 - i/N)^3)", True),
    Algorithm("lottery", "iterative", "channels", None, ("LotteryTicketPruner",),
              "rounds at 1 - (1 - s)^(i/N), weights reset to their initial values", True),
    Algorithm("sa", "search", "channels", None, ("SimulatedAnnealingPruner",),
              "simulated annealing over per-layer sparsities", True),
    Algorithm("autocompress", "search", "channels", None, ("AutoCompressPruner",),
              "rounds of simulated annealing + ADMM", True),
    Algorithm("amc", "search", "channels", None, ("AMCPruner",), "DDPG agent choosing per-layer sparsities", True),
    Algorithm("netadapt", "search", "channels", None, ("NetAdaptPruner",),
              "greedy per-layer cuts under a resource budget", True),
    Algorithm("sensitivity", "search", "channels", None, ("SensitivityPruner",),
              "per-layer accuracy curves, allocation under an accuracy drop", True),
]

#: name -> Algorithm, in catalogue order.
ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in _TABLE}


def names() -> list[str]:
    """Every config name, in catalogue order."""
    return list(ALGORITHMS)


def implemented() -> list[str]:
    """The names this build runs."""
    return [a.name for a in _TABLE if a.implemented]
