"""Every bad input tried, and what it gets: a clear FxPruneError or a correct result, never a crash from
deep inside torch and never a modified user model.

`CASES` is the table (and the documentation) of what has been tried: (description, builder, expected
error class or None for "a correct, verified result", substring of the message). A builder returns
`(model, config, example_inputs)`. For every row the test also checks that the user's model is
untouched: state dict, parameter objects, training flags, requires_grad.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune import ConfigError, FxPruneError, InputError, TraceError
from tests.fixtures import BAD_MODELS, my_custom_gate

torch.set_num_threads(1)
# fx.wrap patches the globals of the module that calls it: make the imported gate opaque here too.
torch.fx.wrap("my_custom_gate")


class Net(nn.Module):
    """Conv -> BN -> ReLU -> Conv: the well-behaved model the config and input rows use."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(F.relu(self.bn(self.c1(x))))


class TwoInputs(Net):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + y


class BufferCounter(Net):
    """forward increments a buffer in place."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return super().forward(x)


class BufferAugmented(BufferCounter):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return Net.forward(self, x)


class PythonCounter(Net):
    """forward increments a Python int (fx would bake the value at trace time into the graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x) * self.calls


class AppendsToList(Net):
    """forward appends to a list attribute (the snapshot must hold a copy of the list, not the list itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(self.sizes))
        return super().forward(x)


class CachesActivation(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = self.c1(x)
        return self.c2(F.relu(self.last))


class MutatesWeight(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.c2.weight.data.mul_(0.5)
        return super().forward(x)


class GateAt(nn.Module):
    """An op with no rule (my_custom_gate) at the input, in the middle or at the output."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.where == "input":
            x = my_custom_gate(x)
        x = F.relu(self.c1(x))
        if self.where == "middle":
            x = my_custom_gate(x)
        x = self.c3(F.relu(self.c2(x)))
        return my_custom_gate(x) if self.where == "output" else x


class EmbeddingConv(nn.Module):
    """nn.Embedding has no rule: its output dims are a barrier, the convs after it still prune."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.c1, self.c2 = nn.Conv1d(8, 16, 3, padding=1), nn.Conv1d(16, 4, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.c2(F.relu(self.c1(self.emb(tokens).transpose(1, 2))))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c0, self.h = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(F.relu(self.b(F.relu(self.a(self.c0(x))))))


class DictOutput(Net):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": super().forward(x), "features": self.c1(x)}


class NoLayers(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


def _frozen_backbone() -> nn.Module:
    model = Net()
    model.c1.requires_grad_(False)
    return model


def _train_mode() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5), nn.ReLU(), nn.Conv2d(8, 4, 1))
    return model.train()


X = (2, 3, 8, 8)
OK = {"pruner": "l1", "sparsity": 0.5}
Build = Callable[[], tuple[Any, Any, Any]]


def cfg(config: Any) -> Build:
    return lambda: (Net(), config, torch.randn(*X))


def inp(make: Callable[[], Any], model: Callable[[], nn.Module] = Net) -> Build:
    return lambda: (model(), OK, make())


def mdl(model: Callable[[], Any], shape: tuple[int, ...] = X, config: Any = OK) -> Build:
    return lambda: (model(), config, torch.randn(*shape))


NAN = float("nan")

# (description, builder, expected error class or None = correct result, message substring)
CASES: list[tuple[str, Build, type[Exception] | None, str]] = [
    # -- malformed configs --------------------------------------------------------------------
    ("config is None", cfg(None), ConfigError, "config must be a dict"),
    ("config is a string", cfg("l1"), ConfigError, "config must be a dict"),
    ("config is a number", cfg(0.5), ConfigError, "config must be a dict"),
    ("misspelt top-level key", cfg({"sparsty": 0.5}), ConfigError, "did you mean 'sparsity'"),
    ("unknown pruner", cfg({"pruner": "l3", "sparsity": 0.5}), ConfigError, "is not one of"),
    ("pruner of wrong type", cfg({"pruner": 1, "sparsity": 0.5}), ConfigError, "is not one of"),
    ("negative sparsity", cfg({"sparsity": -0.1}), ConfigError, "outside [0, 1)"),
    ("sparsity 1", cfg({"sparsity": 1.0}), ConfigError, "outside [0, 1)"),
    ("sparsity > 1", cfg({"sparsity": 50}), ConfigError, "outside [0, 1)"),
    ("sparsity NaN", cfg({"sparsity": NAN}), ConfigError, "outside [0, 1)"),
    ("sparsity inf", cfg({"sparsity": math.inf}), ConfigError, "outside [0, 1)"),
    ("sparsity as string", cfg({"sparsity": "0.5"}), ConfigError, "must be a number"),
    ("sparsity as bool", cfg({"sparsity": True}), ConfigError, "must be a number"),
    ("sparsity None", cfg({"sparsity": None}), ConfigError, "must be a number"),
    ("sparsity as list", cfg({"sparsity": [0.5]}), ConfigError, "must be a number"),
    ("no sparsity and no rules", cfg({"pruner": "l1"}), ConfigError, "neither 'sparsity' nor 'rules'"),
    ("empty rules", cfg({"rules": []}), ConfigError, "non-empty list"),
    ("empty bare config_list", cfg([]), ConfigError, "non-empty list"),
    ("rules is a dict", cfg({"rules": {"sparsity": 0.5}}), ConfigError, "non-empty list"),
    ("rule is not a dict", cfg({"rules": [0.5]}), ConfigError, "rules[0] must be a dict"),
    ("misspelt rule key", cfg([{"sparsity": 0.5, "op_type": ["Conv2d"]}]), ConfigError,
     "did you mean 'op_types'"),
    ("rule without sparsity", cfg([{"op_types": ["Conv2d"]}]), ConfigError, "has no sparsity"),
    ("rule selecting nothing", cfg([{"sparsity": 0.5}]), ConfigError, "selects no layer"),
    ("op_types of classes", cfg([{"sparsity": 0.5, "op_types": [nn.Conv2d]}]), ConfigError, "list of strings"),
    ("op_types empty", cfg([{"sparsity": 0.5, "op_types": []}]), ConfigError, "selects no layer"),
    ("unknown op type", cfg([{"sparsity": 0.5, "op_types": ["Conv5d"]}]), ConfigError, "matches no layer"),
    ("op type with no layer here", cfg([{"sparsity": 0.5, "op_types": ["Linear"]}]), ConfigError,
     "matches no layer"),
    ("unknown op name", cfg([{"sparsity": 0.5, "op_names": ["conv9"]}]), ConfigError, "matches no layer"),
    ("rule sparsity out of range", cfg([{"sparsity": 1.2, "op_types": ["default"]}]), ConfigError,
     "rules[0].sparsity = 1.2"),
    ("conflicting: sparsity and sparse_ratio", cfg([{"sparsity": 0.5, "sparse_ratio": 0.3,
                                                      "op_types": ["default"]}]), ConfigError, "keep one"),
    ("conflicting: sparsity and total_sparsity", cfg([{"sparsity": 0.5, "total_sparsity": 0.3,
                                                        "op_types": ["default"]}]), ConfigError, "keep one"),
    ("conflicting: exclude with sparsity", cfg([{"exclude": True, "sparsity": 0.5, "op_types": ["default"]}]),
     ConfigError, "is an exclude and also gives a sparsity"),
    ("only excludes", cfg([{"exclude": True, "op_types": ["default"]}]), ConfigError, "every entry"),
    ("exclude not a bool", cfg([{"exclude": "yes", "op_types": ["default"]}]), ConfigError, "True or False"),
    ("conflicting: sparsity and rules", cfg({"sparsity": 0.5, "rules": [{"sparsity": 0.5,
                                                                          "op_types": ["default"]}]}),
     ConfigError, "put the sparsity inside the rules"),
    ("conflicting: rules and config_list", cfg({"rules": [{"sparsity": 0.5, "op_types": ["default"]}],
                                                "config_list": []}), ConfigError, "keep one"),
    ("conflicting rules on one layer: the later wins", cfg([{"sparsity": 0.2, "op_types": ["default"]},
                                                            {"sparsity": 0.7, "op_names": ["c1"]}]), None, ""),
    ("round_to 0", cfg({"sparsity": 0.5, "round_to": 0}), ConfigError, "positive int"),
    ("round_to float", cfg({"sparsity": 0.5, "round_to": 2.5}), ConfigError, "positive int"),
    ("round_to string", cfg({"sparsity": 0.5, "round_to": "8"}), ConfigError, "positive int"),
    ("round_to larger than any layer", cfg({"sparsity": 0.5, "round_to": 1024}), None, ""),
    ("unknown mode", cfg({"sparsity": 0.5, "mode": "fast"}), ConfigError, "'dependency_aware' or 'normal'"),
    ("verify as string", cfg({"sparsity": 0.5, "verify": "false"}), ConfigError, "True or False"),
    ("global as int", cfg({"sparsity": 0.5, "global": 1}), ConfigError, "True or False"),
    ("negative rtol", cfg({"sparsity": 0.5, "rtol": -1}), ConfigError, "finite non-negative"),
    ("NaN atol", cfg({"sparsity": 0.5, "atol": NAN}), ConfigError, "finite non-negative"),
    ("max_sparsity_per_layer > 1", cfg([{"total_sparsity": 0.5, "op_types": ["default"],
                                         "max_sparsity_per_layer": 2}]), ConfigError, "outside [0, 1)"),
    ("max_sparsity_per_layer non-str keys", cfg([{"total_sparsity": 0.5, "op_types": ["default"],
                                                  "max_sparsity_per_layer": {1: 0.5}}]), ConfigError,
     "keys must be layer names"),
    # -- example inputs ---------------------------------------------------------------------------
    ("inputs None", inp(lambda: None), InputError, "must be a tensor or a non-empty tuple"),
    ("inputs empty tuple", inp(lambda: ()), InputError, "must be a tensor or a non-empty tuple"),
    ("inputs a string", inp(lambda: "x"), InputError, "must be a tensor or a non-empty tuple"),
    ("inputs float64 for a float32 model", inp(lambda: torch.randn(*X, dtype=torch.float64)), InputError,
     "layer 'c1'): RuntimeError: Input type (double)"),
    ("inputs int64 for a float model", inp(lambda: torch.ones(*X, dtype=torch.long)), InputError, "layer 'c1'"),
    ("inputs bool", inp(lambda: torch.ones(*X, dtype=torch.bool)), InputError, "layer 'c1'"),
    ("inputs with the wrong channel count", inp(lambda: torch.randn(2, 5, 8, 8)), InputError,
     "expected input[2, 5, 8, 8] to have 3 channels"),
    ("inputs of the wrong rank", inp(lambda: torch.randn(3, 8, 8)), InputError, "layer 'bn'"),
    ("inputs too small for the kernel", inp(lambda: torch.randn(2, 3, 1, 1), lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1))), InputError, "Kernel size can't be greater"),
    ("inputs on the meta device", inp(lambda: torch.randn(*X, device="meta")), InputError, "is on meta"),
    ("inputs sparse", inp(lambda: torch.randn(*X).to_sparse()), InputError, "sparse_coo tensor"),
    ("inputs with NaN", inp(lambda: torch.full(X, NAN)), InputError, "contains NaN or inf"),
    ("inputs with inf", inp(lambda: torch.full(X, math.inf)), InputError, "contains NaN or inf"),
    ("too many inputs", inp(lambda: (torch.randn(*X), torch.randn(*X))), InputError, "takes 1 input(s) but 2"),
    ("too few inputs", inp(lambda: torch.randn(*X), TwoInputs), InputError,
     "Expected positional argument for parameter y"),
    ("a string among the inputs", inp(lambda: ("x",)), InputError, "layer 'c1'"),
    ("empty batch", inp(lambda: torch.randn(0, 3, 8, 8)), None, ""),
    ("batch of one", inp(lambda: torch.randn(1, 3, 8, 8)), None, ""),
    ("inputs requiring grad", inp(lambda: torch.randn(*X, requires_grad=True)), None, ""),
    # -- models ----------------------------------------------------------------------------------
    ("model is a function", lambda: (lambda x: x, OK, torch.randn(*X)), TraceError, "expected an nn.Module"),
    ("model is None", lambda: (None, OK, torch.randn(*X)), TraceError, "expected an nn.Module"),
    ("model on the meta device", lambda: (Net().to("meta"), OK, torch.randn(*X, device="meta")), InputError,
     "on the meta device (not materialised)"),
    ("data-dependent control flow", mdl(BAD_MODELS["data_dependent_control_flow"][0]), TraceError,
     "torch.fx.symbolic_trace cannot trace DataDependentControlFlow"),
    ("forward increments a buffer in place", mdl(BufferCounter), TraceError,
     "forward modifies the tensor calls in place"),
    ("forward does buffer += 1", mdl(BufferAugmented), TraceError, "forward modifies the tensor calls in place"),
    ("forward increments a Python attribute", mdl(PythonCounter), TraceError,
     "changes the attribute self.calls (0 -> 1)"),
    ("forward appends to a list attribute", mdl(AppendsToList), TraceError,
     "changes the attribute self.sizes ([] -> [0])"),
    ("forward caches an activation on self", mdl(CachesActivation), TraceError,
     "assigns the new attribute self.last"),
    ("forward rescales a weight in place", mdl(MutatesWeight), TraceError, "modifies the tensor c2.weight"),
    ("no prunable layer", mdl(NoLayers), ConfigError, "matches no layer"),
    ("unsupported op at the input", mdl(lambda: GateAt("input")), None, ""),
    ("unsupported op in the middle", mdl(lambda: GateAt("middle")), None, ""),
    ("unsupported op at the output", mdl(lambda: GateAt("output")), None, ""),
    ("unsupported module (Embedding) at the input", lambda: (EmbeddingConv(), OK, torch.randint(0, 20, (2, 12))),
     None, ""),
    ("model in train mode (BN, Dropout)", mdl(_train_mode), None, ""),
    ("tied parameters", mdl(Tied), None, ""),
    ("tied parameters, Level", mdl(Tied, config={"pruner": "level", "sparsity": 0.5}), None, ""),
    ("frozen (requires_grad=False) parameters", mdl(_frozen_backbone), None, ""),
    ("dict output", mdl(DictOutput), None, ""),
    ("float64 model", lambda: (Net().double(), OK, torch.randn(*X, dtype=torch.float64)), None, ""),
    ("bfloat16 model", lambda: (Net().bfloat16(), {**OK, "rtol": 1e-2, "atol": 1e-2},
                                torch.randn(*X, dtype=torch.bfloat16)), None, ""),
]


def _snapshot(model: Any) -> Any:
    if not isinstance(model, nn.Module):
        return None
    return ({k: v.clone() if not v.is_meta else v for k, v in model.state_dict().items()},
            {n: id(p) for n, p in model.named_parameters(remove_duplicate=False)},
            {n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            {n: {k: v for k, v in vars(m).items() if not k.startswith("_")} for n, m in model.named_modules()})


def _assert_same(model: Any, before: Any) -> None:
    if before is None:
        return
    after = _snapshot(model)
    state, ids, training, grads, attrs = before
    assert after[0].keys() == state.keys()
    assert all(v.is_meta or torch.equal(v, after[0][k]) for k, v in state.items()), "user's weights changed"
    assert after[1:4] == (ids, training, grads)
    assert after[4].keys() == attrs.keys() and all(after[4][n].keys() == a.keys() for n, a in attrs.items())


@pytest.mark.parametrize(("description", "build", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(description: str, build: Build, error: type[Exception] | None, message: str) -> None:
    model, config, inputs = build()
    before = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if error is not None:
            with pytest.raises(error) as info:
                fxprune.compile(model, config, inputs)
            assert message in str(info.value), f"{description}: {info.value}"
            assert isinstance(info.value, FxPruneError)
        else:
            result = fxprune.compile(model, config, inputs)
            xs = result.example_inputs
            pruned, masked = result.model.eval(), result.masked_model.eval()
            with torch.no_grad():
                for a, b in zip(torch.utils._pytree.tree_leaves(pruned(*xs)),
                                torch.utils._pytree.tree_leaves(masked(*xs)), strict=True):
                    torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
            assert result.report.params_after == sum(p.numel() for p in pruned.parameters())
    _assert_same(model, before)


def test_unsupported_op_warns_once_naming_it() -> None:
    with pytest.warns(UserWarning, match="my_custom_gate: 1 node"):
        fxprune.compile(GateAt("middle"), OK, torch.randn(*X))


def test_train_mode_flags_and_requires_grad_are_kept() -> None:
    model = _train_mode()
    model[0].weight.requires_grad_(False)
    result = fxprune.compile(model, OK, torch.randn(*X))
    assert [m.training for m in result.model.modules()] == [True] * len(list(result.model.modules()))
    assert not result.model.get_submodule("0").weight.requires_grad


def test_speedup_rejects_a_plain_module() -> None:
    with pytest.raises(InputError, match="returned by a fxprune pruner's compress"):
        fxprune.speedup(Net(), None)  # type: ignore[arg-type]
