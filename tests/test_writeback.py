"""Write-back: `result.apply_to(model)` shrinks the user's own model in place, all or nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn as nn

import fxprune


class Net(nn.Module):
    """A user's class with a helper method; `hard=True` hard-codes the flattened size in forward."""

    def __init__(self, hard: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.conv3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(4, 16)
        self.fc = nn.Linear(16 * 2 * 2, 10)
        self.hard = hard

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.norm(self.conv3(torch.relu(self.conv2(x))))
        return nn.functional.adaptive_avg_pool2d(x, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.view(-1, 64) if self.hard else x.flatten(1)
        return self.fc(x)

    def width(self) -> int:
        return self.conv1.out_channels


def _state(model: nn.Module) -> dict[str, Any]:
    """Every tensor (by identity and value) and plain attribute of every submodule."""
    tensors = {k: (id(v), v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()}
    attrs = {n: {k: copy.deepcopy(v) for k, v in vars(m).items() if not k.startswith("_")}
             for n, m in model.named_modules()}
    return {"tensors": tensors, "attrs": attrs}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["attrs"] != b["attrs"] or a["tensors"].keys() != b["tensors"].keys():
        return False
    return all(a["tensors"][k][0] == b["tensors"][k][0] and torch.equal(a["tensors"][k][1], b["tensors"][k][1])
               for k in a["tensors"])


@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.filterwarnings("ignore:fxprune has no rule")
def test_custom_module_shrinks_in_place_and_keeps_its_methods(frontend: str) -> None:
    torch.manual_seed(0)
    model = Net().eval()
    x, other = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 8, 8)
    result = fxprune.compile(model, {"sparsity": 0.5, "frontend": frontend}, x)
    params = sum(p.numel() for p in model.parameters())
    assert result.apply_to(model) is model
    assert isinstance(model, Net)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in result.model.parameters()) < params
    assert model.width() == model.conv1.weight.shape[0] == 8  # the helper reads the updated attribute
    assert (model.conv2.in_channels, model.conv2.out_channels, model.conv2.groups) == (8, 8, 4)
    assert model.bn1.num_features == 8 and model.fc.in_features == model.fc.weight.shape[1]
    assert model.conv3.out_channels == model.norm.num_channels == model.norm.weight.shape[0]
    if frontend == "fx":  # aten.group_norm has no rule yet: under torch.export conv3's channels are kept
        assert (model.norm.num_channels, model.norm.num_groups, model.fc.in_features) == (8, 2, 32)
    with torch.no_grad():
        assert torch.allclose(model(other), result.model(other), atol=1e-5)
        assert model.features(other).shape[1] == model.norm.num_channels
    assert not any(p is q for p in model.parameters() for q in result.model.parameters())  # no shared storage


def test_hard_coded_view_is_refused_with_the_line_and_the_model_is_unchanged() -> None:
    torch.manual_seed(0)
    model = Net(hard=True).eval()
    result = fxprune.compile(model, {"sparsity": 0.5}, torch.randn(2, 3, 8, 8))
    before = _state(model)
    with pytest.raises(fxprune.UnsupportedError) as info:
        result.apply_to(model)
    text = str(info.value)
    assert "x.view(-1, 64)" in text and "literal size 64 (now 32)" in text and "'Net'" in text
    assert "test_writeback.py:" in text and "result.model" in text
    assert _same(before, _state(model))
    assert result.model(torch.randn(3, 3, 8, 8)).shape == (3, 10)  # the GraphModule still works


def test_result_of_another_model_is_refused_before_any_change() -> None:
    result = fxprune.compile(Net().eval(), {"sparsity": 0.5}, torch.randn(2, 3, 8, 8))
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    before = _state(other)
    with pytest.raises(fxprune.InputError, match="conv1.weight"):
        result.apply_to(other)
    assert _same(before, _state(other))


def test_failure_in_the_check_restores_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """A difference found by the final check (not an exception) also leaves the model as it was."""
    torch.manual_seed(0)
    model = Net().eval()
    result = fxprune.compile(model, {"sparsity": 0.5}, torch.randn(2, 3, 8, 8))
    before = _state(model)
    monkeypatch.setattr(Net, "forward", lambda self, x: self.fc(self.features(x).flatten(1)) + 1)
    with pytest.raises(fxprune.UnsupportedError, match="output differs"):
        result.apply_to(model)
    assert _same(before, _state(model))


# -- Hugging Face --------------------------------------------------------------------------------------

T = pytest.importorskip("transformers")

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def _gpt2() -> nn.Module:  # default-style config: cache on, no attn_implementation (sdpa)
    return T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32))


def _llama() -> nn.Module:
    return T.LlamaForCausalLM(T.LlamaConfig(vocab_size=100, num_key_value_heads=2, **TINY))


def _bert() -> nn.Module:
    return T.BertForSequenceClassification(T.BertConfig(vocab_size=100, **TINY))


def _greedy(model: nn.Module, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding without a cache: the reference tokens of the masked model."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(ids)["logits"]
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids


def _round_trip(model: nn.Module, ids: torch.Tensor, tmp_path: Any) -> float:
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        return (loaded(ids).logits - model(ids).logits).abs().max().item()


@pytest.mark.parametrize("factory, config, round_trips", [
    # heads (GQA: kv heads with their query heads) + FFN, uniform
    pytest.param(_llama, {"sparsity": 0.5}, True, marks=pytest.mark.slow),
    (_gpt2, {"sparsity": 0.5}, False),  # GPT-2 derives head_dim = n_embd / n_head: pruned heads are not describable
    (_gpt2, {"rules": [{"sparsity": 0.5, "op_partial_names": ["mlp"]}]}, True),
])
def test_hf_decoder_written_back_generates_like_the_masked_model(factory, config, round_trips, tmp_path) -> None:
    torch.manual_seed(0)
    model = factory().eval()
    assert model.config.use_cache  # the user does not touch it
    ids = torch.randint(0, 100, (2, 8))
    result = fxprune.compile(model, config, (ids,))
    reference = _greedy(result.masked_model, ids, 5)
    params = sum(p.numel() for p in model.parameters())
    result.apply_to(model)
    assert sum(p.numel() for p in model.parameters()) < params and model.config.use_cache
    assert torch.equal(model.generate(ids, max_new_tokens=5, do_sample=False), reference)
    notes = " ".join(result.report.notes)
    if round_trips:
        assert "save_pretrained" not in notes
        assert _round_trip(model, ids, tmp_path) == 0.0
    else:
        assert "cannot describe the pruned shapes" in notes and "fxprune.save" in notes


@pytest.mark.slow  # Hugging Face models: seconds each
def test_llama_config_follows_uniform_pruning() -> None:
    torch.manual_seed(0)
    model = _llama().eval()
    fxprune.compile(model, {"sparsity": 0.5}, (torch.randint(0, 100, (2, 8)),)).apply_to(model)
    c = model.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size) == (2, 1, 8, 32)
    attn = model.model.layers[0].self_attn
    assert attn.num_key_value_groups == 2 and model.model.layers[0].mlp.intermediate_size == 32


@pytest.mark.slow  # Hugging Face models: seconds each
def test_bert_classifier_written_back(tmp_path) -> None:
    torch.manual_seed(0)
    model = _bert().eval()
    ids = torch.randint(0, 100, (2, 8))
    result = fxprune.compile(model, {"sparsity": 0.5}, (ids,))  # heads + FFN + pooler
    result.apply_to(model)
    attn = model.bert.encoder.layer[0].attention.self
    assert (attn.num_attention_heads, attn.all_head_size, attn.attention_head_size) == (2, 16, 8)
    assert any("cannot describe" in n for n in result.report.notes)  # BERT: head size = hidden / heads
    with torch.no_grad():
        other = torch.randint(0, 100, (3, 11))
        assert torch.allclose(model(other).logits, result.model(other).logits, atol=1e-5)
    model = _bert().eval()  # FFN only: the config describes it, save_pretrained round-trips
    result = fxprune.compile(model, {"rules": [{"sparsity": 0.5, "op_partial_names": ["intermediate"]}]}, (ids,))
    result.apply_to(model)
    assert model.config.intermediate_size == 32 and not any("save_pretrained" in n for n in result.report.notes)
    assert _round_trip(model, ids, tmp_path) == 0.0


@pytest.mark.slow  # Hugging Face models: seconds each
def test_non_uniform_pruning_is_reported() -> None:
    torch.manual_seed(0)
    model = _llama().eval()
    rules = [{"sparsity": 0.5, "op_names": ["model.layers.0.mlp.gate_proj"]}]
    result = fxprune.compile(model, {"rules": rules}, (torch.randint(0, 100, (2, 8)),))
    result.apply_to(model)
    assert model.config.intermediate_size == 64  # left as it was
    assert any("not uniform" in n and "intermediate_size per layer [32, 64]" in n for n in result.report.notes)
