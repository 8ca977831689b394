"""Training callables the NNI pruners take, and rebuilding the user's optimizer on the model fxprune trains.

NNI's data-driven pruners train (or watch) the model through callables the user supplies: the v2.6 form
`trainer(model, optimizer, criterion)` with an `nni.trace`d optimizer, or NNI 2.9's
`TorchEvaluator(training_func, optimizers, criterion, ...)`. fxprune trains its traced copy
(`session.model`), not the user's module, so the optimizer is rebuilt on that copy's parameters, by
parameter *name* (the traced model keeps the user's qualnames; NNI's `OptimizerConstructHelper` does the
same for its wrapped model). Accepted optimizer specs:

    nni.trace(torch.optim.SGD)(model.parameters(), lr=0.01)   # traced: class and arguments recorded
    torch.optim.SGD(model.parameters(), lr=0.01)              # a plain instance: class + param groups
    (torch.optim.SGD, {"lr": 0.01})                           # a class and keyword arguments
    lambda params: torch.optim.SGD(params, lr=0.01)           # a factory over parameters

Optimizer state (momentum) is not carried over: like NNI, the rebuilt optimizer starts fresh.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.utils.parametrize as parametrize

from ..errors import InputError

__all__ = ["TorchEvaluator", "build_optimizer", "build_scheduler", "is_optimizer_spec", "trainable_parameter"]

_log = logging.getLogger("fxprune")


class TorchEvaluator:
    """NNI 2.9's `TorchEvaluator`: how a pruner trains (and optionally evaluates) the model.

    Args:
        training_func: `training_func(model, optimizers, criterion, lr_schedulers=None, max_steps=None,
            max_epochs=None)`; it must stop after `max_steps` optimizer steps or `max_epochs` epochs when given.
        optimizers: one optimizer spec (see the module docstring) or a list of them.
        criterion: `criterion(output, target) -> scalar loss`.
        lr_schedulers: a scheduler (traced, plain, or a factory `f(optimizer)`) or a list, one per optimizer.
        dummy_input: example inputs; fxprune traces the model with them when the pruner gets no `dummy_input`.
        evaluating_func: `evaluating_func(model) -> float | dict` (kept for NNI's iterative pruners).
    """

    def __init__(self, training_func: Callable[..., Any], optimizers: Any, criterion: Callable[..., Any],
                 lr_schedulers: Any = None, dummy_input: Any = None,
                 evaluating_func: Callable[[torch.nn.Module], Any] | None = None) -> None:
        if not callable(training_func):
            raise InputError(f"TorchEvaluator(training_func=...) must be callable as training_func(model, "
                             f"optimizers, criterion, lr_schedulers, max_steps, max_epochs), got "
                             f"{type(training_func).__name__}")
        if not callable(criterion):
            raise InputError(f"TorchEvaluator(criterion=...) must be callable as criterion(output, target), got "
                             f"{type(criterion).__name__}")
        self.training_func, self.criterion = training_func, criterion
        self.optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) and not \
            _is_class_kwargs(optimizers) else [optimizers]
        if lr_schedulers is None:
            self.lr_schedulers: list[Any] = []
        else:
            self.lr_schedulers = list(lr_schedulers) if isinstance(lr_schedulers, (list, tuple)) else [lr_schedulers]
        self.dummy_input, self.evaluating_func = dummy_input, evaluating_func

    def train(self, source: torch.nn.Module, model: torch.nn.Module, criterion: Callable[..., Any] | None = None,
              max_steps: int | None = None, max_epochs: int | None = None,
              on_optimizers: Callable[[list[torch.optim.Optimizer]], None] | None = None) -> None:
        """Run `training_func` on `model` with the optimizers rebuilt on it (`source` is the user's model the
        optimizers were built on), the given criterion (default: the evaluator's) and step/epoch limits."""
        optimizers = [build_optimizer(spec, source, model, "TorchEvaluator(optimizers=...)")
                      for spec in self.optimizers]
        schedulers = [build_scheduler(s, optimizers[min(i, len(optimizers) - 1)])
                      for i, s in enumerate(self.lr_schedulers)]
        if on_optimizers is not None:
            on_optimizers(optimizers)
        one = len(optimizers) == 1
        self.training_func(model, optimizers[0] if one else optimizers, criterion or self.criterion,
                           (schedulers[0] if len(schedulers) == 1 else schedulers) if schedulers else None,
                           max_steps=max_steps, max_epochs=max_epochs)

    def evaluate(self, model: torch.nn.Module) -> Any:
        """`evaluating_func(model)`; a dict's 'default' entry."""
        if self.evaluating_func is None:
            raise InputError("TorchEvaluator has no evaluating_func: pass evaluating_func=lambda model: accuracy")
        result = self.evaluating_func(model)
        return result["default"] if isinstance(result, dict) else result


def _is_class_kwargs(spec: Any) -> bool:
    return isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], type) and isinstance(spec[1], dict)


def is_optimizer_spec(spec: Any) -> bool:
    """Whether `spec` can describe an optimizer (an instance, a class + kwargs, a class, or a callable)."""
    return isinstance(spec, torch.optim.Optimizer) or _is_class_kwargs(spec) or callable(spec)


def _names_by_id(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}


def _rebind(params: Any, names: dict[int, str], target: torch.nn.Module, where: str) -> list[dict[str, Any]]:
    """Param groups over `target`'s parameters with the names the given params have in the source model."""
    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    out, missing = [], 0
    for group in groups:
        found = []
        plist = group["params"]
        for p in [plist] if isinstance(plist, torch.Tensor) else plist:
            name = names.get(id(p))
            if name is None:
                raise InputError(f"{where}: the optimizer holds a parameter (shape {tuple(p.shape)}) that is not "
                                 "one of the pruned model's: build it on model.parameters() of the model you prune")
            try:
                found.append(trainable_parameter(target, name))
            except AttributeError:
                missing += 1
        if found:
            out.append({**{k: v for k, v in group.items() if k not in ("params", "initial_lr")}, "params": found})
    if missing:
        _log.info("%s: %d parameter(s) of the optimizer no longer exist in the traced model", where, missing)
    if not out:
        raise InputError(f"{where}: none of the optimizer's parameters exist in the traced model; build the "
                         "optimizer on model.parameters() of the model you pass to the pruner")
    return out


def trainable_parameter(model: torch.nn.Module, name: str) -> torch.nn.Parameter:
    """The parameter `name` of `model` that an optimizer trains: under a weight-mask parametrization (an earlier
    unstructured pruning step), its stored original.

    Raises:
        AttributeError: `model` has no such parameter.
    """
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner)
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return model.get_parameter(name)


def _init_kwargs(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in values.items() if k in params and k != "params"}


def build_optimizer(spec: Any, source: torch.nn.Module, target: torch.nn.Module,
                    where: str = "traced_optimizer") -> torch.optim.Optimizer:
    """A fresh optimizer over `target`'s parameters that does what `spec` does over `source`'s.

    Args:
        spec: an (`nni.trace`d or plain) optimizer instance, `(cls, kwargs)`, an optimizer class, or a factory
            `f(params) -> Optimizer`.
        source: the model the instance was built on (the user's model).
        target: the model to train (fxprune's traced copy; parameter names as in `source`).
        where: the argument's name, for error messages.

    Raises:
        InputError: `spec` is none of these, or its parameters are not the source model's.
    """
    if isinstance(spec, torch.optim.Optimizer):
        names = _names_by_id(source)
        cls = getattr(spec, "trace_symbol", None)
        if cls is not None:  # nni.trace: rebuild from the recorded call, as NNI does
            args = list(getattr(spec, "trace_args", ()) or ())
            kwargs = dict(getattr(spec, "trace_kwargs", {}) or {})
            params = kwargs.pop("params") if "params" in kwargs else args.pop(0)
            if not isinstance(params, (list, tuple)):
                params = list(spec.param_groups) if inspect.isgenerator(params) or not params else list(params)
            return cls(_rebind(params, names, target, where), *args, **kwargs)
        cls = type(spec)
        return cls(_rebind(spec.param_groups, names, target, where), **_init_kwargs(cls, spec.defaults))
    if _is_class_kwargs(spec):
        return spec[0](target.parameters(), **spec[1])
    if isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer):
        return spec(target.parameters())
    if callable(spec):
        opt = spec(target.parameters())
        if not isinstance(opt, torch.optim.Optimizer):
            raise InputError(f"{where}: the factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
        return opt
    raise InputError(f"{where} must be an optimizer (nni.trace(torch.optim.SGD)(model.parameters(), lr=0.01), or a "
                     f"plain one), a (class, kwargs) pair, or a factory f(params); got {type(spec).__name__}")


def build_scheduler(spec: Any, optimizer: torch.optim.Optimizer) -> Any:
    """A fresh LR scheduler on `optimizer`: from a traced instance, a plain one (same constructor arguments,
    read from its attributes), or a factory `f(optimizer)`."""
    cls = getattr(spec, "trace_symbol", None)
    if cls is not None:
        args = list(getattr(spec, "trace_args", ()) or ())
        kwargs = dict(getattr(spec, "trace_kwargs", {}) or {})
        if "optimizer" in kwargs:
            kwargs["optimizer"] = optimizer
        elif args:
            args[0] = optimizer
        return cls(*args, **kwargs)
    if isinstance(spec, torch.optim.lr_scheduler.LRScheduler):
        cls = type(spec)
        values = {k: getattr(spec, k) for k in inspect.signature(cls.__init__).parameters if hasattr(spec, k)}
        return cls(optimizer, **{k: v for k, v in values.items() if k not in ("optimizer", "last_epoch")})
    if callable(spec):
        return spec(optimizer)
    raise InputError(f"lr_schedulers: {type(spec).__name__} is not a scheduler or a factory f(optimizer)")
