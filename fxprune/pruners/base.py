"""What every NNI pruner class shares: NNI's constructor, `compress()` and the wrapper API, on a pruning session.

    pruner = L1NormPruner(model, config_list)          # NNI's normal mode: no example input needed
    model, masks = pruner.compress()                   # `model` is YOUR model, masked in place (NNI's wrapper)
    pruner._unwrap_model()                             # weight * mask written into the plain weights
    ModelSpeedup(model, dummy_input=x, masks_file=masks).speedup_model()   # `model` shrinks, in place

NNI's contract, as `compress()` keeps it:

- it returns `(model, masks)`: `model` is the object you passed, masked in place the way NNI's wrapper masks
  it (a parametrization `weight = original * mask`, and the bias, on each masked module; the Parameter objects
  stay the same, so an optimizer you built on `model.parameters()` keeps training them), and `masks` is NNI's
  `{layer: {'weight': 0/1 tensor of the weight's shape, 'bias': ...}}` for the layers the config_list selects
  (the weight only for Level);
- the pruners that train (Slim, the statistics pruners with a trainer) train fxprune's traced copy of the model,
  and `compress()` copies the trained weights (and BatchNorm statistics) back into your model before masking;
- without example inputs (NNI's `mode='normal'`, the default of Level/L1/L2/FPGM as in NNI) the masks come per
  layer from each module's own weights, without tracing (`fxprune.pruners.normal`); with `dummy_input=` the model
  is traced and the masks are dependency-aware (a channel goes from every layer coupled to it);
- `_unwrap_model()`, `_wrap_model()`, `show_pruned_weights()`, `export_model(model_path, mask_path)`,
  `get_masks()` and the `masks` attribute are there as in NNI.

For fxprune's own API: `pruner.session` is the pruning session (None in untraced normal mode), and
`pruner.masked_graph` its masked trainable GraphModule; `fxprune.speedup(pruner.masked_graph,
pruner.session.masks, x)` prunes it. A family module subclasses `Pruner`, names its algorithm in the catalogue
(`algorithm = "l1"`), and implements `run(session)`: what happens between `fxprune.prepare` and the result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..catalog import ALGORITHMS
from ..config import parse_config
from ..errors import InputError
from ..nni_masks import NniMasks, mask_module, unmask_module
from ..session import Session, prepare
from .normal import normal_masks

__all__ = ["Pruner", "copy_back", "bind_call", "is_evaluator"]

_log = logging.getLogger("fxprune")


class Pruner:
    """NNI's pruner API: `Pruner(model, config_list, ...).compress() -> (model, masks)` (module docstring).

    Args:
        model: your model; `compress()` masks it in place.
        config_list: NNI's config_list.
        mode: 'normal' (per layer), 'dependency_aware' (needs `dummy_input`), or a family's own modes.
        dummy_input: example inputs to trace with (NNI's name); `example_inputs=` is the same.
        **config: other fxprune config keys (`round_to`, `verify`, ...).

    Raises:
        InputError: no example inputs where the mode needs them (names `dummy_input` and the fix).
    """

    algorithm = "l1"
    #: True for the pruners that mask in NNI's normal mode without example inputs (Level, L1, L2, FPGM)
    untraced = False

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]], mode: str = "dependency_aware",
                 dummy_input: Any = None, example_inputs: Any = None, **config: Any) -> None:
        self.model = model
        inputs = example_inputs if example_inputs is not None else dummy_input
        self.config = parse_config({"pruner": self.algorithm, "rules": config_list, "mode": mode, **config})
        if inputs is None and not (self.untraced and mode == "normal"):
            owner = type(self).__name__
            if self.untraced:
                raise InputError(f"{owner}(mode={mode!r}) traces the model to find the layers coupled to each "
                                 "channel, so it needs dummy_input=torch.randn(1, 3, 224, 224) (the shape your model "
                                 "takes), as in NNI; mode='normal' (the default) needs none")
            raise InputError(f"{owner} needs example inputs to trace the model: pass "
                             "dummy_input=torch.randn(1, 3, 224, 224) (the shape your model takes)")
        self.example_inputs = inputs
        self.session: Session | None = None
        self.masks: NniMasks = {}

    # -- the algorithm ---------------------------------------------------------------------------------------------
    def run(self, session: Session) -> None:
        """The algorithm between prepare and finish: compute masks and apply them on `session`."""
        raise NotImplementedError

    def start(self) -> Session:
        """Trace, run the algorithm on fxprune's masked copy, and return the session (your model untouched);
        `compress()` is this plus the NNI masks on your model."""
        self.session = prepare(self.model, self.config, self.example_inputs)
        self.run(self.session)
        return self.session

    def compress(self) -> tuple[torch.nn.Module, NniMasks]:
        """Compute the masks and mask your model in place (NNI's wrapper).

        Returns:
            `(model, masks)`: the model you passed, masked (and trained, for the pruners that train), and NNI's
            `{layer: {'weight': 0/1 tensor, 'bias': ...}}`.
        """
        if self.example_inputs is None:
            self.session = None
            masks = normal_masks(self.model, self.config)
        else:
            session = self.start()
            masks = self._selected_masks(session)
            copy_back(session.model, self.model)
        mask_module(self.model, masks)
        self.masks = masks
        return self.model, masks

    @property
    def masked_graph(self) -> torch.fx.GraphModule | None:
        """fxprune's masked, trainable GraphModule of the last traced `compress()` (None in untraced normal mode)."""
        return None if self.session is None else self.session.model

    def _selected_masks(self, session: Session) -> NniMasks:
        """The session's masks in NNI's format, for the layers the config selects, keyed by their first name."""
        full = session.masks.to_nni()
        first = {id(m): n for n, m in self.model.named_modules()}
        channels = self.config.algorithm.unit != "weights"
        out: NniMasks = {}
        for layer in session.layers:
            if layer.excluded:
                continue
            module = self.model.get_submodule(layer.name)
            entry = full.get(layer.name, {})
            params = {"weight": module.weight}
            if channels and isinstance(getattr(module, "bias", None), torch.Tensor):
                params["bias"] = module.bias
            out[first[id(module)]] = {k: entry[k] if k in entry else torch.ones(v.shape) for k, v in params.items()}
        return out

    # -- NNI's wrapper API -----------------------------------------------------------------------------------------
    def get_masks(self) -> NniMasks:
        """NNI's masks of the last `compress()` (`{}` before it)."""
        return self.masks

    def _unwrap_model(self) -> None:
        """Write weight * mask into your model's plain weights and remove the masking (NNI's `_unwrap_model`)."""
        unmask_module(self.model)

    def _wrap_model(self) -> None:
        """Mask your model in place again with the last masks (NNI's `_wrap_model`)."""
        mask_module(self.model, self.masks)

    def show_pruned_weights(self, dim: int = 0) -> None:
        """Log, per masked layer, how many slices along `dim` keep a weight (NNI's 'remain/total' lines)."""
        for name, params in self.masks.items():
            mask = params["weight"]
            alive = mask != 0 if mask.dim() == 1 else (mask != 0).any(dim=[d for d in range(mask.dim()) if d != dim])
            _log.info("simulated prune %s remain/total: %d/%d (%.1f%% of the weights zero)", name, int(alive.sum()),
                      mask.shape[dim], 100.0 * float((mask == 0).float().mean()))

    def export_model(self, model_path: str | os.PathLike, mask_path: str | os.PathLike | None = None,
                     onnx_path: str | os.PathLike | None = None, input_shape: Any = None, device: Any = None,
                     dummy_input: Any = None, opset_version: int | None = None) -> None:
        """Save your model's state_dict with the masks applied, and optionally the masks and an ONNX file (NNI's
        `export_model`; `onnx_path` needs `input_shape` or `dummy_input`, as in NNI v1). The model stays masked.
        """
        if not self.masks:
            raise InputError(f"{type(self).__name__}.export_model: call compress() first (there are no masks yet)")
        self._unwrap_model()
        try:
            torch.save(self.model.state_dict(), model_path)
            _log.info("Model state_dict saved to %s", model_path)
            if mask_path is not None:
                torch.save(self.masks, mask_path)
                _log.info("Mask dict saved to %s", mask_path)
            if onnx_path is not None:
                if dummy_input is None and input_shape is None:
                    raise InputError(f"{type(self).__name__}.export_model(onnx_path=...) needs input_shape=(1, 3, "
                                     "32, 32) or dummy_input= to trace the model for ONNX")
                from ..passes.export import export_onnx

                x = dummy_input if dummy_input is not None else torch.randn(*input_shape, device=device)
                export_onnx(self.model, x if isinstance(x, tuple) else (x,), onnx_path, opset=opset_version)
                _log.info("Model in onnx with input shape %s saved to %s", tuple(x.shape), onnx_path)
        finally:
            self._wrap_model()

    def __repr__(self) -> str:
        algo = ALGORITHMS[self.algorithm]
        return f"{type(self).__name__}({algo.name}: {algo.summary})"


def copy_back(traced: torch.nn.Module, model: torch.nn.Module) -> None:
    """Copy into `model` every parameter and buffer of `traced` (by qualname) that differs: what training changed.
    The user's tensor objects are kept (optimizers hold them); a tensor masked in place gets the new values in its
    original (the mask applies on top)."""
    with torch.no_grad():
        for name, module in model.named_modules(remove_duplicate=False):
            own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
            for attr, plist in dict(getattr(module, "parametrizations", {})).items():
                own[attr] = plist.original
            try:
                twin = traced.get_submodule(name)
            except AttributeError:
                continue
            for attr, tensor in own.items():
                source = getattr(twin, attr, None)
                if isinstance(source, torch.Tensor) and source.shape == tensor.shape \
                        and not torch.equal(source, tensor):
                    tensor.copy_(source)


def is_evaluator(obj: Any) -> bool:
    """Whether `obj` is an NNI 2.9+ evaluator (`TorchEvaluator`, ours or one built the same way)."""
    return all(hasattr(obj, a) for a in ("training_func", "optimizers", "criterion"))


def bind_call(owner: str, args: tuple[Any, ...], kwargs: dict[str, Any], old: Sequence[str], new: Sequence[str],
              *, after: str = "config_list", aliases: dict[str, str] | None = None,
              keywords: Sequence[str] | None = None) -> tuple[dict[str, Any], bool]:
    """NNI's "fake overload" of a pruner constructor: the NNI 2.9+ form when the first argument after the fixed
    ones (or `evaluator=`) is an evaluator, else the NNI 2.6-2.8 form.

    Args:
        owner: the class name, for messages.
        args, kwargs: what the user passed after the fixed arguments.
        after: the last fixed argument's name, for messages.
        old, new: the parameter names of the two forms, in order.
        aliases: other NNI names of a parameter (`{"optimizer": "traced_optimizer"}`), by position or by name.
        keywords: keyword-only names the class also takes; when given, any other name is an error.

    Returns:
        (every argument by its name, whether the 2.9+ form was used).

    Raises:
        InputError: too many positional arguments, one given twice, or (with `keywords`) an unknown one.
    """
    aliases = aliases or {}
    first = args[0] if args else kwargs.get("evaluator")
    evaluator_form = is_evaluator(first)
    names = tuple(new if evaluator_form else old)
    form = "NNI 2.9+" if evaluator_form else "NNI 2.6-2.8"
    if len(args) > len(names):
        raise InputError(f"{owner} takes at most {len(names)} arguments after {after} in the {form} form "
                         f"({', '.join(names)}); got {len(args)}")
    call = {aliases.get(n, n): a for n, a in zip(names, args)}
    for key, value in kwargs.items():
        name = aliases.get(key, key)
        if name in call:
            raise InputError(f"{owner}: {name!r} is given twice (by position and by name, or with its NNI alias)")
        if keywords is not None and key not in names and name not in names and key not in keywords:
            raise InputError(f"{owner}: unexpected argument {key!r} in the {form} form; it takes: "
                             f"{', '.join((*names, *keywords))}")
        call[name] = value
    return call, evaluator_form
