"""Pruners that train the model while they prune: ADMM and Movement (NNI's ADMMPruner and MovementPruner).

Both train `session.model` (the masked copy; the user's model is never touched) with the user's NNI
trainer, optimizer and criterion, and end with final masks applied on the session:

    pruner = ADMMPruner(model, config_list, trainer, traced_optimizer, criterion, iterations=10, training_epochs=1)
    masked_model, masks = pruner.compress()          # trains masked_model; `model` is left as it was
    pruner = MovementPruner(model, config_list, trainer, traced_optimizer, criterion, 10, 3000, 27000)

- ADMM (Zhang et al. 2018): `iterations` rounds of (train `training_epochs` epochs with the loss plus
  Σ ρ/2·‖W − Z + U‖²; Z = the projection of W + U onto the sparsity constraint; U += W − Z), then the
  masks from the trained W. The penalty is the paper's squared Frobenius norm; NNI 2.x takes a square
  root of the norm instead (v1 used the square). `granularity="fine-grained"` keeps the largest single
  weights; `"coarse-grained"` keeps whole channels by the L1 norm of everything they own in their group.
- Movement (Sanh et al. 2020): each selected weight gets a score of its shape, trained through a
  straight-through mask (∂L/∂score = ∂L/∂W' · W) by its own Adam (lr 1e-2, as NNI) after every
  `optimizer.step()` of the user's; after `warm_up_step` steps the masks follow the scores with a cubic
  schedule that reaches the config's sparsity at `cool_down_beginning_step`; masked weights can come
  back while training. `movement_mode="hard"`: the top scores per layer; `"soft"`: sigmoid(score) >
  the scheduled threshold, with a score regulariser. `sparse_granularity="block"` (alias "auto") scores
  whole channel groups (the sum of the scores a channel owns in its group: attention heads, FFN
  channels), so the speedup pass removes them. At the end the masks at the target sparsity are applied.

Call forms (NNI's "fake overload", decided by the first extra argument): the v2.6 form `(trainer,
traced_optimizer, criterion, ...)`, the v2.9+ form `(evaluator, ...)` with an object that has
`training_func`, `optimizers` and `criterion` (NNI's TorchEvaluator), and `fxprune.compile` with
`config["data"]` (+ `loss`, `options`). The optimizer may be any instance (traced or not), a class, a
(class, kwargs) pair or a factory: it is rebuilt on `session.model` by parameter name.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
from torch import nn

from ..config import Config, parse_config
from ..errors import ConfigError, FxPruneError, InputError
from ..importance import accumulate
from ..layers import Layer, select_layers
from ..masks import Masks, compute_masks, keep_largest
from ..session import Session, prepare
from ..training import make_trainer
from .base import Pruner, bind_call
from .evaluator import build_optimizer, trainable_parameter

__all__ = ["ADMMPruner", "MovementPruner", "TrainLoop", "TrainingError", "capture_inputs", "first_batch", "admm",
           "movement", "run_training", "cubic_sparsity"]

_log = logging.getLogger("fxprune")


class TrainingError(FxPruneError):
    """The user's trainer, optimizer or criterion did not train the model as the pruner needs."""


# -- the user's training loop ---------------------------------------------------------------------------
@dataclass
class TrainLoop:
    """How the pruner trains: NNI's `trainer(model, optimizer, criterion)` or an evaluator's `training_func`.

    Attributes:
        trainer: `trainer(model, optimizer, criterion)` (one or more epochs per call), or NNI 2.9's
            `training_func(model, optimizers, criterion, lr_schedulers, max_steps, max_epochs)` when
            `evaluator_style`.
        optimizer: an optimizer instance, class, (class, kwargs) or factory (see `evaluator.build_optimizer`).
        criterion: `criterion(output, target) -> scalar loss`.
        source: the model an optimizer instance was built on (the user's model).
        evaluator_style: call `trainer` as a training_func with max_epochs / max_steps.
        v1: call `trainer(model=, optimizer=, criterion=, epoch=, callback=)` once per epoch (NNI v1's ADMM).
    """

    trainer: Callable[..., Any]
    optimizer: Any
    criterion: Callable[[Any, Any], torch.Tensor]
    source: nn.Module | None = None
    evaluator_style: bool = False
    v1: bool = False

    def optimizer_for(self, model: nn.Module) -> torch.optim.Optimizer:
        """A fresh optimizer over `model`, by parameter name."""
        return build_optimizer(self.optimizer, self.source if self.source is not None else model, model, "optimizer")

    def run(self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: Callable[..., Any],
            epochs: int | None, steps: int | None = None, callback: Callable[[], None] | None = None) -> None:
        """Train `model` for `epochs` epochs (NNI: the trainer is called once per epoch) or `steps` steps;
        `callback` is what a v1 trainer calls between backward and step."""
        model = _trainable(model)
        if self.v1:
            for epoch in range(epochs or 1):
                self.trainer(model=model, optimizer=optimizer, criterion=criterion, epoch=epoch,
                             callback=callback or (lambda: None))
        elif self.evaluator_style:
            self.trainer(model, [optimizer], criterion, None, max_steps=steps, max_epochs=epochs)
        else:
            for _ in range(epochs if epochs is not None else 1):
                self.trainer(model, optimizer, criterion)


class _ExportedView(nn.Module):
    """What a trainer gets for a model traced by torch.export, whose `train()` raises: `train()`/`eval()` only
    set a flag (the graph was captured in eval mode, so dropout stays off while training); everything else is
    the model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> _ExportedView:
        self.training = mode
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)


def _trainable(model: nn.Module) -> nn.Module:
    meta = getattr(model, "meta", {})
    return _ExportedView(model) if isinstance(meta, dict) and meta.get("frontend") == "export" else model


class _Criterion:
    """The user's criterion plus the pruner's penalty; checks every loss (scalar, finite) and counts batches."""

    def __init__(self, criterion: Callable[..., Any], penalty: Callable[[], torch.Tensor | float], what: str) -> None:
        self.criterion, self.penalty, self.what, self.batches = criterion, penalty, what, 0

    def __call__(self, output: Any, target: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = self.criterion(output, target, *args, **kwargs)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TrainingError(
                f"criterion returned {type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))} on batch "
                f"{self.batches} of {self.what}: it must return a scalar loss tensor (e.g. "
                "torch.nn.CrossEntropyLoss() with reduction='mean')")
        if not torch.isfinite(loss.detach()):
            raise TrainingError(
                f"the loss is {loss.item()} on batch {self.batches} of {self.what}: training diverged or the batch "
                "holds NaN/inf; check that batch, lower the optimizer's learning rate (or ADMM's rho); the model "
                "you passed was not changed")
        self.batches += 1
        return loss + self.penalty()


class _StepCounter:
    """Counts `optimizer.step()` calls (and runs `after` after each) through a step post-hook."""

    def __init__(self, optimizer: torch.optim.Optimizer, after: Callable[[], None] | None = None) -> None:
        self.steps, self.after = 0, after
        self.handle = optimizer.register_step_post_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.steps += 1
        if self.after is not None:
            self.after()

    def remove(self) -> None:
        self.handle.remove()


def _never_stepped(pruner: str, moved: str) -> TrainingError:
    return TrainingError(f"{pruner}: the trainer never called optimizer.step() (on the optimizer it was given), so "
                         f"{moved} never moved: the trainer must call loss = criterion(model(x), y); loss.backward(); "
                         "optimizer.step() with the optimizer and criterion it receives (not its own)")


# -- example inputs from the trainer's first batch ------------------------------------------------------
class _Captured(Exception):
    pass


def _positional(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Keyword inputs of one forward call as positional ones (tracing takes a tuple)."""
    if not kwargs:
        return args
    bound = inspect.signature(model.forward).bind_partial(*args, **kwargs)
    params = list(inspect.signature(model.forward).parameters.values())
    last = max(i for i, p in enumerate(params) if p.name in bound.arguments)
    return tuple(bound.arguments.get(p.name, p.default) for p in params[: last + 1])


def capture_inputs(model: nn.Module, run: Callable[[], Any], who: str) -> tuple[Any, ...]:
    """The inputs of the first forward call `run()` makes on `model`; aborted before the forward runs, so
    nothing (weights, BatchNorm statistics, train/eval flags) changes."""
    flags = {name: m.training for name, m in model.named_modules()}
    seen: list[tuple[Any, ...]] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(_positional(module, args, kwargs))
        raise _Captured

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    except _Captured:
        pass
    finally:
        handle.remove()
        for name, m in model.named_modules():
            m.training = flags[name]
    if not seen:
        raise InputError(f"{who}: the trainer returned without calling the model, so fxprune has no example input to "
                         "trace with: pass dummy_input=<one batch of inputs>")
    return seen[0]


# -- ADMM -----------------------------------------------------------------------------------------------
def _weights(session: Session, config: Config | None = None) -> list[tuple[Layer, nn.Parameter]]:
    """(layer, weight) for every layer the rules (the session's or `config`'s) select and do not exclude."""
    out = []
    for layer in session.layers if config is None else select_layers(session.graph, config):
        if not layer.excluded and layer.rule is not None:
            out.append((layer, trainable_parameter(session.model, layer.weight)))
    return out


def _project(session: Session, chosen: list[tuple[Layer, nn.Parameter]], values: list[torch.Tensor],
             coarse: bool, config: Config | None) -> list[torch.Tensor]:
    """ADMM's Z-step: `values` (W + U per layer) projected onto the config's sparsity."""
    if not coarse:
        return [v * keep_largest(v.abs(), layer.rule.target) for (layer, _), v in zip(chosen, values)]
    saved = [w.detach().clone() for _, w in chosen]
    with torch.no_grad():  # score the channels of W + U: put it in the weights for compute_masks, then restore
        for (_, w), v in zip(chosen, values):
            w.copy_(v)
        nni = session.compute_masks("l1", config=config, shrink_only=False).to_nni()
        for (_, w), s in zip(chosen, saved):
            w.copy_(s)
    out = []
    for (layer, _), v in zip(chosen, values):
        owner, _, attr = layer.weight.rpartition(".")
        mask = nni.get(owner, {}).get(attr)
        out.append(v if mask is None else v * mask)
    return out


def admm(session: Session, loop: TrainLoop, iterations: int = 10, training_epochs: int = 1,
         granularity: str = "fine-grained", rho: float = 1e-4, config: Config | None = None) -> None:
    """Run ADMM on a session: train with the penalty, project, update the duals; then apply the final masks.

    Args:
        session: the pruning session (its `model` is trained in place).
        loop: the user's trainer, optimizer and criterion.
        iterations: ADMM rounds.
        training_epochs: epochs of training per round.
        granularity: "fine-grained" (single weights) or "coarse-grained" (channels, by group L1 norm).
        rho: the penalty weight of layers whose config entry gives no `rho`.
        config: other rules for this run on the same model (a validated Config, e.g. an iterative round's);
            default: the session's.

    Raises:
        TrainingError: the trainer never stepped the optimizer, the criterion is not a scalar, or a loss is NaN.
    """
    if granularity not in ("fine-grained", "coarse-grained"):
        raise ConfigError(f"ADMM granularity={granularity!r}: use 'fine-grained' (single weights) or 'coarse-grained' "
                          "(channels)")
    if iterations < 1 or training_epochs < 1:
        raise ConfigError(f"ADMM iterations={iterations}, training_epochs={training_epochs}: both must be >= 1")
    chosen = _weights(session, config)
    rhos = [layer.rule.rho if layer.rule.rho is not None else rho for layer, _ in chosen]
    z = [w.detach().clone() for _, w in chosen]
    u = [torch.zeros_like(w) for _, w in chosen]

    def penalty() -> torch.Tensor:  # the paper's squared norm (NNI 2.x: the norm's square root)
        return sum(r / 2 * (w - zi + ui).square().sum() for (_, w), zi, ui, r in zip(chosen, z, u, rhos))

    callbacks = [0]

    def callback() -> None:  # NNI v1: one unit step of the penalty's gradient, between backward and step
        callbacks[0] += 1
        with torch.no_grad():
            for (_, w), zi, ui, r in zip(chosen, z, u, rhos):
                w.sub_(r * (w - zi + ui))

    for k in range(iterations):
        optimizer = loop.optimizer_for(session.model)
        counter = _StepCounter(optimizer)
        criterion = _Criterion(loop.criterion, (lambda: 0.0) if loop.v1 else penalty, f"ADMM iteration {k}")
        try:
            loop.run(session.model, optimizer, criterion, training_epochs, callback=callback)
        finally:
            counter.remove()
        if counter.steps == 0:
            raise _never_stepped("ADMMPruner", "the weights (and the ADMM penalty)")
        if loop.v1 and callbacks[0] == 0:
            raise TrainingError("ADMMPruner (v1): the trainer never called callback(), so the ADMM penalty never moved "
                                "the weights: call callback() between loss.backward() and optimizer.step()")
        with torch.no_grad():
            z = _project(session, chosen, [w.detach() + ui for (_, w), ui in zip(chosen, u)],
                         granularity == "coarse-grained", config)
            u = [ui + w.detach() - zi for (_, w), ui, zi in zip(chosen, u, z)]
        _log.info("ADMM iteration %d/%d: %d steps, |W - Z| = %.4g", k + 1, iterations, counter.steps,
                  sum(float((w.detach() - zi).norm()) for (_, w), zi in zip(chosen, z)))
    session.apply(session.compute_masks("l1" if granularity == "coarse-grained" else "magnitude", config=config))


# -- Movement -------------------------------------------------------------------------------------------
class _MovementMask(nn.Module):
    """Parametrization W' = W * mask, with a straight-through score: ∂L/∂score = ∂L/∂W' * W."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.score = nn.Parameter(torch.zeros_like(weight))
        self.register_buffer("mask", torch.ones_like(weight))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * (self.mask + self.score - self.score.detach())


def cubic_sparsity(step: int, final: float, warm_up_step: int, cool_down_beginning_step: int) -> float:
    """NNI's movement schedule: 0 until `warm_up_step`, `final` from `cool_down_beginning_step`, cubic between."""
    if step <= warm_up_step:
        return 0.0
    if step >= cool_down_beginning_step:
        return final
    return final * (1 - (1 - (step - warm_up_step) / (cool_down_beginning_step - warm_up_step)) ** 3)


_GRANULARITY = {"finegrained": "fine", "fine-grained": "fine", "fine": "fine", "block": "block", "auto": "block",
                "coarse-grained": "block"}


class _Movement:
    """The state of one movement fine-pruning run: scores, their optimizer, the schedule, the masks."""

    def __init__(self, session: Session, warm_up_step: int, cool_down_beginning_step: int, mode: str,
                 granularity: str, regular_scale: float | None, score_lr: float) -> None:
        self.session, self.warm, self.cool = session, warm_up_step, cool_down_beginning_step
        self.mode, self.block, self.step = mode, granularity == "block", 0
        self.regular_scale = (1.0 if mode == "soft" else 0.0) if regular_scale is None else regular_scale
        self.layers = [layer for layer, _ in _weights(session)]
        self.params: dict[str, _MovementMask] = {}
        for layer in self.layers:
            owner, _, attr = layer.weight.rpartition(".")
            module = session.model.get_submodule(owner)
            param = _MovementMask(getattr(module, attr).detach())
            parametrize.register_parametrization(module, attr, param)
            self.params[layer.weight] = param
        self.score_optimizer = torch.optim.Adam([p.score for p in self.params.values()], lr=score_lr)

    def fraction(self) -> float:
        return cubic_sparsity(self.step, 1.0, self.warm, self.cool)

    def regulariser(self) -> torch.Tensor | float:
        """Soft mode: λ · schedule · mean over layers of the mean sigmoid(score) (NNI's regular_scale term)."""
        if not self.regular_scale:
            return 0.0
        terms = [torch.sigmoid(p.score).mean() for p in self.params.values()]
        return self.regular_scale * self.fraction() * torch.stack(terms).mean()

    def after_step(self) -> None:
        """After each user optimizer step: step the scores, then let the masks follow them."""
        self.step += 1
        self.score_optimizer.step()
        self.score_optimizer.zero_grad(set_to_none=True)
        if self.step > self.warm:
            self.update(self.fraction())

    def _scaled(self, fraction: float) -> list[Layer]:
        rules = {id(layer.rule): layer.rule for layer in self.layers}
        scaled = {rid: replace(r, sparsity=r.target * fraction, total_sparsity=None) for rid, r in rules.items()}
        return [replace(layer, rule=scaled[id(layer.rule)]) for layer in self.layers]

    def masks(self, fraction: float) -> Masks:
        """Masks at `fraction` of each layer's target sparsity: per weight, or per channel group (block)."""
        dg = self.session.graph
        if self.block:
            scores = {q: p.score.detach() for q, p in self.params.items()}
            return compute_masks(dg, self.session.config, self._scaled(fraction), lambda group, slots: accumulate(
                dg, group, slots, lambda t, d: t.sum([i for i in range(t.dim()) if i != d]),
                lambda s: scores.get(s.tensor[1:])))
        masks = Masks(dg)
        for layer in self.layers:
            score = self.params[layer.weight].score.detach()
            target = layer.rule.target * fraction
            masks.weights[layer.weight] = (torch.sigmoid(score) > target if self.mode == "soft"
                                           else keep_largest(score, target))
        return masks

    def update(self, fraction: float) -> None:
        """Write the masks at `fraction` of the targets into the parametrizations (weights may come back)."""
        masks = self.masks(fraction)
        for q, param in self.params.items():
            if self.block:
                keep = torch.ones_like(param.mask, dtype=torch.bool)
                for d in range(keep.dim()):
                    kept = masks.kept("@" + q, d)
                    if kept is not None:
                        dim_keep = torch.zeros(keep.shape[d], dtype=torch.bool)
                        dim_keep[torch.as_tensor(kept)] = True
                        keep &= dim_keep.view([-1 if i == d else 1 for i in range(keep.dim())])
            else:
                keep = masks.weights[q]
            param.mask.copy_(keep)

    def finish(self) -> Masks:
        """Remove the score parametrizations (the trained weights stay) and return the masks at the target."""
        masks = self.masks(1.0)
        for q in self.params:
            owner, _, attr = q.rpartition(".")
            parametrize.remove_parametrizations(self.session.model.get_submodule(owner), attr,
                                                leave_parametrized=False)
        return masks


def movement(session: Session, loop: TrainLoop, warm_up_step: int, cool_down_beginning_step: int,
             training_epochs: int | None = None, training_steps: int | None = None, movement_mode: str = "hard",
             sparse_granularity: str = "finegrained", regular_scale: float | None = None,
             score_lr: float = 1e-2) -> None:
    """Movement fine-pruning on a session: train weights and scores with the user's loop, then apply the masks.

    Args:
        session: the pruning session (its `model` is trained in place).
        loop: the user's trainer, optimizer and criterion.
        warm_up_step: optimizer steps with every weight kept.
        cool_down_beginning_step: the step where the schedule reaches the config's sparsity.
        training_epochs: epochs (trainer calls in the v2.6 form); training_steps: steps (evaluator form).
        movement_mode: "hard" (top scores per layer) or "soft" (sigmoid(score) > the scheduled threshold).
        sparse_granularity: "finegrained" (single weights) or "block" / "auto" (channel groups: heads, FFN).
        regular_scale: soft mode's score regulariser weight (default 1).
        score_lr: learning rate of the scores' Adam (NNI: 1e-2).

    Raises:
        ConfigError: an unknown mode or granularity, a schedule with cool_down_beginning_step <= warm_up_step.
        TrainingError: the trainer never stepped the optimizer, the criterion is not a scalar, or a loss is NaN.
    """
    if movement_mode not in ("hard", "soft"):
        raise ConfigError(f"movement_mode={movement_mode!r}: use 'hard' (top-k scores) or 'soft' (threshold)")
    if sparse_granularity not in _GRANULARITY:
        raise ConfigError(f"sparse_granularity={sparse_granularity!r}: use 'finegrained' or 'block' (alias 'auto')")
    granularity = _GRANULARITY[sparse_granularity]
    if granularity == "block" and movement_mode == "soft":
        raise ConfigError("MovementPruner: sparse_granularity='block' ranks channel groups, which needs "
                          "movement_mode='hard'")
    if not 0 <= warm_up_step < cool_down_beginning_step:
        raise ConfigError(f"MovementPruner: warm_up_step={warm_up_step} must be >= 0 and smaller than "
                          f"cool_down_beginning_step={cool_down_beginning_step}")
    optimizer = loop.optimizer_for(session.model)  # before the scores exist: the user's optimizer never steps them
    state = _Movement(session, warm_up_step, cool_down_beginning_step, movement_mode, granularity, regular_scale,
                      score_lr)
    counter = _StepCounter(optimizer, state.after_step)
    try:
        loop.run(session.model, optimizer, _Criterion(loop.criterion, state.regulariser, "movement pruning"),
                 training_epochs if training_epochs is not None or training_steps is None else None, training_steps)
    except BaseException:
        state.finish()
        raise
    finally:
        counter.remove()
    masks = state.finish()
    if counter.steps == 0:
        raise _never_stepped("MovementPruner", "the movement scores")
    if counter.steps < cool_down_beginning_step:
        _log.warning("MovementPruner: training ran %d optimizer steps, fewer than cool_down_beginning_step=%d: the "
                     "schedule reached %.0f%% of the target sparsity; the final masks (at the target) were applied "
                     "without fine-tuning after them", counter.steps, cool_down_beginning_step,
                     100 * state.fraction())
    session.apply(masks, shrink_only=False)


# -- compile path ---------------------------------------------------------------------------------------
def _loop_from_config(session: Session) -> TrainLoop:
    cfg = session.config
    if cfg.data is None:
        raise ConfigError(f"config['pruner'] = {cfg.pruner!r} trains the model, but there is no trainer and no data: "
                          "pass config['data'] = an iterable of (x, y) batches (and 'loss'), or use "
                          f"fxprune.pruners.{'ADMMPruner' if cfg.pruner == 'admm' else 'MovementPruner'}(model, "
                          "config_list, trainer, optimizer, criterion, ...)")
    lr = cfg.options.get("lr", 1e-3)
    return TrainLoop(make_trainer(cfg.data, desc=f"{cfg.pruner} training"),
                     lambda params: torch.optim.Adam(params, lr=lr), cfg.loss or F.cross_entropy)


_ADMM_OPTIONS = {"iterations", "training_epochs", "granularity", "rho", "lr"}
_MOVEMENT_OPTIONS = {"warm_up_step", "cool_down_beginning_step", "training_epochs", "training_steps", "movement_mode",
                     "sparse_granularity", "regular_scale", "score_lr", "lr"}


def run_training(session: Session) -> None:
    """The "training" family for `fxprune.compile`: ADMM and Movement train on `config["data"]` with
    `config["loss"]` (default cross-entropy) and Adam (`options["lr"]`, default 1e-3); other options are
    the NNI constructor's arguments."""
    name, options = session.config.pruner, session.config.options
    known = {"admm": _ADMM_OPTIONS, "movement": _MOVEMENT_OPTIONS}.get(name)
    if known is None:
        raise ConfigError(f"config['pruner'] = {name!r} is not run by fxprune.pruners.training (admm, movement)")
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"config['options'] for {name}: unknown {sorted(unknown)}; known: {sorted(known)}")
    loop = _loop_from_config(session)
    kwargs = {k: v for k, v in options.items() if k != "lr"}
    if name == "admm":
        admm(session, loop, **kwargs)
    else:
        n_batches = len(session.config.data) if hasattr(session.config.data, "__len__") else 100
        kwargs.setdefault("training_epochs", 1)
        kwargs.setdefault("warm_up_step", 0)
        kwargs.setdefault("cool_down_beginning_step", max(1, int(0.8 * n_batches * kwargs["training_epochs"])))
        movement(session, loop, **kwargs)


# -- NNI classes ----------------------------------------------------------------------------------------
def _loop(cls: str, bound: dict[str, Any], evaluator_form: bool, model: nn.Module) -> TrainLoop:
    if evaluator_form:
        ev = bound.pop("evaluator")
        optimizers = ev.optimizers if isinstance(ev.optimizers, (list, tuple)) else [ev.optimizers]
        return TrainLoop(ev.training_func, optimizers[0], ev.criterion, model, evaluator_style=True)
    trainer, optimizer, criterion = (bound.pop(k, None) for k in ("trainer", "traced_optimizer", "criterion"))
    missing = [n for n, v in (("trainer", trainer), ("traced_optimizer", optimizer), ("criterion", criterion))
               if v is None]
    if missing:
        raise InputError(f"{cls}: no {', '.join(missing)}: it trains the model, so it needs trainer(model, optimizer, "
                         "criterion), an optimizer (e.g. torch.optim.Adam(model.parameters())) and "
                         "criterion(output, target) (or an evaluator=TorchEvaluator(...))")
    if not callable(trainer):
        raise InputError(f"{cls}: trainer must be callable as trainer(model, optimizer, criterion), "
                         f"got {type(trainer).__name__}")
    if not callable(criterion):
        raise InputError(f"{cls}: criterion must be callable as criterion(output, target), "
                         f"got {type(criterion).__name__}")
    return TrainLoop(trainer, optimizer, criterion, model)


class _TrainingPruner(Pruner):
    """A pruner that trains: example inputs default to the first batch the trainer feeds the model."""

    _old: list[str] = []
    _new: list[str] = []

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        bound, evaluator_form = bind_call(name, args, kwargs, self._old, self._new,
                                           aliases={"optimizer": "traced_optimizer"})
        inputs = bound.pop("example_inputs", None)
        dummy = bound.pop("dummy_input", None)
        mode = bound.pop("mode", "dependency_aware")
        evaluator = bound.get("evaluator")
        self.model = model
        self.example_inputs = inputs if inputs is not None else dummy
        if self.example_inputs is None and evaluator_form:
            self.example_inputs = getattr(evaluator, "dummy_input", None)
        self.loop = _loop(name, bound, evaluator_form, model)
        self.options = bound
        self.config = parse_config({"pruner": self.algorithm, "rules": config_list, "mode": mode})
        self.session = None

    def compress(self) -> tuple[torch.fx.GraphModule, Masks]:
        """Trace, train and prune `session.model`; return it (masked, trainable) and its masks. `model` is not
        changed, also when training fails."""
        if self.example_inputs is None:
            self.example_inputs = capture_inputs(self.model, self._first_batch, type(self).__name__)
        self.session = prepare(self.model, self.config, self.example_inputs)
        self.run(self.session)
        return self.session.model, self.session.masks

    def _first_batch(self) -> None:
        first_batch(self.loop, self.model)


def first_batch(loop: TrainLoop, model: nn.Module) -> None:
    """Start the user's training on `model` (`capture_inputs` stops it at the first forward call)."""
    loop.run(model, loop.optimizer_for(model), loop.criterion, 1, 1)


class ADMMPruner(_TrainingPruner):
    """ADMM pruning (NNI v2): `ADMMPruner(model, config_list, trainer, traced_optimizer, criterion, iterations,
    training_epochs, granularity='fine-grained')` or `(model, config_list, evaluator, iterations, training_epochs,
    granularity)`. Config entries may give `rho` (default 1e-4). Trains the model in `compress()`."""

    algorithm = "admm"
    _old = ["trainer", "traced_optimizer", "criterion", "iterations", "training_epochs", "granularity"]
    _new = ["evaluator", "iterations", "training_epochs", "granularity"]

    def run(self, session: Session, config: Config | None = None) -> None:
        """Train and prune `session.model` under the session's rules (or `config`'s: an iterative round's)."""
        opts = dict(self.options)
        unknown = set(opts) - {"iterations", "training_epochs", "granularity", "rho"}
        if unknown:
            raise InputError(f"ADMMPruner: unknown argument(s) {sorted(unknown)}")
        missing = [k for k in ("iterations", "training_epochs") if k not in opts]
        if missing:
            raise InputError(f"ADMMPruner: missing {', '.join(missing)} (e.g. iterations=10, training_epochs=1)")
        admm(session, self.loop, **opts, config=config)


class MovementPruner(_TrainingPruner):
    """Movement pruning (NNI v2): `MovementPruner(model, config_list, trainer, traced_optimizer, criterion,
    training_epochs, warm_up_step, cool_down_beginning_step)` or `(model, config_list, evaluator, warm_up_step,
    cool_down_beginning_step, training_epochs=None, training_steps=None, regular_scale=None, movement_mode='hard',
    sparse_granularity='finegrained')`. Fine-prunes (trains) the model in `compress()`."""

    algorithm = "movement"
    _old = ["trainer", "traced_optimizer", "criterion", "training_epochs", "warm_up_step", "cool_down_beginning_step"]
    _new = ["evaluator", "warm_up_step", "cool_down_beginning_step", "training_epochs", "training_steps",
            "regular_scale", "movement_mode", "sparse_granularity"]

    def run(self, session: Session) -> None:
        opts = dict(self.options)
        known = set(_MOVEMENT_OPTIONS) - {"lr"}
        unknown = set(opts) - known
        if unknown:
            raise InputError(f"MovementPruner: unknown argument(s) {sorted(unknown)}; known: {sorted(known)}")
        missing = [k for k in ("warm_up_step", "cool_down_beginning_step") if k not in opts]
        if missing:
            raise InputError(f"MovementPruner: missing {', '.join(missing)} (optimizer steps: e.g. warm_up_step=100, "
                             "cool_down_beginning_step=800)")
        movement(session, self.loop, **opts)

