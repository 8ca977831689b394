"""The names NNI's user code imports, so NNI scripts run with only their import lines changed.

    import nni                                                   ->  from fxprune import nni
    from nni.compression.pytorch import ModelSpeedup             ->  from fxprune.nni import ModelSpeedup
    from nni.compression.pytorch.speedup import ModelSpeedup     ->  from fxprune.nni import ModelSpeedup
    from nni.compression.pytorch.utils.counter import count_flops_params
                                                                 ->  from fxprune.nni import count_flops_params

- `trace(cls_or_func)`: instances remember their class and arguments (`trace_symbol`, `trace_args`,
  `trace_kwargs`), as NNI's pruners read them from a traced optimizer; they are real instances of the class.
- `ModelSpeedup(model, dummy_input, masks_file).speedup_model()`: shrinks `model` in place from NNI-format
  masks (reconciled with the dependency graph: `fxprune.nni_masks`), verified, all or nothing.
- `count_flops_params(model, x)`: NNI's counter, same numbers and per-layer result dicts.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn

from .errors import InputError, UnsupportedError
from .graph import module_class
from .nni_masks import check_nni_masks, load_nni_masks, speedup_from_nni
from .pruners.evaluator import TorchEvaluator

__all__ = ["trace", "ModelSpeedup", "count_flops_params", "TorchEvaluator"]

_log = logging.getLogger(__name__)


# -- trace ---------------------------------------------------------------------------------------------


def _materialise(value: Any) -> Any:
    """Generators (e.g. `model.parameters()`) become lists, so the recorded arguments can be used again."""
    if isinstance(value, Iterator):
        return list(value)
    return value


def _keywords(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              skip_self: bool) -> tuple[list[Any], dict[str, Any]]:
    """NNI's kw_only form: positional arguments that have a name become keywords; positional-only ones and
    everything from a *args on stay positional."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return list(args), dict(kwargs)
    params = params[1:] if skip_self else params
    positional, keywords = [], {}
    for i, value in enumerate(args):
        if i >= len(params) or params[i].kind == inspect.Parameter.VAR_POSITIONAL:
            return list(args), dict(kwargs)
        if params[i].kind == inspect.Parameter.POSITIONAL_ONLY:
            positional.append(value)
        else:
            keywords[params[i].name] = value
    return positional, {**keywords, **kwargs}


def _record(obj: Any, symbol: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    obj.__dict__["trace_symbol"], obj.__dict__["trace_args"], obj.__dict__["trace_kwargs"] = symbol, args, kwargs


def trace(cls_or_func: Any = None, *, kw_only: bool = True, inheritable: bool = False) -> Any:
    """Wrap a class (or function) so that what it builds remembers the class and arguments, as `nni.trace`.

    `trace(torch.optim.SGD)(model.parameters(), lr=0.01)` is a real `torch.optim.SGD` (an instance of a
    subclass with the same name) with `trace_symbol` (SGD), `trace_args` ([]) and `trace_kwargs`
    ({'params': [...], 'lr': 0.01}); generators are recorded as lists. Usable as `@trace` or `@trace()`.

    Args:
        cls_or_func: a class or a function.
        kw_only: record named positional arguments as keywords (NNI's default).
        inheritable: accepted for NNI compatibility; subclasses of a traced class are traced anyway.

    Returns:
        The traced class or function.
    """
    if cls_or_func is None:
        return functools.partial(trace, kw_only=kw_only, inheritable=inheritable)
    if getattr(cls_or_func, "_traced", False):
        return cls_or_func
    if isinstance(cls_or_func, type):
        base = cls_or_func

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            args = tuple(_materialise(a) for a in args)
            kwargs = {k: _materialise(v) for k, v in kwargs.items()}
            base.__init__(self, *args, **kwargs)
            pos, kws = _keywords(base.__init__, args, kwargs, True) if kw_only else (list(args), dict(kwargs))
            _record(self, base, pos, kws)

        traced = type(base)(base.__name__, (base,), {
            "__init__": __init__, "__module__": base.__module__, "__qualname__": base.__qualname__,
            "__doc__": base.__doc__, "_traced": True, "__wrapped__": base,
            "__reduce_ex__": _reduce_traced,
        })
        return traced
    if callable(cls_or_func):
        func = cls_or_func

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            args = tuple(_materialise(a) for a in args)
            kwargs = {k: _materialise(v) for k, v in kwargs.items()}
            result = func(*args, **kwargs)
            pos, kws = _keywords(func, args, kwargs, False) if kw_only else (list(args), dict(kwargs))
            with contextlib.suppress(AttributeError, TypeError):  # ints, tuples, None: returned as they are
                _record(result, func, pos, kws)
            return result

        wrapper._traced = True  # type: ignore[attr-defined]
        return wrapper
    raise InputError(f"trace takes a class or a function, got {type(cls_or_func).__name__}")


def _reduce_traced(self: Any, protocol: int) -> Any:
    """Pickle a traced instance through its base class (the traced subclass is built at run time)."""
    state = self.__getstate__() if hasattr(self, "__getstate__") else self.__dict__
    info = (self.trace_symbol, self.trace_args, self.trace_kwargs)
    return _rebuild_traced, (type(self).__wrapped__, state, info)


def _rebuild_traced(base: type, state: Any, info: tuple[Any, list[Any], dict[str, Any]]) -> Any:
    cls = trace(base)
    obj = cls.__new__(cls)
    if hasattr(obj, "__setstate__"):
        obj.__setstate__(state)
    else:
        obj.__dict__.update(state)
    _record(obj, *info)
    return obj


# -- ModelSpeedup ----------------------------------------------------------------------------------------


class ModelSpeedup:
    """NNI's `ModelSpeedup`: `ModelSpeedup(model, dummy_input, masks_file).speedup_model()` shrinks `model`.

    Args:
        model: the model the masks were computed on (after NNI's `pruner._unwrap_model()`).
        dummy_input: a tensor or tuple of tensors for one forward call.
        masks_file: NNI's masks (`{layer: {'weight': 0/1, 'bias': 0/1}}`, as `compress()` returns them), or
            the path they were saved to with `torch.save` (NNI 3 calls it `masks_or_file`).
        map_location: for loading a masks file, as in `torch.load`.
        config: fxprune config keys for tracing and checking (`frontend`, `rtol`, `atol`); not in NNI.
        batch_dim, batch_size, confidence, garbage_collect_values, logger: accepted for NNI compatibility and
            unused (fxprune infers channels from rules, not from random batches).
        customized_replace_func, customized_mask_updaters, customized_replacers, graph_module: not supported
            (register a rule for a custom op instead: `fxprune.register_rule`).

    Raises (at construction, model untouched):
        FormatError / InputError: the masks file is not one; a mask names a layer or parameter the model does
            not have, has the wrong shape, or is not 0/1.
    """

    def __init__(self, model: nn.Module, dummy_input: Any, masks_file: Any = None, map_location: Any = None,
                 batch_dim: int = 0, batch_size: int = 8, confidence: int = 8,
                 customized_replace_func: Any = None, customized_mask_updaters: Any = None,
                 customized_replacers: Any = None, graph_module: Any = None, garbage_collect_values: bool = True,
                 logger: logging.Logger | None = None, *, masks_or_file: Any = None, config: Any = None) -> None:
        unsupported = {"customized_replace_func": customized_replace_func,
                       "customized_mask_updaters": customized_mask_updaters,
                       "customized_replacers": customized_replacers, "graph_module": graph_module}
        given = [k for k, v in unsupported.items() if v]
        if given:
            raise UnsupportedError(
                f"ModelSpeedup({given[0]}=...) is not supported: fxprune removes channels by the rule of each op; "
                "for a custom op register one with fxprune.register_rule(op, rule) (README: Adding a rule)")
        masks = masks_file if masks_file is not None else masks_or_file
        if masks is None:
            raise InputError("ModelSpeedup needs masks_file: the masks dict compress() returned, or its path")
        self.bound_model = model
        self.dummy_input = dummy_input
        self.masks = load_nni_masks(masks, map_location)
        check_nni_masks(model, self.masks)
        self.config = config
        self.result: Any = None

    def speedup_model(self) -> nn.Module:
        """Shrink the model in place (verified; all or nothing) and return it. `self.result` holds the
        CompileResult: `.report` says which masked channels were kept and why."""
        self.result = speedup_from_nni(self.bound_model, self.masks, self.dummy_input, inplace=True,
                                       config=self.config)
        _log.info("ModelSpeedup: %s", "; ".join(self.result.report.notes) or "all masked channels removed")
        return self.bound_model

    def run(self) -> nn.Module:
        """Alias of `speedup_model` (NNI 3)."""
        return self.speedup_model()


# -- count_flops_params ----------------------------------------------------------------------------------


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _conv(m: Any, x: Any, y: torch.Tensor, bias: bool) -> int:
    kernel = int(torch.Size(m.weight.shape[2:]).numel())
    out_size = int(torch.Size(y.shape[2:]).numel())
    flops = y.shape[1] * out_size * kernel * m.in_channels // m.groups
    return flops + (y.shape[1] * out_size if bias and m.bias is not None else 0)


def _linear(m: Any, x: Any, y: Any, bias: bool) -> int:
    return m.out_features * m.in_features + (m.out_features if bias and m.bias is not None else 0)


def _cell(input_size: int, hidden: int, kind: str, bias: bool) -> int:
    ops = hidden * (input_size + hidden) + hidden + (hidden * 2 if bias else 0)
    if kind == "gru":
        return ops * 3 + hidden + hidden * 3
    if kind == "lstm":
        return ops * 4 + hidden * 3 + hidden
    return ops


def _rnn(kind: str) -> Callable[..., int]:
    def count(m: Any, x: Any, y: Any, bias: bool) -> int:
        if isinstance(m, nn.RNNCellBase):
            return _cell(m.input_size, m.hidden_size, kind, bias)
        first = x[0]
        if isinstance(first, nn.utils.rnn.PackedSequence):
            steps = first.batch_sizes.size(0)
        else:
            steps = first.size(1) if m.batch_first else first.size(0)
        total = _cell(m.input_size, m.hidden_size, kind, bias)
        for _ in range(m.num_layers - 1):
            total += (_cell(m.hidden_size * 2, m.hidden_size, kind, bias) * 2 if m.bidirectional
                      else _cell(m.hidden_size, m.hidden_size, kind, bias))
        return total * steps
    return count


def _bn(m: Any, x: Any, y: Any, bias: bool) -> int:
    return 2 * x[0][0].numel()


def _per_input(m: Any, x: Any, y: Any, bias: bool) -> int:
    return x[0][0].numel()


def _per_output(m: Any, x: Any, y: Any, bias: bool) -> int:
    return y[0].numel()


def _adaptive_avgpool(m: Any, x: Any, y: Any, bias: bool) -> int:
    spatial = torch.tensor(x[0].shape[2:], dtype=torch.float)
    out = torch.tensor(m.output_size if isinstance(m.output_size, (tuple, list)) else [m.output_size],
                       dtype=torch.float)
    kernel = int(torch.prod(torch.div(spatial, out, rounding_mode="floor")))
    return (kernel + 1) * y[0].numel()


_UPSAMPLE = {"linear": 5, "bilinear": 11, "bicubic": 224 + 35, "trilinear": 13 * 2 + 5}


def _upsample(m: Any, x: Any, y: Any, bias: bool) -> int:
    return y[0].nelement() * _UPSAMPLE.get(m.mode, 0)


_DEFAULT_OPS: dict[type, Callable[..., int]] = {
    **dict.fromkeys([nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d],
                    _conv),
    nn.Linear: _linear, nn.RNNCell: _rnn("rnn"), nn.GRUCell: _rnn("gru"), nn.LSTMCell: _rnn("lstm"),
    nn.RNN: _rnn("rnn"), nn.GRU: _rnn("gru"), nn.LSTM: _rnn("lstm"),
}
_FULL_OPS: dict[type, Callable[..., int]] = {
    **dict.fromkeys([nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d], _bn), nn.LeakyReLU: _per_input,
    **dict.fromkeys([nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d], _per_output),
    **dict.fromkeys([nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d], _adaptive_avgpool),
    **dict.fromkeys([nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d], _upsample),
}


def _table(results: list[dict[str, Any]]) -> str:
    head = f"{'#':>4} {'name':<32} {'type':<16} {'weight shape':<20} {'input':<22} {'output':<22} {'FLOPs':>14} " \
           f"{'params':>10}"
    rows = [head] + [f"{i:>4} {r['name'][:32]:<32} {r['module_type'][:16]:<16} {str(r['weight_shape']):<20} "
                     f"{str(r['input_size']):<22} {str(r['output_size']):<22} {int(r['flops']):>14,} "
                     f"{r['params']:>10,}" for i, r in enumerate(results)]
    return "\n".join(rows)


def count_flops_params(model: nn.Module, x: Any, custom_ops: Mapping[type, Callable[..., Any]] | None = None,
                       verbose: bool = True, mode: str = "default") -> tuple[int, int, list[dict[str, Any]]]:
    """NNI's FLOPs and parameter counter: per sample, per leaf module of the known types.

    FLOPs follow NNI: a conv counts Cout * output positions * kernel * Cin / groups; a Linear
    out_features * in_features (once per sample, whatever the sequence length); RNN/GRU/LSTM(Cell) their cell
    formulas times the steps. `mode="full"` adds biases and BatchNorm (2 per input element), LeakyReLU,
    average pools and upsampling. Only modules called in forward are counted (functional calls are not).

    Args:
        model: the model (its train/eval mode is restored afterwards).
        x: a tensor, a tuple of tensors, or a shape tuple of ints (zeros of that shape are used).
        custom_ops: {module class: fn(module, inputs, output) -> dict with 'flops', 'params', 'weight_shape'}
            (NNI's callback form) overriding the built-in counts.
        verbose: log the per-layer table and the totals (logger `fxprune.nni`, level INFO; NNI prints them).
        mode: "default" or "full".

    Returns:
        (total FLOPs, total params of the counted modules, results): one dict per call of a counted module,
        with keys name, module_type, weight_shape, flops, params, input_size, output_size.
    """
    if mode not in ("default", "full"):
        raise InputError(f"count_flops_params(mode={mode!r}): mode is 'default' or 'full'")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    if isinstance(x, tuple) and x and all(isinstance(t, int) for t in x):
        inputs: tuple[Any, ...] = (torch.zeros(x, device=device),)
    elif isinstance(x, torch.Tensor):
        inputs = (x.to(device),)
    elif isinstance(x, (tuple, list)):
        inputs = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in x)
    else:
        raise InputError(f"count_flops_params(x=...) takes a tensor, a tuple of tensors or a shape tuple, got "
                         f"{type(x).__name__}")
    ops = {**_DEFAULT_OPS, **(_FULL_OPS if mode == "full" else {})}
    custom = dict(custom_ops or {})
    bias = mode == "full"
    results: list[dict[str, Any]] = []

    def hook(name: str, m: nn.Module, args: Any, out: Any) -> None:
        first = out[0] if isinstance(out, tuple) else out
        cls = module_class(m)  # a module masked in place by a pruner counts as its own class
        if cls in custom:
            counted = dict(custom[cls](m, args, out))
        else:
            counted = {"flops": ops[cls](m, args, first, bias), "params": _params(m),
                       "weight_shape": tuple(m.weight.size()) if hasattr(m, "weight") else 0}
        flops = counted["flops"]
        counted["flops"] = int(flops.item()) if isinstance(flops, torch.Tensor) else int(flops)
        results.append({"name": name, "input_size": tuple(args[0].size()) if args and hasattr(args[0], "size")
                        else (), "output_size": tuple(first.size()), "module_type": cls.__name__, **counted})

    handles = [m.register_forward_hook(functools.partial(hook, name)) for name, m in model.named_modules()
               if module_class(m) in ops or module_class(m) in custom]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    flops = sum(r["flops"] for r in results)
    total_params = sum({r["name"]: r["params"] for r in results}.values())
    if verbose:
        _log.info("%s\nFLOPs total: %d\n#Params total: %d", _table(results), flops, total_params)
    return flops, total_params, results
