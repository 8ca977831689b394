"""NNI's normal mode without example inputs: masks per layer from each selected module's own weights, no tracing.

    pruner = L1NormPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}])   # no dummy_input
    model, masks = pruner.compress()       # masks: {layer: {'weight': 0/1, 'bias': 0/1}}, `model` masked in place

What NNI's basic pruners do in `mode='normal'`, on the user's module as it is:

- the layers are the modules with a `weight` the config_list selects (`op_types` by class or any base class,
  `op_names` by any of a module's names, `exclude`; `'default'` as `fxprune.layers` defines it);
- L1 / L2 / FPGM score each output channel of the layer's weight alone (every other dim reduced: NNI's
  `Scaling(kernel_size=[1])`), Level each weight element by magnitude;
- each layer loses its `int(sparsity * n)` lowest-scored channels (or weights); a `total_sparsity` entry is per
  layer too, as NNI's normal allocator reads it, except for Level, which ranks its weights across the entry's
  layers (`fxprune.masks.magnitude_keep`);
- channel masks cover the weight and the bias (`{'weight': ..., 'bias': ...}`), Level masks the weight only.

These masks know nothing of the layers' couplings (a residual add, a concat): `fxprune.speedup` /
`ModelSpeedup` reconcile them with the dependency graph when they trace (`fxprune.nni_masks`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import Config
from ..importance import tensor_scores
from ..layers import Layer, assign_rules, module_layers
from ..masks import current_weight, keep_largest, magnitude_keep

__all__ = ["normal_masks"]


def normal_masks(model: torch.nn.Module, cfg: Config) -> dict[str, dict[str, torch.Tensor]]:
    """NNI-format masks of `cfg`'s algorithm (level, l1, l2, fpgm) computed per layer without tracing.

    Args:
        model: the user's module (not modified).
        cfg: the validated config (its `pruner` and `rules`).

    Returns:
        `{layer: {'weight': 0/1 float mask, 'bias': ...}}` for every selected layer (all ones where nothing goes).
    """
    layers = [lay for lay in assign_rules(module_layers(model), cfg) if not lay.excluded]
    with torch.no_grad():
        if cfg.pruner == "level":
            keep = magnitude_keep(model, cfg, layers)
            return {lay.name: {"weight": keep[lay.weight].to(_dtype(model, lay))} for lay in layers}
        return {lay.name: _channel_masks(model, lay, cfg.pruner) for lay in layers}


def _dtype(model: torch.nn.Module, layer: Layer) -> torch.dtype:
    w = current_weight(model, layer.weight)
    return w.dtype if w.is_floating_point() else torch.float32


def _channel_masks(model: torch.nn.Module, layer: Layer, criterion: str) -> dict[str, Any]:
    weight = current_weight(model, layer.weight).detach()
    dim = layer.slot.dim
    keep = keep_largest(tensor_scores(criterion, weight, dim), layer.rule.target)  # type: ignore[union-attr]
    view = [1] * weight.dim()
    view[dim] = -1
    dtype = _dtype(model, layer)
    out = {"weight": keep.view(view).expand_as(weight).to(dtype).clone()}
    bias = getattr(model.get_submodule(layer.name), "bias", None)
    if isinstance(bias, torch.Tensor) and bias.shape == keep.shape:
        out["bias"] = keep.to(dtype)
    return out
