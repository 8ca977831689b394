"""Property-based tests: random architectures and configs, the core invariant and the report's numbers.

Each example draws a small network from a DSL of blocks (conv with random groups/kernel/stride, BN,
residual add, concat, split, chunk, channel shuffle written with sizes read from the tensor or with
literal ints, an opaque op with no rule, a self-attention block with q/k/v Linear + view into heads +
softmax + out projection, and a flatten->Linear / mean->Linear / 1x1-conv head) plus a random config
(pruner l1/l2/fpgm/level, sparsity in [0, 0.9], round_to, global ranking, dependency mode), compiles it,
and checks:

- compile's own verification passes, and independently `model(x) == masked_model(x)` in eval mode, on
  the example inputs and on fresh inputs of the same shape;
- the reported parameter counts equal the parameters the models hold, and the reported MACs equal
  torch's FlopCounterMode count (2 FLOPs per MAC) before and after;
- the input model is untouched: state dict, outputs, training flags, requires_grad.

CI runs a fixed, derandomized budget (`FXPRUNE_FUZZ_EXAMPLES`, default 300 examples, 15-40 s). A long campaign, with
fresh random seeds each run, is one command:

    FXPRUNE_FUZZ_EXAMPLES=2000 FXPRUNE_FUZZ_RANDOM=1 PYTHONPATH=. python -m pytest tests/test_properties.py -x -q

A failing example is printed by hypothesis as the `Arch`/config it drew; paste it into
`tests/test_regressions.py` as a plain test.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

import fxprune
from tests.fixtures import channel_shuffle, my_custom_gate

# Tiny ops: one thread is ~100x faster than several on a loaded CI machine (thread spin-up dominates).
torch.set_num_threads(1)
# fx.wrap patches the globals of the module that calls it: make the imported gate opaque here too.
torch.fx.wrap("my_custom_gate")

EXAMPLES = int(os.environ.get("FXPRUNE_FUZZ_EXAMPLES", "300"))
RANDOM = os.environ.get("FXPRUNE_FUZZ_RANDOM", "") not in ("", "0")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, print_blob=True,
                database=None if not RANDOM else settings.default.database,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------------------
# The architecture DSL: a list of blocks, each a (kind, params) tuple; `Net` interprets it in forward
# (fx unrolls the Python loop, so each block becomes its ops in the graph).
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """A drawn architecture: input shape and blocks (each ('kind', {params}))."""

    shape: tuple[int, int, int, int]
    blocks: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


class Net(nn.Module):
    """Builds the modules of every block of an `Arch`; forward runs the blocks in order."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.kinds = [kind for kind, _ in arch.blocks]
        self.params = [dict(p) for _, p in arch.blocks]
        self.blocks = nn.ModuleList()
        c, h = arch.shape[1], arch.shape[2]
        for kind, p in zip(self.kinds, self.params):
            m = nn.ModuleDict()
            if kind == "conv":
                m["conv"] = _conv(c, p["out"], p["k"], p["stride"], p["groups"], bias=not p["bn"])
                if p["bn"]:
                    m["bn"] = nn.BatchNorm2d(p["out"])
                c, h = p["out"], (h - 1) // p["stride"] + 1
            elif kind == "residual":
                m["conv"] = _conv(c, c, p["k"], 1, p["groups"], bias=False)
                m["bn"] = nn.BatchNorm2d(c)
            elif kind == "concat":
                m["a"] = _conv(c, p["ca"], 1)
                m["b"] = _conv(c, p["cb"], 3)
                c = p["ca"] + p["cb"]
            elif kind == "split":
                m["a"] = _conv(p["s"], p["ca"], 3)
                c = p["ca"] + c - p["s"]
            elif kind == "chunk":
                n = p["n"]
                step = -(-c // n)
                sizes = [min(step, c - s) for s in range(0, c, step)]
                m["convs"] = nn.ModuleList([_conv(s, p["co"], 1) for s in sizes])
                c = p["co"] * len(sizes)
            elif kind == "attn":
                hd = p["heads"] * p["dim"]
                m["q"], m["k"], m["v"] = nn.Linear(c, hd), nn.Linear(c, hd), nn.Linear(c, hd)
                m["o"] = nn.Linear(hd, c)
            elif kind == "head":
                if p["type"] == "flatten":
                    m["fc"] = nn.Linear(c * h * h, p["out"])
                elif p["type"] == "mean":
                    m["fc"] = nn.Linear(c, p["out"])
                else:
                    m["conv"] = _conv(c, p["out"], 1)
            self.blocks.append(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, p, m in zip(self.kinds, self.params, self.blocks):
            x = getattr(self, f"_{kind}")(x, p, m)
        return x

    def _conv(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        x = m["conv"](x)
        if p["bn"]:
            x = m["bn"](x)
        return {"relu": F.relu, "gelu": F.gelu, "none": lambda t: t}[p["act"]](x)

    def _residual(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        return F.relu(x + m["bn"](m["conv"](x)))

    def _concat(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        return torch.cat([m["a"](x), F.relu(m["b"](x))], 1)

    def _split(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        a, b = torch.split(x, [p["s"], x.shape[1] - p["s"]], 1) if p["fn"] else x.split([p["s"], p["rest"]], 1)
        return torch.cat([m["a"](a), torch.sigmoid(b)], 1)

    def _chunk(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        parts = x.chunk(p["n"], 1) if p["method"] else torch.chunk(x, p["n"], 1)
        return torch.cat([conv(parts[i]) for i, conv in enumerate(m["convs"])], 1)

    def _shuffle(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        if p["literal"]:  # shape constants in the graph: the speedup pass must rewrite them
            b, c, h, w = p["b"], p["c"], p["h"], p["h"]
            g = p["g"]
            return x.view(b, g, c // g, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return channel_shuffle(x, p["g"])

    def _gate(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        return my_custom_gate(x)  # no rule: a barrier

    def _attn(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, dim = p["heads"], p["dim"]
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        n = t.shape[1]
        q = m["q"](t).view(b, n, heads, dim).transpose(1, 2)
        k = m["k"](t).view(b, n, heads, dim).transpose(1, 2)
        v = m["v"](t).reshape(b, n, heads, dim).permute(0, 2, 1, 3)
        att = torch.softmax(q @ k.transpose(-2, -1) * dim ** -0.5, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, n, heads * dim)
        t = t + m["o"](o)
        return t.transpose(1, 2).reshape(b, c, h, w)

    def _head(self, x: torch.Tensor, p: dict, m: nn.ModuleDict) -> torch.Tensor:
        if p["type"] == "flatten":
            return m["fc"](torch.flatten(x, 1))
        if p["type"] == "mean":
            return m["fc"](x.mean((2, 3)))
        return m["conv"](x)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def archs(draw: st.DrawFn) -> Arch:
    """A random valid architecture: a first conv, 1-4 more blocks, and a head."""
    batch, c, h = draw(st.sampled_from([1, 2])), draw(st.sampled_from([3, 4])), draw(st.sampled_from([4, 6, 8]))
    shape = (batch, c, h, h)
    blocks: list[tuple[str, dict[str, Any]]] = []

    def conv(c: int, h: int) -> tuple[int, int]:
        out = draw(st.integers(2, 24))
        groups = draw(st.sampled_from(_divisors(__import__("math").gcd(c, out))))
        stride = draw(st.sampled_from([1, 2])) if h >= 4 else 1
        blocks.append(("conv", {"out": out, "k": draw(st.sampled_from([1, 3, 5])), "stride": stride,
                                "groups": groups, "bn": draw(st.booleans()),
                                "act": draw(st.sampled_from(["relu", "gelu", "none"]))}))
        return out, (h - 1) // stride + 1

    c, h = conv(c, h)
    kinds = ["conv", "residual", "concat", "split", "chunk", "shuffle", "attn", "gate"]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(kinds))
        if kind == "conv":
            c, h = conv(c, h)
        elif kind == "residual":
            blocks.append(("residual", {"k": draw(st.sampled_from([1, 3])),
                                        "groups": draw(st.sampled_from(_divisors(c)))}))
        elif kind == "concat":
            ca, cb = draw(st.integers(1, 12)), draw(st.integers(1, 12))
            blocks.append(("concat", {"ca": ca, "cb": cb}))
            c = ca + cb
        elif kind == "split" and c >= 2:
            s, ca = draw(st.integers(1, c - 1)), draw(st.integers(1, 12))
            blocks.append(("split", {"s": s, "rest": c - s, "ca": ca, "fn": draw(st.booleans())}))
            c = ca + c - s
        elif kind == "chunk" and c >= 2:
            n, co = draw(st.integers(2, min(4, c))), draw(st.integers(1, 8))
            blocks.append(("chunk", {"n": n, "co": co, "method": draw(st.booleans())}))
            step = -(-c // n)
            c = co * len(range(0, c, step))
        elif kind == "shuffle" and len(_divisors(c)) > 2:
            g = draw(st.sampled_from(_divisors(c)[1:-1]))
            blocks.append(("shuffle", {"g": g, "literal": draw(st.booleans()), "b": batch, "c": c, "h": h}))
        elif kind == "attn":
            blocks.append(("attn", {"heads": draw(st.integers(1, 3)), "dim": draw(st.integers(2, 6))}))
        elif kind == "gate":
            blocks.append(("gate", {}))
    head = draw(st.sampled_from(["flatten", "mean", "conv"]))
    blocks.append(("head", {"type": head, "out": draw(st.integers(2, 10))}))
    return Arch(shape, tuple((k, tuple(sorted(p.items()))) for k, p in blocks))


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid config."""
    cfg: dict[str, Any] = {"pruner": draw(st.sampled_from(["l1", "l2", "fpgm", "level"]))}
    sparsity = draw(st.floats(0.0, 0.9, allow_nan=False))
    op_types = draw(st.sampled_from([["default"], ["Conv2d"]]))
    if draw(st.booleans()):
        cfg["sparsity"] = sparsity
    else:
        key = draw(st.sampled_from(["sparsity", "sparse_ratio", "total_sparsity"]))
        cfg["rules"] = [{key: sparsity, "op_types": op_types}]
    cfg["round_to"] = draw(st.sampled_from([1, 1, 2, 3, 4, 8]))
    cfg["global"] = draw(st.booleans())
    cfg["mode"] = draw(st.sampled_from(["dependency_aware", "normal"]))
    return cfg


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "ids": {n: id(p) for n, p in model.named_parameters()},
    }


def _assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    after = _snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"compile changed the user's {k}"
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["ids"] == before["ids"]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, a.abs().max().item()))


def check_compile(arch: Arch, config: dict[str, Any], seed: int, train: bool = False) -> fxprune.CompileResult:
    """Compile a drawn model and assert every property in the module docstring."""
    torch.manual_seed(seed)
    model = Net(arch).train(train)
    x, fresh = torch.randn(*arch.shape), torch.randn(*arch.shape)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    model.train(train)
    before = _snapshot(model)
    flops_before = _flops(copy.deepcopy(model).eval(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fxprune.compile(model, config, x)
    _assert_untouched(model, before)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref), "the user's model computes something else after compile"
    flags = before["training"]
    for out in (result.model, result.masked_model):
        got = {n: m.training for n, m in out.named_modules()}
        assert all(got[n] == flags[n] for n in got if n in flags), "train/eval flags differ from the input's"
    trained = result.model.training, result.masked_model.training
    pruned, masked = result.model.eval(), result.masked_model.eval()
    with torch.no_grad():
        for inp in (x, fresh):
            _close(pruned(inp), masked(inp))
    report = result.report
    assert report.params_before == sum(p.numel() for p in model.parameters())
    assert report.params_after == sum(p.numel() for p in pruned.parameters())
    assert report.params_after <= report.params_before
    assert 2 * report.macs_before == flops_before
    assert 2 * report.macs_after == _flops(pruned, x)
    if config["pruner"] != "level":
        assert report.nonzero_params_after <= report.params_after
    result.model.train(trained[0])
    result.masked_model.train(trained[1])
    return result


@pytest.mark.slow
@FUZZ
@given(arch=archs(), config=configs(), seed=st.integers(0, 2**16))
def test_random_architectures(arch: Arch, config: dict[str, Any], seed: int) -> None:
    check_compile(arch, config, seed)


@settings(FUZZ, max_examples=max(5, EXAMPLES // 4))
@given(arch=archs(), seed=st.integers(0, 2**16))
def test_random_architectures_in_train_mode(arch: Arch, seed: int) -> None:
    """A model handed over in train mode: flags untouched, results in train mode, eval outputs equal."""
    result = check_compile(arch, {"pruner": "l1", "sparsity": 0.5}, seed, train=True)
    assert result.model.training and result.masked_model.training


def test_dsl_covers_every_block() -> None:
    """The fixed budget is meaningful only if the DSL builds every block kind; build one of each."""
    arch = Arch((2, 4, 8, 8), (
        ("conv", (("act", "relu"), ("bn", True), ("groups", 2), ("k", 3), ("out", 12), ("stride", 1))),
        ("residual", (("groups", 3), ("k", 3))),
        ("concat", (("ca", 6), ("cb", 6))),
        ("split", (("ca", 5), ("fn", True), ("rest", 8), ("s", 4))),
        ("chunk", (("co", 4), ("method", True), ("n", 3))),
        ("shuffle", (("b", 2), ("c", 12), ("g", 3), ("h", 8), ("literal", True))),
        ("shuffle", (("b", 2), ("c", 12), ("g", 4), ("h", 8), ("literal", False))),
        ("attn", (("dim", 4), ("heads", 2))),
        ("gate", ()),
        ("conv", (("act", "none"), ("bn", False), ("groups", 1), ("k", 1), ("out", 8), ("stride", 2))),
        ("head", (("out", 5), ("type", "flatten"))),
    ))
    result = check_compile(arch, {"pruner": "l1", "sparsity": 0.5}, 0)
    assert result.report.params_after < result.report.params_before


@pytest.mark.parametrize("pruner", ["l1", "l2", "fpgm", "level"])
def test_zero_sparsity_is_the_identity(pruner: str) -> None:
    arch = Arch((1, 3, 8, 8), (("conv", (("act", "relu"), ("bn", True), ("groups", 1), ("k", 3), ("out", 8),
                                          ("stride", 1))), ("head", (("out", 4), ("type", "mean")))))
    result = check_compile(arch, {"pruner": pruner, "sparsity": 0.0}, 0)
    assert result.report.params_after == result.report.params_before
    assert result.report.macs_after == result.report.macs_before
