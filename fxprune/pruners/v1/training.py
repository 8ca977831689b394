"""NNI v1's ADMMPruner: `ADMMPruner(model, config_list, trainer, num_iterations=30, training_epochs=5, row=1e-4,
base_algo='l1')`, with the v1 trainer `trainer(model, optimizer, criterion, epoch, callback)`.

As in NNI v1, the pruner builds its own `Adam(lr=1e-3, weight_decay=5e-5)` and `CrossEntropyLoss`, and the
trainer calls `callback()` between `loss.backward()` and `optimizer.step()`: the callback takes one unit step
of the penalty's gradient, W -= row * (W - Z + U). `base_algo='level'` prunes single weights; 'l1' and 'l2'
prune filters (by the L1 norm, as NNI v1 does for both). The seed's `epochs=5` is accepted for
`training_epochs` (NNI itself rejects it). `compress()` trains `session.model` and returns it, masked.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...config import parse_config
from ...errors import InputError
from ...session import Session, prepare
from ..training import TrainLoop, admm, capture_inputs, first_batch

__all__ = ["ADMMPruner"]

_BASE_ALGOS = {"level": "fine-grained", "l1": "coarse-grained", "l2": "coarse-grained"}


class ADMMPruner:
    """NNI v1's ADMMPruner on a pruning session; the model you pass is not modified."""

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], trainer: Any, num_iterations: int = 30,
                 training_epochs: int = 5, row: float = 1e-4, base_algo: str = "l1", *, epochs: int | None = None,
                 dummy_input: Any = None) -> None:
        if not callable(trainer):
            raise InputError("ADMMPruner: trainer must be callable as trainer(model, optimizer, criterion, epoch, "
                             f"callback), got {type(trainer).__name__}")
        if base_algo not in _BASE_ALGOS:
            raise InputError(f"ADMMPruner: base_algo={base_algo!r}: use 'level', 'l1' or 'l2'")
        self.model, self.row, self.base_algo = model, row, base_algo
        self.iterations = num_iterations
        self.training_epochs = epochs if epochs is not None else training_epochs
        self.example_inputs = dummy_input
        self.loop = TrainLoop(trainer, (torch.optim.Adam, {"lr": 1e-3, "weight_decay": 5e-5}), nn.CrossEntropyLoss(),
                              model, v1=True)
        self.config = parse_config({"pruner": "admm", "rules": config_list})
        self.session: Session | None = None

    def compress(self) -> torch.fx.GraphModule:
        """Train with the ADMM callback, prune with `base_algo`, and return the masked model (`self.session.model`)."""
        if self.example_inputs is None:
            self.example_inputs = capture_inputs(self.model, lambda: first_batch(self.loop, self.model), "ADMMPruner")
        self.session = prepare(self.model, self.config, self.example_inputs)
        admm(self.session, self.loop, self.iterations, self.training_epochs, _BASE_ALGOS[self.base_algo], self.row)
        return self.session.model

    def get_pruned_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """NNI's masks format: {layer: {param: 0/1 mask}}."""
        if self.session is None:
            raise InputError("ADMMPruner: call compress() first")
        return self.session.masks.to_nni()
