"""NNI v1 forms of the data-driven pruners: Slim, Activation APoZ / Mean, Taylor FO (the v1 seed).

    pruner = ActivationAPoZRankFilterPruner(model, config_list, statistics_batch_num=1)
    masked_model = pruner.compress()      # v1: compress() returns the model; train or evaluate it next
    ...                                   # after `statistics_batch_num` batches, the masks are set
    masks = pruner.get_masks()

v1 semantics kept: `SlimPruner` ranks the current |gamma| of every selected BatchNorm with one global
threshold at `compress()` (the L1 sparsity training is the user's job, before); the statistics pruners
observe the batches the user runs through the model `compress()` returned (forward passes for APoZ /
Mean, backward passes for Taylor) and set the masks once `statistics_batch_num` of them went through.
Differences: the model to train is the one `compress()` returns (fxprune's traced copy; the model you
passed is not modified), and `optimizer` is accepted but not needed (v1 patched its `step()` to update
the masks; fxprune updates them at the next forward call). Without `dummy_input`, fxprune guesses an
input shape from the first layer (logged); pass `dummy_input=` to choose it.
"""

from __future__ import annotations

import copy
import logging
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...importance import Stats
from ...masks import Masks
from ...session import Session
from ..base import Pruner
from ..data import score_masks
from ..slim import slim_layers

__all__ = ["SlimPruner", "ActivationAPoZRankFilterPruner", "ActivationMeanRankFilterPruner",
           "TaylorFOWeightFilterPruner", "guess_inputs"]

_log = logging.getLogger("fxprune")
_SIZES = (32, 28, 224, 16, 8, 64)


def guess_inputs(model: nn.Module) -> torch.Tensor:
    """Example inputs for a model given none: from its first conv or linear layer, a batch of 2 with the first
    spatial size (32, 28, 224, 16, 8, 64) the model accepts (tried on a copy in eval mode).

    Raises:
        InputError: no such layer, or no size works; pass dummy_input=.
    """
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))), None)
    if isinstance(first, nn.Linear):
        candidates = [torch.randn(2, first.in_features)]
    elif first is not None:
        dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)] if type(first) in (
            nn.Conv1d, nn.Conv2d, nn.Conv3d) else 2
        candidates = [torch.randn(2, first.in_channels, *[s] * dims) for s in _SIZES]
    else:
        candidates = []
    twin = copy.deepcopy(model).eval()
    for x in candidates:
        try:
            with torch.no_grad():
                twin(x)
        except Exception:  # noqa: BLE001 - any failure means "not this shape"
            continue
        _log.info("no dummy_input: tracing with inputs of shape %s (pass dummy_input= to choose)", tuple(x.shape))
        return x
    raise InputError(f"{type(model).__name__}: fxprune could not guess an input shape to trace with: pass "
                     "dummy_input=torch.randn(1, 3, 224, 224) (the shape your model takes)")


class _V1Pruner(Pruner):
    """v1 constructor (dependency_aware flag, optional dummy_input) and `compress() -> model`."""

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None,
                 dependency_aware: bool = False, dummy_input: Any = None, mode: str | None = None) -> None:
        mode = mode or ("dependency_aware" if dependency_aware else "normal")
        super().__init__(model, config_list, mode=mode, dummy_input=dummy_input if dummy_input is not None
                         else guess_inputs(model))
        self.optimizer = optimizer

    def get_masks(self) -> Masks | None:
        """The masks set so far (None before compress())."""
        return None if self.session is None else self.session.masks

    def compress(self) -> torch.fx.GraphModule:  # type: ignore[override]
        """Trace and start pruning; returns the masked model (v1 returns the model only)."""
        return self.start().model


class SlimPruner(_V1Pruner):
    """v1 SlimPruner(model, config_list, optimizer=None): one global threshold on the current |gamma| of the
    selected BatchNorm layers (train with an L1 penalty on them first, as the v1 seed says)."""

    algorithm = "slim"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None,
                 dummy_input: Any = None) -> None:
        super().__init__(model, config_list, optimizer, dummy_input=dummy_input, mode="global")

    def run(self, session: Session) -> None:
        layers = slim_layers(session, type(self).__name__)
        session.apply(score_masks(session, "bn_scale", None, layers, raw_global=True))


class _V1Statistics(_V1Pruner):
    criterion_name = "apoz"
    needs = frozenset({"activations"})

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None,
                 activation: str = "relu", statistics_batch_num: int = 1, dependency_aware: bool = False,
                 dummy_input: Any = None) -> None:
        if isinstance(statistics_batch_num, bool) or not isinstance(statistics_batch_num, int) \
                or statistics_batch_num < 1:
            raise InputError(f"{type(self).__name__}: statistics_batch_num={statistics_batch_num!r} must be a "
                             "positive int (the batches to collect over), e.g. statistics_batch_num=1")
        if activation not in ("relu", "relu6", "gelu"):
            raise InputError(f"{type(self).__name__}: activation={activation!r} must be 'relu', 'relu6' or 'gelu'")
        super().__init__(model, config_list, optimizer, dependency_aware, dummy_input)
        self.statistics_batch_num = statistics_batch_num
        self._stack: ExitStack | None = None
        self._stats: Stats | None = None
        self._applied = False

    def run(self, session: Session) -> None:
        self._stack = ExitStack()
        self._stats = self._stack.enter_context(session.probe(self.needs, self.statistics_batch_num))
        self._applied = False
        # masks change only before a forward call (autograd saved the old ones for the running backward), and the
        # probes leave the graph only after one
        session.model.register_forward_pre_hook(lambda *_: self._apply())
        session.model.register_forward_hook(lambda *_: self._close() if self._applied else None)

    def _ready(self) -> bool:
        stats = self._stats
        if stats is None:
            return False
        seen = stats.backward if "gradients" in self.needs else stats.batches
        return seen >= self.statistics_batch_num

    def _apply(self) -> None:
        if self._applied or not self._ready():
            return
        session = self.session
        assert session is not None
        session.apply(score_masks(session, self.criterion_name, self._stats, raw_global=True))
        self._applied = True

    def _close(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    def update_mask(self) -> None:
        """Set the masks now if `statistics_batch_num` batches went through (v1's name); call between batches."""
        self._apply()
        if self._applied:
            self._close()

    def get_masks(self) -> Masks | None:
        """The masks, once `statistics_batch_num` batches went through the model compress() returned; else None."""
        self.update_mask()
        return self.session.masks if self.session is not None and self._applied else None


class ActivationAPoZRankFilterPruner(_V1Statistics):
    """v1: remove the filters whose activation is most often zero (see the module docstring)."""

    algorithm = "apoz"
    criterion_name = "apoz"


class ActivationMeanRankFilterPruner(_V1Statistics):
    """v1: remove the filters with the smallest mean activation."""

    algorithm = "mean_activation"
    criterion_name = "mean_activation"


class TaylorFOWeightFilterPruner(_V1Statistics):
    """v1: remove the filters with the smallest first-order Taylor importance (statistics over backward passes)."""

    algorithm = "taylorfo"
    criterion_name = "taylor"
    needs = frozenset({"gradients"})

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None,
                 statistics_batch_num: int = 1, dependency_aware: bool = False, dummy_input: Any = None) -> None:
        super().__init__(model, config_list, optimizer, "relu", statistics_batch_num, dependency_aware, dummy_input)
