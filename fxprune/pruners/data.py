"""Data-driven pruners: Taylor FO, Activation APoZ and Activation Mean (NNI's statistics pruners).

    from fxprune.pruners import TaylorFOWeightPruner
    traced_optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.01, momentum=0.9)
    pruner = TaylorFOWeightPruner(model, config_list, trainer, traced_optimizer, criterion, training_batches=20)
    model, masks = pruner.compress()      # your model, trained as NNI trains it and masked in place; NNI's masks

Three ways to feed the statistics, as NNI and `fxprune.compile` users know them:

- NNI v2.6 (the seed): `trainer, traced_optimizer, criterion, training_batches`. The user's trainer runs
  ONE call (as in NNI: the rest of its epoch still trains) on fxprune's traced copy of the model, with
  the optimizer rebuilt on that copy; the probe pass counts the first `training_batches` batches. The trained
  weights are copied back into your model, which `compress()` masks in place (as NNI trains and wraps it).
- NNI 2.9+: `evaluator=TorchEvaluator(...), training_steps=N` (`training_func(..., max_steps=N)`).
- fxprune: `data=` an iterable of batches (and `loss=` for Taylor): statistics only, no weight changes.

Where fxprune differs from NNI, and why:

- APoZ / mean activation are taken at the activation that really follows the layer in the graph (after
  its BatchNorm and ReLU), not NNI's `relu(conv output)`, which re-applies a ReLU of its own before the
  BatchNorm: a channel whose BatchNorm shift keeps it positive is not "zero" for the next layer, whatever
  the sign of the conv output. `activation=` is accepted and checked, but the model's own activation is
  used. A layer with no activation after it is measured at its own output.
- `training_batches` counts batches (NNI 2.6), not samples (NNI 2.10 counts samples and so uses one batch).
- Scores are dependency-aware by default (summed over every layer of a channel group, the BatchNorm and
  the next layer's inputs included for Taylor); `mode='normal'` scores each layer's own weight, as NNI.
- Taylor's `mode='global'` ranks the raw sums across layers (the paper's global sort) and counts
  channels, where NNI counts weight elements.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config, RuleConfig
from ..errors import ConfigError, FxPruneError, InputError
from ..importance import CRITERIA, Stats
from ..layers import Layer, select_layers
from ..masks import Masks, compute_masks
from ..session import Session
from ..training import split_batch
from .base import Pruner, bind_call
from .evaluator import TorchEvaluator, build_optimizer

__all__ = ["run_data", "score_masks", "first_samples", "Feed", "NNI_ALIASES", "positive", "init_pruner",
           "TaylorFOWeightPruner", "ActivationAPoZRankPruner", "ActivationMeanRankPruner"]

#: NNI's other names of the data-driven pruners' arguments (2.5's optimizer, 2.9's training_steps)
NNI_ALIASES = {"optimizer": "traced_optimizer", "training_steps": "training_batches"}

_ACTIVATIONS = ("relu", "gelu", "relu6")
#: sentinel for `Pruner.__init__`: the example inputs come later (from the first batch of the data or trainer)
_LATER = object()


# -- scoring ---------------------------------------------------------------------------------------------------
def score_masks(session: Session, criterion: str, stats: Stats | None, layers: list[Layer] | None = None,
                raw_global: bool = False, config: Config | None = None) -> Masks:
    """Masks from a criterion and collected statistics under the session's rules.

    Args:
        session: the pruning session.
        criterion: a name in `fxprune.importance.CRITERIA`.
        stats: what the probe pass collected (None for weight-only criteria).
        layers: the layers to prune (default: the session's).
        raw_global: in global mode (or for `total_sparsity` rules), rank the raw scores across layers (the
            paper's sort for Taylor and Slim) instead of scores normalised per group.
        config: other rules for this step on the same model (a validated Config, e.g. an iterative round's);
            default: the session's. The layers default to the ones its rules select.
    """
    dg, cfg = session.graph, session.config if config is None else config
    if layers is None:
        layers = session.layers if config is None else select_layers(dg, config)
    score = session.scorer(criterion, stats)
    pooled = cfg.ranks_globally or any(layer.rule is not None and layer.rule.total_sparsity is not None
                                       for layer in layers)
    if not (raw_global and pooled):
        return compute_masks(dg, cfg, layers, score, session.masks)
    flat_cfg = dataclasses.replace(cfg, mode="dependency_aware" if cfg.dependency_aware else "normal",
                                   global_ranking=False)
    return compute_masks(dg, flat_cfg, _global_rules(session, cfg, layers, score), score, session.masks)


def _cap(rule: RuleConfig, name: str) -> float:
    cap = rule.max_sparsity_per_layer
    if isinstance(cap, dict):
        return cap.get(name, 1.0)
    return 1.0 if cap is None else cap


def _global_rules(session: Session, cfg: Config, layers: list[Layer],
                  score: Callable[[Any, Any], torch.Tensor]) -> list[Layer]:
    """The layers with one per-layer sparsity each, from one threshold on the raw scores of every channel
    their rule selects (what a global sort removes from each group)."""
    dg = session.graph
    by_group: dict[int, list[Layer]] = {}
    for layer in layers:
        by_group.setdefault(dg.group_of[layer.slot], []).append(layer)
    pools: dict[int, tuple[RuleConfig, list[tuple[int, list[Layer], torch.Tensor]]]] = {}
    out = [layer for layer in layers if layer.excluded]
    for gid, members in by_group.items():
        group = dg.groups[gid]
        rules = [m.rule for m in members if m.rule is not None]
        if any(m.excluded for m in members) or not rules or not group.prunable.any():
            continue
        scores = score(group, None if cfg.dependency_aware else {m.slot for m in members}).clone()
        scores[~torch.as_tensor(group.prunable)] = math.inf
        pools.setdefault(id(rules[0]), (rules[0], []))[1].append((gid, members, scores))
    for rule, entries in pools.values():
        flat = torch.cat([s for _, _, s in entries])
        finite = flat[torch.isfinite(flat)].sort().values
        k = int(math.floor(rule.target * finite.numel() + 1e-9))
        threshold = finite[k - 1].item() if k > 0 else -math.inf
        for gid, members, scores in entries:
            n = dg.groups[gid].n_units
            want = int((scores <= threshold).sum())
            ratio = min([want / n] + [_cap(rule, m.name) for m in members])
            out += [dataclasses.replace(m, rule=RuleConfig(sparsity=ratio, op_names=[m.name])) for m in members]
    return out


# -- feeding data: trainer, evaluator or plain batches -----------------------------------------------------------
class _CheckedLoss:
    """The user's criterion, checked on every batch (a scalar, finite), plus an optional penalty (Slim)."""

    def __init__(self, criterion: Callable[..., Any], where: str, owner: str,
                 penalty: Callable[[], torch.Tensor] | None = None) -> None:
        self.criterion, self.where, self.owner, self.penalty, self.calls = criterion, where, owner, penalty, 0

    def __call__(self, output: Any, target: Any) -> torch.Tensor:
        value = self.criterion(output, target)
        i, self.calls = self.calls, self.calls + 1
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise InputError(f"{self.owner}: {self.where} returned {type(value).__name__} of shape "
                             f"{tuple(getattr(value, 'shape', ()))} on batch {i}; it must return a scalar loss "
                             "(use reduction='mean', e.g. torch.nn.functional.cross_entropy)")
        if not torch.isfinite(value.detach()).item():
            raise InputError(f"{self.owner}: the loss is {value.item()} on batch {i} of the trainer: the scores "
                             "would be NaN; check that batch, the learning rate and the model's weights")
        return value if self.penalty is None else value + self.penalty()


class _Captured(Exception):
    """Raised by the input-capturing hook to stop the user's trainer after its first forward call."""


@dataclass
class Feed:
    """Where a pruner gets its batches: a trainer + optimizer + criterion, an evaluator, or plain data."""

    owner: str
    trainer: Callable[..., Any] | None = None
    optimizer: Any = None
    criterion: Callable[..., Any] | None = None
    evaluator: TorchEvaluator | None = None
    data: Iterable[Any] | None = None
    loss: Callable[..., Any] | None = None

    @classmethod
    def from_call(cls, owner: str, call: dict[str, Any], needs_loss: bool) -> Feed:
        feed = cls(owner, call.pop("trainer", None), call.pop("traced_optimizer", None), call.pop("criterion", None),
                   call.pop("evaluator", None), call.pop("data", None), call.pop("loss", None))
        if feed.evaluator is not None and not isinstance(feed.evaluator, TorchEvaluator):
            raise InputError(f"{owner}(evaluator=...) must be a fxprune.nni.TorchEvaluator(training_func, optimizers, "
                             f"criterion), got {type(feed.evaluator).__name__}")
        if feed.trainer is not None:
            if not callable(feed.trainer):
                raise InputError(f"{owner}: trainer must be callable as trainer(model, optimizer, criterion), got "
                                 f"{type(feed.trainer).__name__}")
            if feed.optimizer is None:
                raise InputError(f"{owner}: a trainer needs traced_optimizer=nni.trace(torch.optim.SGD)"
                                 "(model.parameters(), lr=0.01) (a plain optimizer or a factory works too)")
            if not callable(feed.criterion):
                raise InputError(f"{owner}: a trainer needs criterion=torch.nn.functional.cross_entropy (called as "
                                 "criterion(output, target))")
        elif feed.evaluator is None and feed.data is None:
            raise InputError(f"{owner} needs batches to score channels: pass trainer, traced_optimizer, criterion "
                             "(NNI 2.6), evaluator=TorchEvaluator(...) (NNI 2.9), or data=an iterable of batches"
                             + (" and loss=F.cross_entropy" if needs_loss else ""))
        if feed.data is not None and feed.trainer is None and feed.evaluator is None:
            if isinstance(feed.data, (str, bytes)) or not isinstance(feed.data, Iterable):
                raise InputError(f"{owner}: data must be an iterable of batches (a DataLoader, a list of (x, y) "
                                 f"pairs), got {type(feed.data).__name__}")
            feed.loss = feed.loss or feed.criterion
            if needs_loss and not callable(feed.loss):
                raise InputError(f"{owner}: gradients need a loss: pass loss=torch.nn.functional.cross_entropy "
                                 "(called as loss(output, target)) with data=")
        return feed

    # -- example inputs ----------------------------------------------------------------------------------------
    def example_inputs(self, model: torch.nn.Module) -> Any:
        """Inputs to trace with when the user gave no dummy_input: the first batch the feed gives the model."""
        if self.evaluator is not None and self.evaluator.dummy_input is not None:
            return self.evaluator.dummy_input
        if self.trainer is None and self.evaluator is None:
            for batch in self.data:  # type: ignore[union-attr]
                return first_samples(split_batch(batch)[0])
            raise InputError(f"{self.owner}: data gave no batch; pass an iterable of batches")
        twin = copy.deepcopy(model)  # the user's trainer runs on a copy until its first forward call
        seen: list[tuple[Any, ...]] = []

        def capture(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            seen.append(args)
            raise _Captured

        handle = twin.register_forward_pre_hook(capture)
        try:
            if self.evaluator is not None:
                self.evaluator.train(model, twin, max_steps=1)
            else:
                self.trainer(twin, build_optimizer(self.optimizer, model, twin), self.criterion)  # type: ignore[misc]
        except _Captured:
            pass
        finally:
            handle.remove()
        if not seen:
            raise InputError(f"{self.owner}: the trainer ran no batch through the model it was given; it must call "
                             "model(x) (or pass dummy_input= to the pruner)")
        return first_samples(seen[0])

    # -- statistics --------------------------------------------------------------------------------------------
    def collect(self, session: Session, model: torch.nn.Module, needs: frozenset[str], batches: int | None) -> Stats:
        """Statistics over `batches` batches of the feed, taken on `session.model` (`model`: the user's)."""
        if self.trainer is None and self.evaluator is None:
            return session.collect(self.data, needs, self.loss, batches)  # type: ignore[arg-type]
        with session.probe(needs, batches) as stats:
            self.train(session, model, None, epochs=None, max_steps=batches)
        if "activations" in needs and stats.batches == 0:
            raise InputError(f"{self.owner}: the trainer ran no batch through the model: it must call model(x)")
        if "gradients" in needs and stats.backward == 0:
            raise InputError(f"{self.owner}: the trainer never called loss.backward(): Taylor scores need the "
                             "gradients of criterion(model(x), y)")
        return stats

    def train(self, session: Session, model: torch.nn.Module, penalty: Callable[[], torch.Tensor] | None,
              epochs: int | None, max_steps: int | None = None, why: str = "") -> int:
        """Run the user's training on `session.model` (`epochs` trainer calls; one when None). Returns the
        number of optimizer steps taken."""
        steps = [0]

        def count(optimizers: list[torch.optim.Optimizer]) -> None:
            for opt in optimizers:
                opt.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))

        if self.evaluator is not None:
            loss = _CheckedLoss(self.evaluator.criterion, "criterion", self.owner, penalty)
            self.evaluator.train(model, session.model, loss, max_steps=max_steps, max_epochs=epochs,
                                 on_optimizers=count)
        else:
            trainer, spec = self.trainer, self.optimizer
            if trainer is None:  # plain data: fxprune's own loop (Slim through fxprune.compile)
                from ..training import make_trainer

                trainer, spec = make_trainer(self.data, 1, "sparsity training"), spec or (torch.optim.Adam, {})
            optimizer = build_optimizer(spec, model, session.model, "traced_optimizer")
            count([optimizer])
            loss = _CheckedLoss(self.criterion or self.loss, "criterion", self.owner, penalty)  # type: ignore[arg-type]
            for _ in range(epochs or 1):
                trainer(session.model, optimizer, loss)
        if steps[0] == 0:
            raise InputError(f"{self.owner}: the trainer never called optimizer.step() on the optimizer it was given "
                             f"(NNI's trainer(model, optimizer, criterion) must step it after each batch){why}")
        return steps[0]


def first_samples(inputs: Any, n: int = 8) -> Any:
    """The first `n` samples of a batch's inputs: enough to trace and verify with."""
    if isinstance(inputs, tuple) and len(inputs) == 1:
        inputs = inputs[0]
    if isinstance(inputs, torch.Tensor):
        return inputs[:n] if inputs.dim() > 0 else inputs
    if isinstance(inputs, (tuple, list)):
        return tuple(first_samples(x, n) for x in inputs)
    return inputs


def positive(value: Any, name: str, owner: str, default: int | None = None) -> int | None:
    """A positive int argument (or None -> default)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{owner}: {name}={value!r} must be a positive int (the number of batches or epochs), "
                         f"e.g. {name}=20")
    return value


def init_pruner(pruner: Pruner, model: torch.nn.Module, config_list: Any, call: dict[str, Any], modes: tuple[str, ...],
                default_mode: str) -> None:
    """`Pruner.__init__` with the mode checked against the pruner's own and example inputs that may come later."""
    owner = type(pruner).__name__
    mode = call.pop("mode", default_mode)
    if mode not in modes:
        raise ConfigError(f"{owner}: mode={mode!r} is not one of {', '.join(map(repr, modes))}")
    inputs = call.pop("dummy_input", None)
    inputs = call.pop("example_inputs", None) if inputs is None else inputs
    Pruner.__init__(pruner, model, config_list, mode=mode, example_inputs=_LATER if inputs is None else inputs, **call)
    if inputs is None:
        pruner.example_inputs = None


class _StatisticsPruner(Pruner):
    """A pruner scored from statistics the probe pass collects (see the module docstring)."""

    criterion_name = "taylor"
    _old: tuple[str, ...] = ("trainer", "traced_optimizer", "criterion", "training_batches", "mode", "dummy_input")
    _new: tuple[str, ...] = ("evaluator", "training_steps", "mode", "dummy_input")
    _modes: tuple[str, ...] = ("normal", "dependency_aware", "global")

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        owner = type(self).__name__
        call, _ = bind_call(owner, args, kwargs, self._old, self._new, aliases=NNI_ALIASES)
        self.needs = CRITERIA[self.criterion_name].needs - {"weights"}
        self.feed = Feed.from_call(owner, call, "gradients" in self.needs)
        batches = call.pop("training_batches", None)
        if batches is None and (self.feed.trainer is not None or self.feed.evaluator is not None):
            raise InputError(f"{owner}: give the number of batches to collect statistics over: training_batches=20 "
                             "(training_steps=20 with an evaluator)")
        self.training_batches = positive(batches, "training_batches", owner)
        activation = call.pop("activation", "relu")
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"{owner}: activation={activation!r} is not one of {', '.join(_ACTIVATIONS)} "
                              "(fxprune measures the activation that follows the layer in the model)")
        init_pruner(self, model, config_list, call, self._modes, "dependency_aware")

    def compress(self) -> tuple[torch.nn.Module, dict[str, dict[str, torch.Tensor]]]:
        """Collect the statistics (training the model where NNI does), score, mask your model in place, and
        return `(model, masks)` (see `fxprune.pruners.base`)."""
        if self.example_inputs is None:
            self.example_inputs = self.feed.example_inputs(self.model)
        return super().compress()

    def run(self, session: Session, config: Config | None = None) -> None:
        """Collect the statistics on `session.model` and apply the masks under the session's rules (or `config`'s:
        an iterative round's)."""
        stats = self.feed.collect(session, self.model, frozenset(self.needs), self.training_batches)
        session.apply(score_masks(session, self.criterion_name, stats, raw_global=self.criterion_name == "taylor",
                                  config=config))


class TaylorFOWeightPruner(_StatisticsPruner):
    """Remove the channels with the smallest first-order Taylor importance: sum over `training_batches` batches
    of (w * dL/dw)^2 over everything the channel owns.

    Call forms: `(model, config_list, trainer, traced_optimizer, criterion, training_batches, mode='dependency_aware',
    dummy_input=None)`, `(model, config_list, evaluator, training_steps, mode=..., dummy_input=None)`, or
    `(model, config_list, data=batches, loss=F.cross_entropy, training_batches=None)`. `mode='global'` ranks
    the raw scores across layers (the paper's global sort).
    """

    algorithm = "taylorfo"
    criterion_name = "taylor"


class ActivationAPoZRankPruner(_StatisticsPruner):
    """Remove the channels whose activation (after the layer's BatchNorm and ReLU) is most often zero.

    Call forms as `TaylorFOWeightPruner`, plus `activation='relu'` after the batch count; modes 'normal' and
    'dependency_aware' (default).
    """

    algorithm = "apoz"
    criterion_name = "apoz"
    _old = ("trainer", "traced_optimizer", "criterion", "training_batches", "activation", "mode", "dummy_input")
    _new = ("evaluator", "training_steps", "activation", "mode", "dummy_input")
    _modes = ("normal", "dependency_aware")


class ActivationMeanRankPruner(ActivationAPoZRankPruner):
    """Remove the channels with the smallest mean activation (after the layer's BatchNorm and ReLU)."""

    algorithm = "mean_activation"
    criterion_name = "mean_activation"


def run_data(session: Session) -> None:
    """`fxprune.compile` for apoz, mean_activation, taylorfo: collect over config['data'], score, apply."""
    cfg = session.config
    if cfg.options:
        raise ConfigError(f"config['options'] = {cfg.options!r}: {cfg.pruner!r} takes no options (the batches come "
                          "from config['data'], their number from config['batches'])")
    needs = CRITERIA[cfg.algorithm.criterion].needs - {"weights"}  # type: ignore[index]
    if cfg.data is None:
        raise ConfigError(f"config['pruner'] = {cfg.pruner!r} scores channels from statistics over batches: add "
                          "'data': an iterable of batches (a DataLoader, a list of (x, y) pairs)"
                          + (" and 'loss': torch.nn.functional.cross_entropy" if "gradients" in needs else ""))
    if "gradients" in needs and cfg.loss is None:
        raise ConfigError(f"config['pruner'] = {cfg.pruner!r} needs gradients: add 'loss': "
                          "torch.nn.functional.cross_entropy (called as loss(output, target))")
    try:
        stats = session.collect(cfg.data, needs, cfg.loss, cfg.batches)
    except FxPruneError as e:
        raise type(e)(f"config['data']: {e}") from e
    session.apply(score_masks(session, cfg.algorithm.criterion, stats,  # type: ignore[arg-type]
                              raw_global=cfg.pruner == "taylorfo"))
