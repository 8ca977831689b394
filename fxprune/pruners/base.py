"""What every NNI pruner class shares: NNI's constructor and `compress()`, on a pruning session.

    pruner = L1NormPruner(model, config_list, dummy_input=x)
    masked_model, masks = pruner.compress()      # a masked GraphModule and the masks; `model` untouched
    pruned = fxprune.speedup(masked_model, masks, x)

A family module (`oneshot`, and those that follow) subclasses `Pruner`, names its algorithm in the
catalogue (`algorithm = "l1"`), and implements `run(session)`: what happens between
`fxprune.prepare` and the result (score and apply once; or collect statistics, train, iterate).
"""

from __future__ import annotations

from typing import Any

import torch

from ..catalog import ALGORITHMS
from ..config import parse_config
from ..errors import InputError
from ..masks import Masks
from ..session import Session, prepare

__all__ = ["Pruner"]


class Pruner:
    """NNI's pruner API over a session: `Pruner(model, config_list, ...).compress() -> (masked_model, masks)`.

    fxprune traces to find the channel groups, so it needs example inputs: pass `dummy_input=` (NNI's
    name in dependency-aware mode) or `example_inputs=`. The model you pass is not modified.
    """

    algorithm = "l1"

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], mode: str = "dependency_aware",
                 dummy_input: Any = None, example_inputs: Any = None, **config: Any) -> None:
        self.model = model
        inputs = example_inputs if example_inputs is not None else dummy_input
        if inputs is None:
            raise InputError(
                f"{type(self).__name__} needs example inputs to trace the model: pass "
                "dummy_input=torch.randn(1, 3, 224, 224) (the shape your model takes)")
        self.example_inputs = inputs
        self.config = parse_config({"pruner": self.algorithm, "rules": config_list, "mode": mode, **config})
        self.session: Session | None = None

    def run(self, session: Session) -> None:
        """The algorithm between prepare and finish: compute masks and apply them on `session`."""
        raise NotImplementedError

    def compress(self) -> tuple[torch.fx.GraphModule, Masks]:
        """Trace, run the algorithm, and return the masked model (trainable) and its masks."""
        self.session = prepare(self.model, self.config, self.example_inputs)
        self.run(self.session)
        return self.session.model, self.session.masks

    def __repr__(self) -> str:
        algo = ALGORITHMS[self.algorithm]
        return f"{type(self).__name__}({algo.name}: {algo.summary})"
