"""The front door: `compile(model, config, example_inputs)` is one pruning session, run to the end.

    prepare (trace, analyze, mask pass) -> run the algorithm (score, apply) -> finish (speedup, verify, report)

and `speedup(masked_model, masks, x)` removes what a pruner's `compress()` masked.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.fx

from .errors import InputError
from .masks import Masks
from .nni_masks import speedup_from_nni
from .passes.speedup import detach_shared, speedup_pass
from .passes.trace import check_inputs, set_training
from .passes.verify import verify
from .pruners import run_algorithm
from .session import CompileResult, analyze, prepare

__all__ = ["compile", "speedup", "analyze", "CompileResult"]


def compile(model: torch.nn.Module, config: Any, example_inputs: Any) -> CompileResult:
    """Prune `model` as `config` says and return the smaller model, verified against the masked one.

    Args:
        model: any nn.Module that torch.fx (or torch.export) can trace; it is not modified.
        config: a dict ({"pruner": "l1", "sparsity": 0.5}), a `fxprune.Config`, or NNI's config_list.
        example_inputs: a tensor or tuple of tensors for one forward call.

    Returns:
        CompileResult with .model (pruned), .masked_model, .masks and .report.

    Example:
        >>> result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, torch.randn(1, 3, 32, 32))
        >>> print(result.report)
    """
    session = prepare(model, config, example_inputs)
    with session.timed("masks"):
        run_algorithm(session)
    return session.finish()


def speedup(masked_model: torch.nn.Module, masks: Any, example_inputs: Any = None,
            *, verify_outputs: bool = True, inplace: bool = False) -> torch.nn.Module:
    """Physically remove what `masks` masks.

    Args:
        masked_model: your own module (masked in place by a pruner's `compress()`, or unwrapped) with NNI-format
            masks, or fxprune's masked GraphModule (`pruner.masked_graph`, `session.model`; possibly fine-tuned).
        masks: NNI's `{layer: {'weight': 0/1 tensor, ...}}` dict as `compress()` returns it (or a path to
            one saved with torch.save), reconciled with the dependency graph (see `fxprune.nni_masks`), or the
            `Masks` of that GraphModule (`pruner.session.masks`).
        example_inputs: inputs to verify masked == pruned on (required for NNI-format masks).
        inplace: NNI-format masks only: also shrink `masked_model` itself, all or nothing.

    Returns:
        The physically smaller model: a GraphModule, or `masked_model` itself when `inplace`.
    """
    if isinstance(masks, (dict, str, os.PathLike)):
        if example_inputs is None:
            raise InputError("speedup with NNI-format masks needs example_inputs (NNI's dummy_input) to trace")
        result = speedup_from_nni(masked_model, masks, example_inputs, inplace=inplace)
        return masked_model if inplace else result.model
    if not isinstance(masked_model, torch.fx.GraphModule) or not isinstance(masks, Masks):
        raise InputError("speedup takes the (masked_model, masks) pair returned by a fxprune pruner's compress(), or "
                         "your model with NNI-format masks ({layer: {'weight': mask}})")
    if inplace:
        raise InputError("speedup(inplace=True) needs your own module and NNI-format masks; for a compile result use "
                         "result.apply_to(model)")
    pruned = speedup_pass(masked_model, masks)
    if example_inputs is not None and verify_outputs:
        flags = set_training(masked_model, False)
        set_training(pruned, False)
        try:
            verify(masked_model, pruned, masks, check_inputs(masked_model, example_inputs))
        finally:
            set_training(masked_model, flags)
            set_training(pruned, flags)
    detach_shared(pruned, masked_model)
    return pruned
