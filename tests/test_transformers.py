"""Hugging Face models from tiny configs with random weights (no downloads), through the torch.export front end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import fxprune
from fxprune.passes.trace import trace
from tests._checks import check_result

pytestmark = pytest.mark.slow  # Hugging Face models: seconds each; CI runs them

T = pytest.importorskip("transformers")

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def _ids(batch: int, seq: int) -> tuple[torch.Tensor]:
    return (torch.randint(0, 100, (batch, seq)),)


def _images(batch: int, size: int) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 3, size, size),)


# name -> (factory, example inputs, other inputs (batch and, for text, sequence length), has attention)
MODELS: dict[str, tuple[Callable[[], Any], tuple, tuple, bool]] = {
    "bert": (lambda: T.BertModel(T.BertConfig(vocab_size=100, attn_implementation="eager", **TINY)),
             _ids(2, 8), _ids(3, 13), True),
    "distilbert": (lambda: T.DistilBertModel(T.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, attn_implementation="sdpa")),
        _ids(2, 8), _ids(3, 13), True),
    "vit": (lambda: T.ViTModel(T.ViTConfig(image_size=16, patch_size=4, attn_implementation="eager", **TINY)),
            _images(2, 16), _images(3, 16), True),
    "gpt2": (lambda: T.GPT2Model(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                              use_cache=False, attn_implementation="eager")),
             _ids(2, 8), _ids(3, 13), True),
    "llama_gqa": (lambda: T.LlamaModel(T.LlamaConfig(vocab_size=100, num_key_value_heads=2, use_cache=False,
                                                     attn_implementation="sdpa", **TINY)),
                  _ids(2, 8), _ids(3, 13), True),
    "swin": (lambda: T.SwinModel(T.SwinConfig(image_size=16, patch_size=2, embed_dim=16, depths=[1, 1],
                                              num_heads=[2, 4], window_size=4, attn_implementation="eager")),
             _images(2, 16), _images(3, 16), True),
    "convnext": (lambda: T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)),
                 _images(2, 16), _images(3, 16), False),
    "mobilenet_v2": (lambda: T.MobileNetV2Model(T.MobileNetV2Config(depth_multiplier=0.25, image_size=16)),
                     _images(2, 16), _images(3, 16), False),
    "resnet": (lambda: T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
               _images(2, 16), _images(3, 16), False),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_model_prunes_heads_and_ffn(name: str) -> None:
    factory, inputs, other, attention = MODELS[name]
    torch.manual_seed(0)
    gm = trace(factory().eval(), inputs)  # traced once, compiled at two sparsities
    assert gm.meta["frontend"] == "export"
    for sparsity in (0.25, 0.5):
        result = fxprune.compile(gm, {"sparsity": sparsity}, inputs)
        assert result.report.frontend == "export"
        check_result(result, other)
        if attention and (sparsity == 0.5 or name != "llama_gqa"):  # 2 kv heads: 25% removes none
            assert any(g.id in result.masks.keep and not result.masks.keep[g.id].all()
                       for g in result.masks.graph.groups if "heads" in g.roles), "no attention head removed"


def test_llama_gqa_removes_kv_heads_with_their_query_heads() -> None:
    model = MODELS["llama_gqa"][0]().eval()
    result = fxprune.compile(model, {"sparsity": 0.5, "attention": "heads"}, _ids(2, 8))
    attn = result.model.get_submodule("layers.0.self_attn")
    q, k, v = (getattr(attn, f"{p}_proj").weight.shape[0] for p in "qkv")
    assert (q, k, v) == (16, 8, 8)  # 1 of 2 kv heads and its 2 query heads, head_dim 8
    check_result(result, _ids(3, 13))


@pytest.mark.parametrize("name", ["bert_cls", "gpt2_lm", "convnext_cls"])
def test_prune_hidden_on_task_models(name: str) -> None:
    if name == "convnext_cls":  # channels-last LayerNorm via permute, depthwise 7x7, layer scale nn.Parameter
        model = T.ConvNextForImageClassification(T.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1],
                                                                  num_stages=2, num_labels=3)).eval()
        result = fxprune.compile(model, {"sparsity": 0.5, "prune_hidden": True}, _images(2, 16))
        scale = result.model.get_parameter("convnext.encoder.stages.0.layers.0.layer_scale_parameter")
        assert scale.shape == (8,)  # pruned with the 16 stage-0 channels
        check_result(result, _images(3, 16))
        return
    if name == "bert_cls":
        model = T.BertForSequenceClassification(T.BertConfig(vocab_size=100, attn_implementation="eager", **TINY))
    else:  # tied lm_head: the tied table is sliced once, on its hidden dim
        model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                               use_cache=False))
    result = fxprune.compile(model.eval(), {"sparsity": 0.5, "prune_hidden": True}, _ids(2, 8))
    assert any("hidden size pruned" in n for n in result.report.notes)
    check_result(result, _ids(3, 13))


def test_prune_hidden_of_base_model_is_refused_with_the_node() -> None:
    model = T.BertModel(T.BertConfig(vocab_size=100, attn_implementation="eager", **TINY)).eval()
    with pytest.raises(fxprune.UnsupportedError, match=r"reaches the model output.*\n.*Prunable: FFN"):
        fxprune.compile(model, {"sparsity": 0.5, "prune_hidden": True}, _ids(2, 8))


def test_bert_pruned_through_torch_export_exports_to_onnx(tmp_path):
    """A graph from the torch.export front end (SymInt sizes) exports with the dynamo exporter, matches
    onnxruntime, keeps a dynamic batch axis, and holds fewer parameters than the dense export."""
    pytest.importorskip("onnxscript")
    from transformers import BertConfig, BertModel

    from fxprune.passes.trace import trace

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, vocab_size=100)).eval()
    ids = torch.randint(0, 100, (2, 16))
    result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, (ids,))
    assert result.report.frontend == "export"
    dense = fxprune.export_onnx(trace(model, (ids,), frontend="export"), (ids,), tmp_path / "dense.onnx")
    pruned = result.export_onnx(str(tmp_path / "pruned.onnx"))
    assert pruned.dynamic_batch and pruned.max_abs_err < 1e-4
    assert pruned.num_params < dense.num_params
