"""Rebuild a user's optimizer on another model (the masked GraphModule of a session), by parameter name.

NNI asks for an `nni.trace`d optimizer so that it can build a fresh one on its wrapped model (NNI 2.x
§1.5). fxprune does the same without `nni.trace`: the traced GraphModule keeps the user's qualnames, so
every parameter the optimizer holds is found again by its name. Accepted:

    rebuild_optimizer(torch.optim.Adam(model.parameters(), lr=1e-3), session.model, source=model)
    rebuild_optimizer(nni.trace(torch.optim.Adam)(model.parameters()), session.model, source=model)
    rebuild_optimizer((torch.optim.SGD, {"lr": 0.01}), session.model)      # class + kwargs
    rebuild_optimizer(torch.optim.Adam, session.model)                       # class, default kwargs
    rebuild_optimizer(lambda params: torch.optim.Adam(params, lr=1e-3), session.model)   # factory

Optimizer state (momentum, Adam moments) is not carried over: a fresh optimizer, as in NNI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..errors import InputError

__all__ = ["rebuild_optimizer"]

_log = logging.getLogger("fxprune")


def _canonical(name: str) -> str:
    """A parameter's name with parametrizations folded away (`fc.parametrizations.weight.original` -> `fc.weight`)."""
    if ".parametrizations." in name or name.startswith("parametrizations."):
        name = name.replace("parametrizations.", "", 1)
        if name.endswith(".original"):
            name = name[: -len(".original")]
    return name


def _by_name(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {_canonical(n): p for n, p in model.named_parameters(remove_duplicate=False)}


def rebuild_optimizer(optimizer_like: Any, model: torch.nn.Module, source: torch.nn.Module | None = None
                      ) -> torch.optim.Optimizer:
    """A fresh optimizer of the same kind and hyperparameters over `model`'s parameters.

    Args:
        optimizer_like: an optimizer instance (an `nni.trace`d one too), an optimizer class, a
            `(class, kwargs)` pair, or a factory `f(params) -> Optimizer`.
        model: the model to optimise (e.g. `session.model`).
        source: the model the instance's parameters belong to (default: `model`); they are matched to
            `model`'s parameters by qualified name.

    Returns:
        An optimizer over `model`'s parameters (per-group hyperparameters kept for an instance).

    Raises:
        InputError: `optimizer_like` is none of these, or none of its parameters exists in `model`.
    """
    if isinstance(optimizer_like, torch.optim.Optimizer):
        return _from_instance(optimizer_like, model, source or model)
    if isinstance(optimizer_like, tuple) and len(optimizer_like) == 2 and isinstance(optimizer_like[1], dict):
        cls, kwargs = optimizer_like
        return _from_class(cls, kwargs, model)
    if isinstance(optimizer_like, type):
        return _from_class(optimizer_like, {}, model)
    if callable(optimizer_like):
        opt = optimizer_like([p for p in model.parameters() if p.requires_grad])
        if not isinstance(opt, torch.optim.Optimizer):
            raise InputError(f"the optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer: "
                             "pass e.g. lambda params: torch.optim.Adam(params, lr=1e-3)")
        return opt
    raise InputError(f"optimizer: expected a torch.optim.Optimizer instance, an optimizer class, a (class, kwargs) "
                     f"pair or a factory f(params), got {type(optimizer_like).__name__}; e.g. "
                     "torch.optim.Adam(model.parameters(), lr=1e-3)")


def _from_class(cls: Any, kwargs: dict[str, Any], model: torch.nn.Module) -> torch.optim.Optimizer:
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise InputError(f"optimizer class {cls!r} is not a torch.optim.Optimizer subclass; e.g. torch.optim.SGD")
    return cls([p for p in model.parameters() if p.requires_grad], **kwargs)


def _from_instance(opt: torch.optim.Optimizer, model: torch.nn.Module, source: torch.nn.Module
                   ) -> torch.optim.Optimizer:
    cls: Callable[..., torch.optim.Optimizer] = getattr(opt, "trace_symbol", None) or type(opt)
    names = {id(p): n for n, p in _by_name(source).items()}
    target = _by_name(model)
    groups, missing, taken = [], [], set()
    for group in opt.param_groups:
        params = []
        for p in group["params"]:
            name = names.get(id(p))
            if name is None or name not in target:
                missing.append(name or f"<parameter of shape {tuple(p.shape)}>")
            elif id(target[name]) not in taken:
                taken.add(id(target[name]))
                params.append(target[name])
        if params:
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    if not groups:
        raise InputError(f"optimizer: none of its {sum(len(g['params']) for g in opt.param_groups)} parameters "
                         "belongs to the model being pruned; build it on that model, e.g. "
                         "torch.optim.Adam(model.parameters())")
    if missing:
        _log.warning("optimizer: %d parameter(s) not found in the pruned model by name (left out): %s",
                     len(missing), ", ".join(missing[:5]))
    new = cls(groups, **({"lr": opt.defaults["lr"]} if "lr" in opt.defaults else {}))
    _log.debug("rebuilt %s on %d parameter(s); its state was reset", type(new).__name__,
               sum(len(g["params"]) for g in groups))
    return new
