"""NNI-format masks -> fxprune: speed up the user's own module from `{layer: {'weight': 0/1, 'bias': 0/1}}`.

NNI's pruners mask each layer from its own weights, without looking at what the layer is coupled to;
`speedup_from_nni` reconciles those masks with the dependency graph when it traces, the way NNI's
`ModelSpeedup` resolves mask conflicts (a channel of a dependency set stays unless every layer producing it
prunes it):

A unit (channel, head, ...) of a group is removed iff
1. it is prunable (no rule keeps it), and some masked layer of the group masks it;
2. every masked layer of the group whose output slot covers it masks it: all of its masked parameters
   there are zero (weight row, and bias and BatchNorm shift where their masks are given; a bias without
   a mask follows its weight);
3. every unmasked layer of the group that produces it (a conv/linear whose input is in another group)
   reaches the rest of the model only through masked layers of the group that mask it (a BatchNorm whose
   weight and bias are masked, as NNI's Slim pruner leaves them, zeroes the conv before it).
Unmasked per-channel layers between (a BatchNorm after a masked conv) lose the unit with it: their shift
on a removed channel is dropped, as NNI's speedup drops it; the report gives the largest difference to
the user's model as given. Units masked somewhere but kept are listed in the report with the reason.
Zeros that remove no whole unit stay as weight masks (`Masks.weights`: the shapes keep them, the values
are zero). Masked units that are kept are also logged as a warning (logger `fxprune`): never a silent
partial prune.

NNI's wrapper, on the user's own module: `mask_module(model, masks)` masks each parameter in place with a
parametrization `weight = original * mask` (the Parameter object stays the same, so an optimizer built on
`model.parameters()` keeps training it); `unmask_module(model)` writes `weight * mask` into the plain
parameter and removes the parametrization (NNI's `pruner._unwrap_model()`). `speedup_from_nni` accepts a
model still masked that way (it unmasks it when it shrinks it in place). Mask names may be any of a
module's names (`conv1` for a conv registered both as `conv1` and inside `features`).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.utils.parametrize as parametrize

from .config import parse_config
from .errors import FormatError, InputError
from .graph import DependencyGraph, Group, NodeView, Slot
from .layers import find_layers
from .masks import Masks
from .passes.mask import WeightMask, bake_parametrizations
from .passes.trace import check_inputs
from .session import CompileResult, Session, analyze
from .writeback import apply_to, output_pairs, run_model

__all__ = ["load_nni_masks", "check_nni_masks", "nni_to_masks", "speedup_from_nni", "mask_module", "unmask_module",
           "masked_tensors"]

NniMasks = dict[str, dict[str, torch.Tensor]]
_log = logging.getLogger("fxprune")


def load_nni_masks(masks: Any, map_location: Any = None) -> NniMasks:
    """NNI's masks as a dict, from the dict itself or from a file saved with `torch.save`.

    Raises:
        FormatError: the path does not exist or is not a masks file (names the path and what it holds).
        InputError: a dict that is not `{layer name: {param name: tensor}}`.
    """
    where = "masks"
    if isinstance(masks, (str, os.PathLike)):
        where = f"masks file '{os.fspath(masks)}'"
        if not os.path.isfile(masks):
            raise FormatError(f"{where} does not exist: pass the dict compress() returned, or the path it was "
                              "saved to with torch.save(masks, path)")
        try:
            masks = torch.load(masks, map_location=map_location, weights_only=True)
        except Exception as e:
            raise FormatError(f"{where} is not a masks file ({type(e).__name__}: {str(e).splitlines()[0][:200]}): "
                              "save NNI's masks with torch.save(masks, path)") from e
        error: type[Exception] = FormatError
    else:
        error = InputError
    if not isinstance(masks, Mapping) or not masks:
        raise error(f"{where} must be a non-empty dict {{layer name: {{'weight': 0/1 tensor, 'bias': ...}}}}, "
                    f"got {type(masks).__name__}")
    for layer, params in masks.items():
        if not isinstance(params, Mapping) or not all(isinstance(v, torch.Tensor) for v in params.values()):
            raise error(f"{where}: masks[{layer!r}] must be a dict {{param name: 0/1 tensor}}, "
                        f"got {type(params).__name__}")
    return {str(k): dict(v) for k, v in masks.items()}


def check_nni_masks(model: torch.nn.Module, masks: NniMasks) -> None:
    """Every mask names a layer and parameter of `model`, has its shape, and holds only 0 and 1.

    Raises:
        InputError: names the layer (and the layers there are), the parameter, or the expected shape.
    """
    modules = dict(model.named_modules())
    for layer, params in masks.items():
        module = modules.get(layer)
        if module is None or not layer:
            names = [n for n, m in modules.items() if n and any(True for _ in m.parameters(recurse=False))]
            raise InputError(f"masks name the layer '{layer}', which {type(model).__name__} does not have; its "
                             f"layers with parameters are: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
        own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
        if parametrize.is_parametrized(module):  # masked in place by a pruner (mask_module): `weight` is a property
            own |= {attr: module.parametrizations[attr].original for attr in module.parametrizations}
        for name, mask in params.items():
            if name not in own:
                raise InputError(f"masks['{layer}'] has a mask for '{name}', but {layer} ({type(module).__name__}) "
                                 f"has only {sorted(own)}")
            if tuple(mask.shape) != tuple(own[name].shape):
                raise InputError(f"masks['{layer}']['{name}'] has shape {tuple(mask.shape)}; expected "
                                 f"{tuple(own[name].shape)}, the shape of {layer}.{name}")
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise InputError(f"masks['{layer}']['{name}'] holds values other than 0 and 1: a mask is 0 where "
                                 "the weight is pruned and 1 elsewhere")


def _dead(mask: torch.Tensor, dim: int) -> np.ndarray:
    """Bool per index along `dim`: every element there is masked."""
    other = [d for d in range(mask.dim()) if d != dim]
    alive = (mask != 0).any(dim=other) if other else mask != 0
    return (~alive).cpu().numpy()


def _per_class(group: Group, s: Slot, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(covers, all dead) per class of the group, for one slot's per-element dead vector."""
    cls = group.slot_class[s]
    covers = np.zeros(group.n_units, dtype=bool)
    covers[cls] = True
    alive = np.zeros(group.n_units, dtype=bool)
    np.logical_or.at(alive, cls, ~dead)
    return covers, covers & ~alive


def _layer_kills(dg: DependencyGraph, group: Group, layer: Any, masks: NniMasks) -> tuple[np.ndarray, np.ndarray]:
    """(covers, kills) per class: the masked layer's output covers the class / zeroes it (every masked
    parameter slot of the layer in this group all zero there; a bias with no mask follows its weight)."""
    covers = np.zeros(group.n_units, dtype=bool)
    kills = np.ones(group.n_units, dtype=bool)
    for param, mask in masks[layer.name].items():
        key = f"@{layer.name}.{param}"
        weight_key, out_dim = layer.slot
        for d in range(mask.dim()):
            s = Slot(key, d)
            if dg.group_of.get(s) != group.id or (key == weight_key and d != out_dim):
                continue  # the weight's input dim (a conv inside a residual block) is not what the layer outputs
            c, k = _per_class(group, s, _dead(mask, d))
            covers |= c
            kills &= k | ~c
    return covers, kills & covers


def _is_producer(dg: DependencyGraph, layer: Any) -> bool:
    """A layer that makes its channels from others (conv, linear), not one that carries them through
    (BatchNorm, a depthwise conv): its input has no slot in the group of its output."""
    gid = dg.group_of[layer.slot]
    nodes = {n.name: n for n in dg.gm.graph.nodes}
    for name in layer.nodes:
        view = NodeView(dg.gm, nodes[name], dg.shapes)
        for key in view.inputs()[:1]:
            if any(dg.group_of.get(Slot(key, d)) == gid for d in range(len(dg.shapes[key]))):
                return False
    return True


def _shadow(dg: DependencyGraph, layer: Any, by_node: dict[str, Any], masked: set[str]) -> list[Any] | None:
    """The masked layers of the group that every path from `layer`'s output reaches before any other use,
    or None when some path reaches another layer or the output first."""
    gid = dg.group_of[layer.slot]
    nodes = {n.name: n for n in dg.gm.graph.nodes}
    todo = [u for name in layer.nodes for u in nodes[name].users]
    seen, killers = set(), []
    while todo:
        node = todo.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        other = by_node.get(node.name)
        if node.op == "output" or (other is not None and dg.group_of.get(other.slot) != gid):
            return None
        if other is not None and other.name in masked:
            killers.append(other)
            continue
        todo.extend(node.users)
    return killers


def nni_to_masks(dg: DependencyGraph, masks: NniMasks) -> tuple[Masks, list[str]]:
    """Reconcile per-layer NNI masks with the dependency graph (rule: module docstring).

    Returns:
        The Masks (keep vectors per group; leftover zeros as weight masks) and report notes naming the
        units masked but kept, and why.
    """
    layers = find_layers(dg)
    masks = _traced_names(layers, masks)
    by_node = {n: lay for lay in layers for n in lay.nodes}
    masked = {lay.name for lay in layers if lay.name in masks}
    out, notes = Masks(dg), []
    ignored = [f"{layer}.{p}" for layer, params in masks.items() for p in params
               if f"@{layer}.{p}" not in dg.shapes]
    if ignored:
        notes.append(f"masks of tensors the traced forward does not use were ignored: {', '.join(ignored[:8])}")
    by_group: dict[int, list[Any]] = {}
    for lay in layers:
        by_group.setdefault(dg.group_of[lay.slot], []).append(lay)
    for gid, members in by_group.items():
        group = dg.groups[gid]
        hit = [m for m in members if m.name in masked]
        if not hit:
            continue
        touched = np.zeros(group.n_units, dtype=bool)
        remove = group.prunable.copy()
        why: dict[str, np.ndarray] = {}
        for m in hit:
            covers, kills = _layer_kills(dg, group, m, masks)
            touched |= kills
            if (covers & ~kills).any():
                why[f"not masked in {m.name}"] = covers & ~kills
            remove &= kills | ~covers
        for m in members:
            if m.name in masked or not _is_producer(dg, m):
                continue
            cls = group.slot_class[m.slot]
            covers = np.zeros(group.n_units, dtype=bool)
            covers[cls] = True
            killers = _shadow(dg, m, by_node, masked)
            needed = covers.copy()
            if killers is not None:
                needed &= ~np.logical_and.reduce([_layer_kills(dg, group, k, masks)[1] for k in killers] or [covers])
            if needed.any():
                why[f"{m.name} (not masked) still produces them"] = needed
            remove &= ~needed
        frozen = touched & ~group.prunable
        if frozen.any():
            why["kept by the rules: " + (group.reasons[0] if group.reasons else "no parameter to remove")] = frozen
        remove &= touched
        if remove.any():
            out.keep[gid] = ~remove
        kept = touched & ~remove
        if kept.any():
            first = hit[0]
            idx = np.flatnonzero(kept[group.slot_class[first.slot]])
            reasons = "; ".join(f"{text}: {int((mask & kept).sum())}" for text, mask in why.items()
                                if (mask & kept).any())
            notes.append(f"{first.name}: {int(kept.sum())} unit(s) masked but kept (channels "
                         f"{idx[:12].tolist()}{' ...' if len(idx) > 12 else ''}), because: {reasons}; "
                         f"{int(remove.sum())} removed in its group ({', '.join(m.name for m in members[:4])})")
    for layer, params in masks.items():
        for param, mask in params.items():
            if f"@{layer}.{param}" in dg.shapes and bool((mask == 0).any()):
                out.weights[f"{layer}.{param}"] = (mask != 0).to(torch.bool)
    return out, notes


def _traced_names(layers: list[Any], masks: NniMasks) -> NniMasks:
    """The masks keyed by the traced layer names (a mask may name a layer by any of its module's names)."""
    rename = {alias: lay.name for lay in layers for alias in lay.aliases if alias != lay.name and alias in masks}
    return {rename.get(name, name): params for name, params in masks.items()}


# -- NNI's wrapper on the user's own module ---------------------------------------------------------------
def mask_module(model: torch.nn.Module, masks: NniMasks) -> None:
    """Mask `model` in place as NNI's wrapper does: `param = original * mask` (a parametrization) for every
    mask with a zero; a parameter already masked this way gets the new mask (its mask is replaced).

    Args:
        model: the user's module (mask names are its module names).
        masks: `{layer: {param: 0/1 tensor of the param's shape}}`.
    """
    for layer, params in masks.items():
        module = model.get_submodule(layer)
        for attr, mask in params.items():
            keep = (mask != 0).to(device=getattr(module, attr).device)
            if parametrize.is_parametrized(module, attr) and isinstance(module.parametrizations[attr][0], WeightMask):
                module.parametrizations[attr][0].mask.copy_(keep)
            elif not bool(keep.all()):
                parametrize.register_parametrization(module, attr, WeightMask(keep))


def masked_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`{qualname: bool keep mask}` of every tensor `mask_module` masks in `model` (each module once)."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for attr, plist in module.parametrizations.items():
                if isinstance(plist[0], WeightMask):
                    out[f"{name}.{attr}" if name else attr] = plist[0].mask
    return out


def unmask_module(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Undo `mask_module`: write `original * mask` into the plain parameter (the same Parameter object, so
    optimizers holding it stay valid) and remove the parametrization (NNI's `_unwrap_model()`).

    Returns:
        `{qualname: bool keep mask}` of the tensors unmasked (what `mask_module` would put back).
    """
    removed = masked_tensors(model)
    for qualname in removed:
        owner, _, attr = qualname.rpartition(".")
        module = model.get_submodule(owner)
        original = module.parametrizations[attr].original
        with torch.no_grad():
            original.copy_(getattr(module, attr))
        bake_parametrizations(module, {attr})  # restores the plain class without editing the shared one
        if isinstance(original, torch.nn.Parameter):
            module._parameters[attr] = original
        else:
            module._buffers[attr] = original
    return removed


def _remask(model: torch.nn.Module, removed: dict[str, torch.Tensor]) -> None:
    for qualname, keep in removed.items():
        owner, _, attr = qualname.rpartition(".")
        parametrize.register_parametrization(model.get_submodule(owner), attr, WeightMask(keep))


def speedup_from_nni(model: torch.nn.Module, masks: Any, dummy_input: Any, *, inplace: bool = False,
                     config: Any = None, map_location: Any = None) -> CompileResult:
    """Remove what NNI-format masks prune from the user's model, verified, and optionally write it back.

    Args:
        model: the user's module the masks were computed on (e.g. after NNI's `pruner._unwrap_model()`).
        masks: `{layer: {'weight': 0/1 tensor, 'bias': ...}}` as `compress()` returns it, or a path saved
            with `torch.save`.
        dummy_input: a tensor or tuple of tensors for one forward call.
        inplace: also shrink `model` itself (`fxprune.writeback.apply_to`), all or nothing.
        config: optional fxprune config keys for tracing and checking (`frontend`, `rtol`, `atol`).
        map_location: for loading a masks file, as in `torch.load`.

    Returns:
        CompileResult: `.model` the pruned GraphModule (verified against the masked one), `.report` with
        notes naming the masked units that were kept and why.

    Raises:
        FormatError / InputError: a masks file that is not one, a mask for a layer or parameter the model
            does not have, of the wrong shape, or not 0/1 (the model is untouched).
    """
    nni = load_nni_masks(masks, map_location)
    check_nni_masks(model, nni)
    inputs = check_inputs(model, dummy_input)
    cfg = parse_config({"sparsity": 0.5, **config}) if config else parse_config({"sparsity": 0.5})
    timings: dict[str, float] = {}
    plain = model
    if masked_tensors(model):  # still masked in place by a pruner: trace a copy with the masks written in
        plain = copy.deepcopy(model)
        unmask_module(plain)
    gm, dg = analyze(plain, inputs, cfg, timings)
    fx_masks, notes = nni_to_masks(dg, nni)
    session = Session.start(gm, dg, cfg, [], inputs, set(fx_masks.keep), timings)  # the masks say what goes
    session.apply(fx_masks)
    result = session.finish()
    result.report.pruner = "nni masks"
    pruned = result.model
    pairs = output_pairs(run_model(model, inputs), run_model(pruned, inputs))
    shift = max((float((a - b).abs().max()) for _, a, b in pairs if a.shape == b.shape and a.is_floating_point()),
                default=0.0)
    if shift > cfg.atol + cfg.rtol:
        notes.append(f"max |your model as given - pruned| = {shift:.3g}: removed channels still carried a constant "
                     "in your model (e.g. a BatchNorm shift after a masked conv), which the pruned model drops, "
                     "as NNI's ModelSpeedup does; the pruned model equals the masked one (verified)")
    result.report.notes = notes
    for note in notes:
        if "masked but kept" in note:
            _log.warning("speedup: %s", note)
    if inplace:
        removed = unmask_module(model)
        try:
            apply_to(model, result)
        except Exception:
            _remask(model, removed)
            raise
    return result
