"""One-shot pruners scored from the weights alone: Level, L1, L2, FPGM (NNI's basic pruners).

    pruner = L1NormPruner(model, [{"sparsity": 0.8, "op_types": ["Conv2d"]}])   # the seed's snippet, as is
    masked_model, masks = pruner.compress()       # `model` itself, masked in place; NNI's masks dict

NNI's signatures and defaults: `LevelPruner(model, config_list, mode='normal', balance_gran=None)`,
`L1NormPruner / L2NormPruner / FPGMPruner(model, config_list, mode='normal', dummy_input=None)`. In mode
'normal' without `dummy_input` each layer is masked from its own weights, untraced (`fxprune.pruners.normal`);
`mode='dependency_aware'` needs `dummy_input` (as in NNI) and scores each channel over every layer coupled to it.
With `dummy_input` given, fxprune traces in either mode and the masks are consistent across coupled layers.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..session import Session
from .base import Pruner

__all__ = ["run_weights", "LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner"]


def run_weights(session: Session) -> None:
    """Score with the config's criterion (weights only) and apply the masks once."""
    session.apply(session.compute_masks())


class _WeightPruner(Pruner):
    untraced = True

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], mode: str = "normal",
                 dummy_input: Any = None, **config: Any) -> None:
        super().__init__(model, config_list, mode=mode, dummy_input=dummy_input, **config)

    def run(self, session: Session) -> None:
        run_weights(session)


class LevelPruner(_WeightPruner):
    """Unstructured magnitude pruning: zero the smallest weights of each selected layer.

    `LevelPruner(model, config_list, mode='normal', balance_gran=None)`; NNI's 'balance' mode is not supported.
    """

    algorithm = "level"

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], mode: str = "normal",
                 balance_gran: Any = None, **config: Any) -> None:
        if mode == "balance" or balance_gran is not None:
            raise ConfigError("LevelPruner(mode='balance', balance_gran=...) is not supported by fxprune; use "
                              "mode='normal' (per-layer magnitude) or total_sparsity for one threshold across layers")
        super().__init__(model, config_list, mode=mode, **config)


class L1NormPruner(_WeightPruner):
    """Remove the channels with the smallest L1 norm (filters and everything they own)."""

    algorithm = "l1"


class L2NormPruner(_WeightPruner):
    """Remove the channels with the smallest L2 norm."""

    algorithm = "l2"


class FPGMPruner(_WeightPruner):
    """Remove the channels closest to the geometric median of their group (most replaceable)."""

    algorithm = "fpgm"
