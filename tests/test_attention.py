"""Attention written here: hard-coded head counts in forward (ViT, Swin windows), SDPA, GQA, MHA."""

from __future__ import annotations

import pytest
import torch

import fxprune
from tests._checks import check_result
from tests.fixtures import GQAttention, MHAEncoder, SDPAEncoder, swin_tiny, vit_tiny

IDS = (torch.randint(0, 50, (2, 8)),)
OTHER_IDS = (torch.randint(0, 50, (3, 12)),)
IMAGES = (torch.randn(2, 3, 16, 16),)
OTHER_IMAGES = (torch.randn(3, 3, 16, 16),)

CASES = {
    "vit_tiny": (vit_tiny, IMAGES, OTHER_IMAGES),
    "swin_tiny": (swin_tiny, IMAGES, (torch.randn(3, 3, 24, 24),)),
    "sdpa": (SDPAEncoder, IDS, OTHER_IDS),
    "gqa": (GQAttention, IDS, OTHER_IDS),
}


def _units_removed(result: fxprune.CompileResult, role: str) -> int:
    keep = result.masks.keep
    return sum(int((~keep[g.id]).sum()) for g in result.masks.graph.groups if role in g.roles and g.id in keep)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("attention", ["heads", "head_dim"])
@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_attention_prunes_and_verifies(name: str, attention: str, sparsity: float) -> None:
    factory, inputs, other = CASES[name]
    torch.manual_seed(0)
    result = fxprune.compile(factory().eval(), {"sparsity": sparsity, "attention": attention}, inputs)
    assert result.report.frontend == "fx"
    check_result(result, other)
    if not (name in ("swin_tiny", "gqa") and attention == "heads" and sparsity == 0.25):  # 2 (kv) heads: 25% -> 0
        assert _units_removed(result, attention) > 0


def test_hard_coded_head_count_is_rewritten() -> None:
    result = fxprune.compile(vit_tiny().eval(), {"sparsity": 0.5, "attention": "heads"}, IMAGES)
    sizes = [n.args[1:] for n in result.model.graph.nodes if n.target == "reshape" and len(n.args) == 6]
    assert sizes and all(s[2:] == (3, 2, 8) for s in sizes)  # (b, n, 3, heads=4 -> 2, head_dim 8)


def test_head_dim_keeps_sdpa_scale() -> None:
    result = fxprune.compile(SDPAEncoder().eval(), {"sparsity": 0.5, "attention": "head_dim"}, IDS)
    node = next(n for n in result.model.graph.nodes if "scaled_dot_product" in str(n.target))
    assert node.kwargs.get("scale", node.args[6] if len(node.args) > 6 else None) == pytest.approx(8**-0.5)


def test_gqa_couples_kv_head_with_its_query_heads() -> None:
    result = fxprune.compile(GQAttention().eval(), {"sparsity": 0.5, "attention": "heads"}, IDS)
    q, k = result.model.q.weight.shape[0], result.model.k.weight.shape[0]
    assert (q, k) == (16, 8)  # one of 2 kv heads removed, with its 2 query heads
    check_result(result, OTHER_IDS)


def test_export_front_end_gives_the_same_pruning() -> None:
    torch.manual_seed(0)
    model = SDPAEncoder().eval()
    fx = fxprune.compile(model, {"sparsity": 0.5}, IDS)
    ex = fxprune.compile(model, {"sparsity": 0.5, "frontend": "export"}, IDS)
    assert (fx.report.frontend, ex.report.frontend) == ("fx", "export")
    assert (fx.report.params_after, fx.report.macs_after) == (ex.report.params_after, ex.report.macs_after)
    check_result(ex, OTHER_IDS)


def test_multihead_attention_module_prunes_ffn_and_heads() -> None:
    x, other = (torch.randn(2, 8, 32),), (torch.randn(3, 5, 32),)
    for config in ({"sparsity": 0.5}, {"sparsity": 0.5, "attention": "heads"}):
        result = fxprune.compile(MHAEncoder().eval(), config, x)
        assert result.model.fc1.out_features == 32
        assert result.model.attn.in_proj_weight.shape == (48, 32)  # 2 of 4 heads, q/k/v rows of 8 each
        assert _units_removed(result, "heads") == 2
        check_result(result, other)


def test_prune_hidden_with_norms_verifies() -> None:
    for factory in (SDPAEncoder, GQAttention):
        result = fxprune.compile(factory().eval(), {"sparsity": 0.5, "prune_hidden": True}, IDS)
        assert result.model.embed.weight.shape[1] == 16
        assert any("hidden size pruned" in n for n in result.report.notes)
        check_result(result, OTHER_IDS)


def test_hidden_is_frozen_by_default_with_reason() -> None:
    result = fxprune.compile(SDPAEncoder().eval(), {"sparsity": 0.5}, IDS)
    assert result.model.embed.weight.shape[1] == 32
    assert "hidden size kept: set prune_hidden=True to prune it" in result.report.notes
    assert "prune_hidden=True" in str(result.report)


@pytest.mark.parametrize("bad", [{"frontend": "jit"}, {"attention": "head"}, {"prune_hidden": "yes"}])
def test_bad_transformer_config_values(bad: dict) -> None:
    with pytest.raises(fxprune.ConfigError, match=next(iter(bad))):
        fxprune.parse_config({"sparsity": 0.5, **bad})
