"""The pipeline: `compile(model, config, example_inputs)` is a short list of named passes.

    trace -> analyze (DependencyGraph) -> select + score (Masks) -> mask -> speedup -> verify -> report
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from .config import Config, parse_config
from .errors import InputError, UnsupportedError, node_context
from .graph import BuildOptions, DependencyGraph, op_name, spelling
from .masks import Masks
from .passes.mask import insert_masks
from .passes.speedup import detach_shared, new_shapes, speedup_pass
from .passes.trace import check_inputs, set_training, trace
from .passes.verify import verify
from .pruners import compute_masks, select_layers
from .report import Report, build_report

__all__ = ["compile", "speedup", "analyze", "CompileResult"]


@dataclass
class CompileResult:
    """What `compile` returns.

    Attributes:
        model: the physically pruned GraphModule (same train/eval flags as the input model).
        masked_model: the traced model with mask nodes: trainable, same shapes as the input.
        masks: per group, which channels are kept.
        report: channels, params and MACs before/after, frozen groups, timings.
        example_inputs: the inputs the model was traced and verified with.
    """

    model: torch.fx.GraphModule
    masked_model: torch.fx.GraphModule
    masks: Masks
    report: Report
    example_inputs: tuple[Any, ...]

    def export_onnx(self, path: str, **kwargs: Any) -> Any:
        """Export the pruned model to ONNX and check it in onnxruntime (see `fxprune.export_onnx`)."""
        from .passes.export import export_onnx

        return export_onnx(self.model, self.example_inputs, path, **kwargs)

    def apply_to(self, model: torch.nn.Module) -> torch.nn.Module:
        """Shrink `model` (the one this was compiled from) in place to `self.model`, all or nothing, and check
        its own forward against `self.model` (see `fxprune.writeback.apply_to`). Returns `model`."""
        from .writeback import apply_to

        return apply_to(model, self)


def analyze(model: torch.nn.Module, example_inputs: Any, config: Any = None,
            timings: dict[str, float] | None = None) -> tuple[torch.fx.GraphModule, DependencyGraph]:
    """Trace a copy of `model` and build its channel-dependency graph (front end and options from `config`;
    the time of each step into `timings`)."""
    cfg = parse_config(config) if config is not None else Config()
    timings = {} if timings is None else timings
    with _timed(timings, "trace"):
        gm = trace(model, example_inputs, cfg.frontend)
    with _timed(timings, "analyze"):
        dg = DependencyGraph.build(gm, _options(cfg))
    if dg.unsupported:
        warnings.warn(dg.unsupported_message(), stacklevel=3)
    return gm, dg


def _options(cfg: Config) -> BuildOptions:
    return BuildOptions(split=cfg.attention or "heads", prune_hidden=cfg.prune_hidden)


_ATTENTION_OPS = ("softmax", "_softmax", "scaled_dot_product_attention", "MultiheadAttention")


def _check_requests(dg: DependencyGraph, cfg: Config) -> None:
    """What the config asks for explicitly (hidden size, heads) must be prunable: else say where and why."""
    if cfg.prune_hidden:
        hidden = [g for g in dg.groups if "hidden" in g.roles]
        if not any(g.prunable.any() for g in hidden):
            reasons = sorted({r for g in hidden for r in g.reasons})[:4] or ["no LayerNorm/RMSNorm/embedding found"]
            raise UnsupportedError(
                "prune_hidden=True, but the hidden size cannot be pruned here: " + "; ".join(reasons) +
                ".\nPrunable: FFN channels and attention heads (drop prune_hidden); the hidden size needs a "
                "model whose outputs do not carry it (e.g. a task head instead of the base model).")
    if cfg.attention is not None and not any(g.prunable.any() for g in dg.groups if cfg.attention in g.roles):
        attn = [n for n in dg.gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")
                and op_name(spelling(n, dg.gm)) in _ATTENTION_OPS]
        where = node_context(attn[0]) if attn else "any node (no softmax or attention op in the graph)"
        raise UnsupportedError(
            f"attention={cfg.attention!r}, but no attention {cfg.attention} are prunable: fxprune does not "
            f"understand the attention at {where}\n(its q/k/v views or its op have no rule that splits "
            "channels into heads). Prunable: the other layers' output channels (FFN); not prunable: the "
            "heads there. Drop 'attention' to prune the rest, or write the attention with view/reshape into "
            "heads or F.scaled_dot_product_attention.")


def _notes(dg: DependencyGraph, masks: Masks, cfg: Config) -> list[str]:
    """What the report must say about semantics and about the transformer dims it kept or pruned."""
    notes = []
    hidden = [g for g in dg.groups if "hidden" in g.roles]
    if any(g.id in masks.keep and not masks.keep[g.id].all() for g in hidden):
        notes.append("hidden size pruned: norms and means over it use the kept channels only; the pruned model "
                     "equals the masked model (verified), not the dense model with those channels zeroed")
    elif hidden and not cfg.prune_hidden:
        notes.append("hidden size kept: set prune_hidden=True to prune it")
    role = cfg.attention or "heads"
    heads = [g for g in dg.groups if role in g.roles and g.id in masks.keep]
    if heads:
        notes.append(f"attention {role}: {sum(int((~masks.keep[g.id]).sum()) for g in heads)} units removed in "
                     f"{len(heads)} group(s)")
    return notes


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def compile(model: torch.nn.Module, config: Any, example_inputs: Any) -> CompileResult:
    """Prune `model` as `config` says and return the smaller model, verified against the masked one.

    Args:
        model: any nn.Module that torch.fx can trace; it is not modified.
        config: a dict ({"pruner": "l1", "sparsity": 0.5}), or NNI's config_list (see fxprune.config).
        example_inputs: a tensor or tuple of tensors for one forward call.

    Returns:
        CompileResult with .model (pruned), .masked_model, .masks and .report.

    Example:
        >>> result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, torch.randn(1, 3, 32, 32))
        >>> print(result.report)
    """
    cfg = parse_config(config)
    inputs = check_inputs(model, example_inputs)
    timings: dict[str, float] = {}
    gm, dg = analyze(model, inputs, cfg, timings)
    _check_requests(dg, cfg)
    with _timed(timings, "masks"):
        masks = compute_masks(dg, cfg, select_layers(dg, cfg))
    with _timed(timings, "mask pass"):
        masked = insert_masks(gm, masks)
    with _timed(timings, "speedup"):
        pruned = speedup_pass(masked, masks)
    diff = 0.0
    if cfg.verify:
        with _timed(timings, "verify"):
            diff = verify(masked, pruned, masks, inputs, cfg.rtol, cfg.atol)
    with _timed(timings, "report"):
        report = build_report(gm, pruned, dg, masks, new_shapes(masks), pruner=cfg.pruner,
                              frontend=gm.meta["frontend"])
    report.timings, report.max_abs_diff = timings, diff
    report.notes = _notes(dg, masks, cfg)
    detach_shared(pruned, masked)
    flags = gm.meta.get("train_flags", {}) if gm.meta["frontend"] == "fx" else {}  # export graphs are eval-only
    set_training(pruned, flags)
    set_training(masked, flags)
    return CompileResult(pruned, masked, masks, report, inputs)


def speedup(masked_model: torch.fx.GraphModule, masks: Masks, example_inputs: Any = None,
            *, verify_outputs: bool = True) -> torch.fx.GraphModule:
    """Physically remove what `masks` masks from a model returned by a pruner's `compress()`.

    Args:
        masked_model: the masked GraphModule from `Pruner.compress()` (possibly fine-tuned since).
        masks: the masks returned with it.
        example_inputs: inputs to verify masked == pruned on (recommended).
    """
    if not isinstance(masked_model, torch.fx.GraphModule) or masks.graph is None:
        raise InputError("speedup takes the (masked_model, masks) pair returned by a fxprune pruner's compress()")
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
