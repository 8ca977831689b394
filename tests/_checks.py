"""Shared assertions for the transformer tests: the invariant, shapes, and the report's numbers."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

import fxprune

__all__ = ["check_result", "count_macs"]


def _sdpa_flops(q: Any, k: Any, v: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
    return flop_counter.sdpa_flop_count(q, k, v)


def count_macs(model: torch.nn.Module, inputs: tuple[Any, ...]) -> int:
    """MACs of one forward by torch's own flop counter (conv, mm, bmm, addmm, sdpa), independent of fxprune."""
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        model(*inputs)
    return counter.get_total_flops() // 2


def check_result(result: fxprune.CompileResult, other_inputs: tuple[Any, ...]) -> None:
    """masked == pruned on the example and on other inputs (another batch size / sequence length);
    parameter and MAC counts of the real modules equal the report's."""
    report = result.report
    for inputs in (result.example_inputs, other_inputs):
        with torch.no_grad():
            ref, got = tree_leaves(result.masked_model(*inputs)), tree_leaves(result.model(*inputs))
        assert len(ref) == len(got)
        for r, g in zip(ref, got):
            if isinstance(r, torch.Tensor) and r.is_floating_point():
                torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in result.model.parameters()) == report.params_after
    assert sum(p.numel() for p in result.masked_model.parameters()) == report.params_before
    assert report.params_after < report.params_before
    assert count_macs(result.masked_model, result.example_inputs) == report.macs_before
    assert count_macs(result.model, result.example_inputs) == report.macs_after
    assert report.macs_after < report.macs_before
