"""The traced copy of the user's model shares its CPU tensors copy-on-write (`trace._copy_model`): no memory is
copied until a write, and no write crosses from one side to the other, in either direction. Tensors that a plain
clone would detach from something (views of one storage, shared or file-mapped memory) are copied eagerly."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from torch import nn

import fxprune
from tests.fixtures import resnet18

trace_pass = importlib.import_module("fxprune.passes.trace")  # `fxprune.passes.trace` is also a function

pytestmark = pytest.mark.skipif(trace_pass._LAZY_CLONE is None,
                                reason="copy-on-write clones are used from torch 2.13 on")
is_cow = torch._C._is_cow_tensor


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _compile(model: nn.Module, x: torch.Tensor) -> fxprune.CompileResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, x)


def _train_step(model: nn.Module, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),  # foreach kernels
    lambda p: torch.optim.Adam(p, lr=0.1, foreach=False),
    lambda p: torch.optim.AdamW(p, lr=0.1, fused=True),
], ids=["sgd_foreach", "adam_for_loop", "adamw_fused"])
def test_training_the_masked_model_leaves_the_users_model_alone(make_optimizer) -> None:
    torch.manual_seed(0)
    model, x = resnet18().eval(), torch.randn(2, 3, 32, 32)
    before = _state(model)
    result = _compile(model, x)
    masked = result.masked_model
    assert all(is_cow(p) for p in masked.parameters()), "the masked model copied weights it never wrote"
    _train_step(masked, x, make_optimizer(masked.parameters()))
    assert not all(torch.equal(before[k], v) for k, v in masked.state_dict().items() if k in before)
    assert _same(model, before)


def test_writes_to_the_users_model_do_not_reach_the_result() -> None:
    torch.manual_seed(0)
    model, x = resnet18().eval(), torch.randn(2, 3, 32, 32)
    result = _compile(model, x)
    masked_before, pruned_before = _state(result.masked_model), _state(result.model)
    with torch.no_grad():
        out_masked, out_pruned = result.masked_model(x), result.model(x)
    model.conv1.weight.data.mul_(0)  # through .data: no version counter bump, still a write
    with torch.no_grad():
        model.fc.weight.add_(1)
        model.bn1.running_mean.fill_(3.0)
    model.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()})
    _train_step(model, x, torch.optim.SGD(model.parameters(), lr=0.1))
    assert _same(result.masked_model, masked_before) and _same(result.model, pruned_before)
    with torch.no_grad():
        assert torch.equal(result.masked_model(x), out_masked) and torch.equal(result.model(x), out_pruned)


class _ViewModel(nn.Module):
    """A buffer that views another's storage: a deep copy keeps them views of one storage, and so must the copy."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.register_buffer("table", torch.randn(4, 8))
        self.register_buffer("first_row", self.table[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.first_row[:, None, None]


def test_views_of_one_storage_stay_one_storage_in_the_copy() -> None:
    model = _ViewModel()
    copy_ = trace_pass._copy_model(model)
    assert not is_cow(copy_.table) and not is_cow(copy_.first_row) and is_cow(copy_.conv.weight)
    copy_.table[0].fill_(7.0)
    assert torch.equal(copy_.first_row, torch.full((8,), 7.0)) and not torch.equal(model.first_row, copy_.first_row)


def test_shared_memory_is_copied_and_stays_shared() -> None:
    torch.manual_seed(0)
    model, x = resnet18().eval(), torch.randn(2, 3, 32, 32)
    model.share_memory()  # a Hogwild-style model: a copy-on-write clone would move the writer out of it
    result = _compile(model, x)
    assert all(p.is_shared() and not is_cow(p) for p in model.parameters())
    assert not any(is_cow(p) for p in result.masked_model.parameters())


def test_a_tensor_with_attributes_keeps_them_in_the_copy() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    model.register_buffer("scale", torch.ones(4))
    model.scale.tag = "mine"  # a deep copy copies a plain tensor's __dict__: the copy must too
    copy_ = trace_pass._copy_model(model)
    assert copy_.scale.tag == "mine" and copy_.scale is not model.scale
    assert is_cow(copy_[0].weight)


def test_memory_torch_does_not_own_is_copied_and_keeps_its_aliases() -> None:
    """NumPy's memory (like safetensors' file mapping, under Hugging Face's `from_pretrained`) cannot be shared
    copy-on-write: that tensor is copied, the others are shared, and the user's array still aliases the weight."""
    torch.manual_seed(0)
    model, x = resnet18().eval(), torch.randn(2, 3, 32, 32)
    array = model.conv1.weight.detach().numpy().copy()
    model.conv1.weight = nn.Parameter(torch.from_numpy(array))
    result = _compile(model, x)
    assert not is_cow(result.masked_model.conv1.weight) and is_cow(result.masked_model.fc.weight)
    array[:] = 0.0
    assert not model.conv1.weight.any() and result.masked_model.conv1.weight.any()
