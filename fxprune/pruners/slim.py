"""Network Slimming (NNI's SlimPruner): train with an L1 penalty on the BatchNorm scales, then remove the
channels whose |gamma| is smallest, ranked across layers by default.

    pruner = SlimPruner(model, [{"sparsity": 0.8, "op_types": ["BatchNorm2d"]}], trainer, traced_optimizer,
                        criterion, training_epochs=1)
    model, masks = pruner.compress()     # your model, trained `training_epochs` with the penalty, masked in place

The model IS trained during `compress()` (as in NNI): `training_epochs` calls of the user's trainer with
`criterion(output, target) + scale * sum |gamma|` over the selected BatchNorm layers. A BatchNorm channel
takes its whole group with it: the conv filter before it, its shift, and the next layer's inputs.

Where fxprune differs from NNI: the default `mode='global'` accepts the seed's own `'sparsity'` key (NNI
only accepts `total_sparsity` there and rejects the seed's example); the sparsity is the fraction of the
selected BatchNorm channels removed, one threshold on the raw |gamma| across layers (each layer keeps at
least one channel). `mode='normal'` removes that fraction from every layer.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import torch

from ..config import Config
from ..errors import ConfigError, InputError
from ..layers import Layer, find_layers, select_layers
from ..session import Session
from .base import Pruner, bind_call
from .data import NNI_ALIASES, Feed, init_pruner, positive, score_masks

__all__ = ["SlimPruner", "run_slim", "slim_layers", "BATCHNORM_TYPES"]

#: the layer types whose scale Slim penalises and ranks; op_types=['default'] means these for Slim
BATCHNORM_TYPES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
_OPTIONS = {"scale": "the L1 penalty's weight (default 1e-4)",
            "training_epochs": "epochs of penalised training over config['data'] (default 1)",
            "optimizer": "(torch.optim.SGD, {'lr': 0.01}) or a factory f(params) (default Adam, lr 1e-3)"}


def slim_layers(session: Session, owner: str, config: Config | None = None) -> list[Layer]:
    """The BatchNorm layers the rules select ('default' meaning every BatchNorm), or a ConfigError naming what
    the rules selected and the BatchNorm layers the model has. `config`: a step's own rules (default: the
    session's)."""
    cfg = session.config if config is None else config
    norms = [layer.name for layer in find_layers(session.graph) if set(layer.type_names) & set(BATCHNORM_TYPES)]
    if not norms:
        types = sorted({layer.type_name for layer in find_layers(session.graph)})
        raise ConfigError(f"{owner} ranks BatchNorm scales, and the model has no BatchNorm layer (its layer types: "
                          f"{types}); use TaylorFOWeightPruner or L1NormPruner on this model")
    layers = session.layers if config is None else select_layers(session.graph, cfg)
    if any("default" in rule.op_types for rule in cfg.rules):
        rules = [dataclasses.replace(r, op_types=[t for t in r.op_types if t != "default"] + list(BATCHNORM_TYPES))
                 if "default" in r.op_types else r for r in cfg.rules]
        layers = select_layers(session.graph, dataclasses.replace(cfg, rules=rules))
    other = [layer for layer in layers if not layer.excluded and not set(layer.type_names) & set(BATCHNORM_TYPES)]
    if other:
        found = ", ".join(f"{layer.name} ({layer.type_name})" for layer in other[:6])
        raise ConfigError(f"{owner} only prunes BatchNorm layers (it ranks their scales); the rules select {found}. "
                          f"Use op_types=['BatchNorm2d']; the model's BatchNorm layers: {', '.join(norms[:12])}")
    if not any(not layer.excluded for layer in layers):
        raise ConfigError(f"{owner}: the rules select no BatchNorm layer; the model has {', '.join(norms[:12])}")
    return layers


def _slim(session: Session, feed: Feed, model: torch.nn.Module, epochs: int, scale: float, owner: str,
          config: Config | None = None) -> None:
    """Penalised training on session.model, then masks from |gamma| (raw, global in global mode) under the
    session's rules or `config`'s."""
    layers = slim_layers(session, owner, config)
    gammas = [session.model.get_parameter(layer.weight) for layer in layers if not layer.excluded]
    before = [g.detach().clone() for g in gammas]

    def penalty() -> torch.Tensor:
        return scale * sum(g.abs().sum() for g in gammas)  # type: ignore[return-value]

    feed.train(session, model, penalty, epochs, why="; the L1 penalty on the BatchNorm scales never moved them")
    if all(torch.equal(b, g.detach()) for b, g in zip(before, gammas)):
        raise InputError(f"{owner}: the BatchNorm scales did not change during the sparsity training, so the L1 "
                         "penalty never moved them: build the optimizer over model.parameters() (the BatchNorm weights "
                         "included) with a non-zero learning rate, and do not freeze the BatchNorm layers")
    session.apply(score_masks(session, "bn_scale", None, layers, raw_global=True, config=config))


class SlimPruner(Pruner):
    """Network Slimming: L1-penalised training of the BatchNorm scales, then remove the smallest |gamma|.

    Call forms: `(model, config_list, trainer, traced_optimizer, criterion, training_epochs, scale=0.0001,
    mode='global', dummy_input=None)` (NNI 2.6), `(model, config_list, evaluator, training_epochs, scale=0.0001,
    mode='global')` (NNI 2.9), or `(model, config_list, data=batches, loss=F.cross_entropy, training_epochs=1,
    traced_optimizer=(torch.optim.Adam, {'lr': 1e-3}))`. Modes: 'global' (one threshold across layers) or 'normal'.
    """

    algorithm = "slim"
    _old = ("trainer", "traced_optimizer", "criterion", "training_epochs", "scale", "mode", "dummy_input")
    _new = ("evaluator", "training_epochs", "scale", "mode", "dummy_input")

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        owner = type(self).__name__
        call, _ = bind_call(owner, args, kwargs, self._old, self._new, aliases=NNI_ALIASES)
        self.feed = Feed.from_call(owner, call, needs_loss=True)
        epochs = call.pop("training_epochs", None)
        if epochs is None and (self.feed.trainer is not None or self.feed.evaluator is not None):
            raise InputError(f"{owner}: give the epochs of sparsity training: training_epochs=1")
        self.training_epochs = positive(epochs, "training_epochs", owner, 1)
        self.scale = _scale(call.pop("scale", 1e-4), f"{owner}: scale")
        init_pruner(self, model, config_list, call, ("global", "normal"), "global")

    def compress(self) -> tuple[torch.nn.Module, dict[str, dict[str, torch.Tensor]]]:
        """Sparsity-train (fxprune's traced copy, the weights copied back into your model), mask the smallest
        |gamma| in your model in place, and return `(model, masks)` (NNI's `{bn: {'weight', 'bias'}}`)."""
        if self.example_inputs is None:
            self.example_inputs = self.feed.example_inputs(self.model)
        return super().compress()

    def run(self, session: Session, config: Config | None = None) -> None:
        """Sparsity-train `session.model` and apply the masks under the session's rules (or `config`'s)."""
        _slim(session, self.feed, self.model, self.training_epochs, self.scale, type(self).__name__,  # type: ignore
              config)


def _scale(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ConfigError(f"{where} = {value!r} must be a non-negative number (the L1 penalty's weight, e.g. 1e-4)")
    return float(value)


def run_slim(session: Session) -> None:
    """`fxprune.compile` for slim: config['data'] + config['loss'], options scale / training_epochs / optimizer."""
    cfg: Config = session.config
    for key in cfg.options:
        if key not in _OPTIONS:
            raise ConfigError(f"config['options']['{key}'] is not a slim option; slim takes: "
                              + "; ".join(f"{k}: {v}" for k, v in _OPTIONS.items()))
    if cfg.data is None or cfg.loss is None:
        raise ConfigError("config['pruner'] = 'slim' trains with an L1 penalty on the BatchNorm scales: add 'data': an "
                          "iterable of (x, y) batches and 'loss': torch.nn.functional.cross_entropy")
    epochs = cfg.options.get("training_epochs", 1)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"config['options']['training_epochs'] = {epochs!r} must be a positive int, e.g. 1")
    scale = _scale(cfg.options.get("scale", 1e-4), "config['options']['scale']")
    optimizer = cfg.options.get("optimizer")
    if optimizer is not None and isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError("config['options']['optimizer'] must be a (class, kwargs) pair or a factory f(params): "
                          "fxprune.compile builds it on the traced model, e.g. (torch.optim.SGD, {'lr': 0.01})")
    feed = Feed("slim", optimizer=optimizer, data=cfg.data, loss=cfg.loss)
    _slim(session, feed, session.model, epochs, scale, "config['pruner'] = 'slim'")
