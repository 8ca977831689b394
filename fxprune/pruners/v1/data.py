"""NNI v1 forms of the data-driven pruners: Slim, Activation APoZ / Mean, Taylor FO (the v1 seed).

    pruner = ActivationAPoZRankFilterPruner(model, config_list, optimizer, statistics_batch_num=1)
    model = pruner.compress()             # v1: the same object; nothing is masked yet
    train(model, optimizer, ...)          # your own loop: statistics are collected, then the masks are set
    pruner.export_model(model_path='pruned.pth', mask_path='mask.pth')

v1's contract, kept: `compress()` returns the model you passed; it computes as before until the masks exist;
once set, the masks mask your model in place (a parametrization `weight = original * mask` on each masked
module, as `fxprune.pruners.base` does; the Parameter objects stay the same, so your optimizer keeps training
them); `get_masks()` (NNI's `{layer: {'weight': 0/1, 'bias': 0/1}}`, `{}` before), `update_mask()`,
`_unwrap_model()`, `export_model(model_path, mask_path, onnx_path, input_shape, device)` as in NNI.

- `SlimPruner(model, config_list, optimizer=None)` ranks the current |gamma| of the selected BatchNorm layers
  with one global threshold and masks your model at `compress()` (the L1 sparsity training is yours, before).
- APoZ / Mean: a forward hook on your model sees each batch it runs (training or evaluation); fxprune runs its
  traced copy on the same inputs, with your current weights, training flags and random state (the same dropout),
  under `torch.no_grad()`, and takes the statistics at the activation that really follows each selected layer
  (after its BatchNorm and ReLU, where NNI v1 took relu(conv output); see `fxprune.pruners.data`). Why a replay
  rather than hooks on your modules: the activation after a layer is often a function call (`F.relu`), or a
  module shared by several layers, which a module hook cannot tell apart; the traced graph knows which
  activation follows which layer.
  After `statistics_batch_num` forward calls the masks are computed, and set in your model when that call's
  backward pass ends (masking re-registers the parameters, which a pending backward would refuse), or at once
  when its output needs no gradient (an evaluation loop), or at the next forward call if no backward comes.
  Forward hooks you put on submodules run in the replay too (fxprune's copy carries them, as it carries their
  effect on the outputs); tell your own modules apart by identity (`module is model.bn1`) if that matters.
- Taylor FO: post-accumulate-grad hooks on your parameters add (w * dL/dw)^2 at each backward pass of your loop;
  after `statistics_batch_num` of them the masks are computed and set, when that backward pass ends.
- The masks are per layer (v1's default `dependency_aware=False`: each layer's own statistics, its own
  `int(sparsity * n)` channels), or dependency-aware with `dependency_aware=True, dummy_input=x` (the
  statistics summed over every layer coupled to a channel). Without `dummy_input`, fxprune traces with the
  first batch your model runs. `optimizer` is accepted and not needed (v1 patched its `step()` to set masks).
"""

from __future__ import annotations

import copy
import logging
import os
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...importance import Stats
from ...nni_masks import mask_module
from ...passes.probe import taylor_hook
from ...passes.trace import set_training
from ...session import Session, prepare
from ..base import Pruner, copy_back
from ..data import first_samples, init_pruner, score_masks
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


class SlimPruner(Pruner):
    """v1 SlimPruner(model, config_list, optimizer=None): one global threshold on the current |gamma| of the
    selected BatchNorm layers, masked in your model at `compress()` (train with an L1 penalty on them first, as
    the v1 seed says). `dummy_input=` chooses the inputs to trace with (default: guessed, logged)."""

    algorithm = "slim"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None,
                 dummy_input: Any = None) -> None:
        super().__init__(model, config_list, mode="global",
                         dummy_input=dummy_input if dummy_input is not None else guess_inputs(model))
        self.optimizer = optimizer

    def run(self, session: Session) -> None:
        layers = slim_layers(session, type(self).__name__)
        session.apply(score_masks(session, "bn_scale", None, layers, raw_global=True))

    def compress(self) -> nn.Module:  # type: ignore[override]
        """Mask the smallest |gamma| (and the BatchNorm's bias) in your model in place and return it (v1)."""
        return super().compress()[0]


def _user_tensor(model: nn.Module, qualname: str) -> torch.Tensor | None:
    """The tensor of `model` a traced parameter qualname names (the original of a masked one), or None."""
    owner, _, attr = qualname.rpartition(".")
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        return None
    plist = getattr(module, "parametrizations", {})
    tensor = plist[attr].original if attr in plist else getattr(module, attr, None)
    return tensor if isinstance(tensor, torch.Tensor) else None


class _V1Statistics(Pruner):
    """v1 statistics pruner: `compress()` hooks your model; your loop's batches give the statistics."""

    criterion_name = "apoz"
    needs = "activations"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None,
                 activation: str = "relu", statistics_batch_num: int = 1, dependency_aware: bool = False,
                 dummy_input: Any = None) -> None:
        owner = type(self).__name__
        if isinstance(statistics_batch_num, bool) or not isinstance(statistics_batch_num, int) \
                or statistics_batch_num < 1:
            raise InputError(f"{owner}: statistics_batch_num={statistics_batch_num!r} must be a positive int (the "
                             "batches of your training to collect statistics over), e.g. statistics_batch_num=1")
        if activation not in ("relu", "relu6", "gelu"):
            raise InputError(f"{owner}: activation={activation!r} must be 'relu', 'relu6' or 'gelu'")
        if dependency_aware and dummy_input is None:
            raise InputError(f"{owner}(dependency_aware=True) traces the model to find the layers coupled to each "
                             "filter: pass dummy_input=torch.randn(1, 3, 32, 32) (the shape your model takes), as "
                             "in NNI v1")
        init_pruner(self, model, config_list, {"mode": "dependency_aware" if dependency_aware else "normal",
                                               "dummy_input": dummy_input}, ("normal", "dependency_aware"), "normal")
        self.optimizer = optimizer
        self.statistics_batch_num = statistics_batch_num
        self.dependency_aware = dependency_aware
        self._stats: Stats | None = None
        self._probes = ExitStack()  # probes and gradient hooks: removed once the statistics are complete
        self._forward_hooks = ExitStack()  # removed once the masks are set on the user's model
        self._pending: dict[str, dict[str, torch.Tensor]] | None = None  # computed, not yet set
        self._queued = False
        self._started = False
        self._busy = False  # our own tracing and replays run the model: not a batch of the user's

    # -- what a subclass observes ------------------------------------------------------------------------------
    def _observe_start(self, session: Session, stats: Stats) -> None:
        """Set up the observation once the session exists (probes, gradient hooks)."""
        raise NotImplementedError

    def _observe_batch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """After each forward call of the user's model."""

    def _before(self, args: tuple[Any, ...]) -> None:
        """Before each forward call of the user's model."""

    def _seen(self) -> int:
        stats = self._stats
        return 0 if stats is None else stats.backward if self.needs == "gradients" else stats.batches

    # -- the v1 API ------------------------------------------------------------------------------------------
    def compress(self) -> nn.Module:  # type: ignore[override]
        """Hook your model and return it (v1): the masks are set after `statistics_batch_num` batches of your
        training went through it; until then it computes as before."""
        if self._started:
            return self.model
        if self.example_inputs is not None:
            self._start(self.example_inputs)
        model = self.model

        def before(module: nn.Module, args: tuple[Any, ...]) -> None:
            if module is model and not self._busy:  # a copy of the model (tracing) runs these hooks too
                self._apply_pending()  # masks computed at the last call and never set (no backward came)
                if not self.masks:
                    self._before(args)

        def after(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if module is model and not self._busy and not self.masks and self._pending is None:
                self._after(args, kwargs, output)

        # plain functions, not bound methods: copies of the model (fxprune's tracing) share them, not the pruner
        self._forward_hooks.callback(model.register_forward_pre_hook(before).remove)
        self._forward_hooks.callback(model.register_forward_hook(after, with_kwargs=True).remove)
        self._started = True
        return model

    def update_mask(self) -> None:
        """Set the masks now if `statistics_batch_num` batches went through (v1's name; they are set then anyway)."""
        if self._pending is None and not self.masks and self._started and self._stats is not None \
                and self._seen() >= self.statistics_batch_num:
            self._compute_masks()
        self._apply_pending()

    def get_masks(self) -> dict[str, dict[str, torch.Tensor]]:
        """NNI's masks once set (`{}` before `statistics_batch_num` batches went through)."""
        self.update_mask()
        return self.masks

    def export_model(self, model_path: str | os.PathLike, mask_path: str | os.PathLike | None = None,
                     onnx_path: str | os.PathLike | None = None, input_shape: Any = None, device: Any = None,
                     dummy_input: Any = None, opset_version: int | None = None) -> None:
        """NNI's `export_model` (see `fxprune.pruners.base`), once the masks are set."""
        self.update_mask()
        if not self.masks:
            owner = type(self).__name__
            if not self._started:
                raise InputError(f"{owner}.export_model: call compress() first, then train the model it returns")
            what = "backward passes" if self.needs == "gradients" else "forward calls"
            raise InputError(f"{owner}.export_model: the masks are not computed yet: they are set after "
                             f"statistics_batch_num={self.statistics_batch_num} {what} of the model compress() "
                             f"returned, and {self._seen()} went through; run your training loop on it first")
        super().export_model(model_path, mask_path, onnx_path, input_shape, device, dummy_input, opset_version)

    # -- internals ---------------------------------------------------------------------------------------------
    def _start(self, inputs: Any) -> None:
        self._busy = True
        try:
            self.session = prepare(self.model, self.config, inputs)
        finally:
            self._busy = False
        self._stats = Stats()
        self._observe_start(self.session, self._stats)

    def _after(self, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if self.session is None:
            if not args:
                raise InputError(f"{type(self).__name__}: your model was called with keyword inputs only, which "
                                 "fxprune cannot trace with: pass dummy_input=(x,) to the pruner")
            self._start(first_samples(tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)))
        self._busy = True
        try:
            self._observe_batch(args, kwargs)
        finally:
            self._busy = False
        if self.needs != "activations" or self._seen() < self.statistics_batch_num:
            return
        self._compute_masks()
        # masking replaces each masked parameter's storage (`set_`), which the pending backward of this call
        # would refuse: set the masks when that backward ends, or now if none can come
        waiting = [t for t in _tensors(output) if t.requires_grad]
        for t in waiting:
            t.register_hook(self._after_backward)
        if not waiting:
            self._apply_pending()

    def _after_backward(self, grad: torch.Tensor) -> None:
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._apply_pending)

    def _compute_masks(self) -> None:
        """Score the collected statistics (fxprune's copy of the model gets the masks) and remove the probes."""
        session, stats = self.session, self._stats
        assert session is not None and stats is not None
        self._probes.close()
        copy_back(self.model, session.model)  # fxprune's copy holds your current weights (for session.finish())
        session.apply(score_masks(session, self.criterion_name, stats, raw_global=self.criterion_name == "taylor"))
        self._pending = self._selected_masks(session)

    def _apply_pending(self) -> None:
        """Mask the user's model in place with the computed masks and remove the forward hooks."""
        if self._pending is None:
            return
        masks, self._pending = self._pending, None
        mask_module(self.model, masks)
        self.masks = masks
        self._forward_hooks.close()
        _log.info("%s: masks set after %d batches of statistics", type(self).__name__, self._seen())


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a model's output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class _V1Activation(_V1Statistics):
    """APoZ / Mean: the statistics come from replaying each batch on fxprune's probed copy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng: tuple[torch.Tensor, dict[int, torch.Tensor]] | None = None

    def _observe_start(self, session: Session, stats: Stats) -> None:
        self._stats = self._probes.enter_context(session.probe((self.needs,), self.statistics_batch_num))

    def _before(self, args: tuple[Any, ...]) -> None:
        # the random state the user's forward starts from: the replay draws the same dropout masks
        devices = {a.device.index or 0 for a in args if isinstance(a, torch.Tensor) and a.is_cuda}
        self._rng = torch.get_rng_state(), {d: torch.cuda.get_rng_state(d) for d in devices}

    def _observe_batch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        copy_back(self.model, session.model)  # the weights and BatchNorm statistics of this forward call
        set_training(session.model, {name: m.training for name, m in self.model.named_modules()})
        cpu, cuda = self._rng if self._rng is not None else (torch.get_rng_state(), {})
        with torch.no_grad(), torch.random.fork_rng(devices=list(cuda)):
            torch.set_rng_state(cpu)
            for device, state in cuda.items():
                torch.cuda.set_rng_state(state, device)
            session.model(*args, **kwargs)


class ActivationAPoZRankFilterPruner(_V1Activation):
    """v1: remove the filters whose activation (after the layer's BatchNorm and ReLU) is most often zero, from
    `statistics_batch_num` forward calls of your model (see the module docstring)."""

    algorithm = "apoz"
    criterion_name = "apoz"


class ActivationMeanRankFilterPruner(_V1Activation):
    """v1: remove the filters with the smallest mean activation (after the layer's BatchNorm and ReLU)."""

    algorithm = "mean_activation"
    criterion_name = "mean_activation"


class TaylorFOWeightFilterPruner(_V1Statistics):
    """v1: remove the filters with the smallest sum of (w * dL/dw)^2 over `statistics_batch_num` backward passes
    of your training (per layer; over the channel's group when dependency-aware)."""

    algorithm = "taylorfo"
    criterion_name = "taylor"
    needs = "gradients"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], optimizer: Any = None,
                 statistics_batch_num: int = 1, dependency_aware: bool = False, dummy_input: Any = None) -> None:
        super().__init__(model, config_list, optimizer, "relu", statistics_batch_num, dependency_aware, dummy_input)

    def _observe_start(self, session: Session, stats: Stats) -> None:
        _, names = session.probe_points(frozenset({"gradients"}))  # the parameters fxprune's probe would watch
        watched = [(q, p) for q in names if (p := _user_tensor(self.model, q)) is not None and p.requires_grad]
        if not watched:
            raise InputError(f"{type(self).__name__}: none of the selected layers' parameters requires grad "
                             f"({', '.join(names[:6])}): unfreeze them, Taylor FO needs their gradients")

        def done(param: torch.Tensor) -> None:
            if not self._queued and stats.backward >= self.statistics_batch_num:
                self._queued = True  # set the masks when this backward pass ends (every gradient is in)
                torch.autograd.Variable._execution_engine.queue_callback(self._finish)

        for q, p in watched:
            self._probes.callback(p.register_post_accumulate_grad_hook(
                taylor_hook(q, stats, self.statistics_batch_num, [0])).remove)
        for _, p in watched:
            self._probes.callback(p.register_post_accumulate_grad_hook(done).remove)

    def _finish(self) -> None:
        if self.masks or self._pending is not None:  # get_masks() asked for them during this backward pass
            return
        self._compute_masks()
        self._apply_pending()
