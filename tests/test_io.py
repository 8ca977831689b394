"""fxprune.save / fxprune.load: round trips without pickled code, and clear errors for bad files."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.serialize import FORMAT_VERSION
from tests.fixtures import FAMILY, RULE_CASES, UnknownCustomOp

torch.set_num_threads(1)

ROUND_TRIP = ["resnet18", "mobilenet_v2", "densenet_small", "inception_small", "shufflenet_v2_small",
              "unet_small"]
RULE_ROUND_TRIP = ["split", "chunk", "concat", "view_linear", "slicing", "channel_shuffle", "transpose",
                   "conv_transpose2d", "groupnorm", "prelu", "output_from_middle", "getattr_parameter",
                   "upsample", "maxpool"]


def _compile(model: nn.Module, x: torch.Tensor, config: dict | None = None) -> fxprune.CompileResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxprune.compile(model, config or {"pruner": "l1", "sparsity": 0.5}, x)


def _leaves(out: object) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _assert_round_trip(result: fxprune.CompileResult, path: Path) -> fxprune.Loaded:
    fxprune.save(result, path)
    loaded = fxprune.load(path)
    x = result.example_inputs
    fresh = tuple(torch.randn_like(t) for t in x)
    assert {n: m.training for n, m in loaded.model.named_modules()} == {
        n: m.training for n, m in result.model.named_modules()}
    result.model.eval()
    loaded.model.eval()
    with torch.no_grad():
        for inputs in (x, fresh):
            for a, b in zip(_leaves(result.model(*inputs)), _leaves(loaded.model(*inputs)), strict=True):
                assert torch.equal(a, b)
    assert loaded.model.state_dict().keys() == result.model.state_dict().keys()
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    assert loaded.report == json.loads(json.dumps(result.report.to_dict()))
    assert loaded.report["params_after"] == sum(p.numel() for p in loaded.model.parameters())
    for s, keep in result.masks.pruned_slots():
        assert torch.equal(loaded.masks.kept(s.tensor, s.dim), torch.as_tensor(keep.nonzero()[0]))
    assert set(loaded.masks.groups) == set(result.masks.keep)
    return loaded


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_family(name: str, tmp_path: Path) -> None:
    factory, shape = FAMILY[name]
    torch.manual_seed(0)
    _assert_round_trip(_compile(factory().eval(), torch.randn(*shape)), tmp_path / "m.fxp")


@pytest.mark.parametrize("name", RULE_ROUND_TRIP)
def test_round_trip_rule_cases(name: str, tmp_path: Path) -> None:
    factory, shape = RULE_CASES[name]
    torch.manual_seed(0)
    _assert_round_trip(_compile(factory().eval(), torch.randn(*shape)), tmp_path / "m.fxp")


def test_round_trip_level_masks_and_train_flags(tmp_path: Path) -> None:
    factory, shape = FAMILY["resnet18"]
    model = factory().train()
    result = _compile(model, torch.randn(*shape), {"pruner": "level", "sparsity": 0.7})
    assert result.model.training
    loaded = _assert_round_trip(result, tmp_path / "m.fxp")  # compares every module's training flag
    assert loaded.masks.weights.keys() == result.masks.weights.keys()
    assert loaded.report["nonzero_params_after"] < loaded.report["params_after"]


def test_round_trip_keeps_tied_weights_tied(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(8, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1)
            self.b.weight = self.a.weight
            self.c0, self.h = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.h(F.relu(self.b(F.relu(self.a(self.c0(x))))))

    loaded = _assert_round_trip(_compile(Tied().eval(), torch.randn(1, 3, 8, 8)), tmp_path / "m.fxp")
    assert loaded.model.a.weight is loaded.model.b.weight


def test_wrapped_function_needs_trust(tmp_path: Path) -> None:
    """A @torch.fx.wrap-ed function is stored by name; loading imports only modules the caller trusts."""
    result = _compile(UnknownCustomOp().eval(), torch.randn(1, 3, 8, 8))
    path = tmp_path / "m.fxp"
    fxprune.save(result, path)
    with pytest.raises(fxprune.FormatError, match="trusted_modules=\\['tests.fixtures'\\]"):
        fxprune.load(path)
    loaded = fxprune.load(path, trusted_modules=["tests.fixtures"])
    torch.testing.assert_close(loaded.model(result.example_inputs[0]), result.model(result.example_inputs[0]))


def test_file_holds_no_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "m.fxp"
    fxprune.save(_compile(FAMILY["resnet18"][0]().eval(), torch.randn(1, 3, 32, 32)), path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["fxprune.json", "tensors.pt"]
        meta = json.loads(z.read("fxprune.json"))
        payload = z.read("tensors.pt")
    assert meta["magic"] == "fxprune-model" and meta["format_version"] == FORMAT_VERSION
    import io

    tensors = torch.load(io.BytesIO(payload), weights_only=True)  # would refuse pickled code
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())


# ------------------------------------------------------------------------------------------------
# Refused at save time
# ------------------------------------------------------------------------------------------------


class _CustomLeaf(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_save_refuses_custom_module_classes(tmp_path: Path) -> None:
    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, _CustomLeaf) or super().is_leaf_module(m, qualname)

    root = nn.Sequential(nn.Conv2d(3, 4, 1), _CustomLeaf())
    gm = torch.fx.GraphModule(root, Tracer().trace(root))
    path = tmp_path / "m.fxp"
    with pytest.raises(fxprune.FormatError, match="module '1' .*_CustomLeaf.* not a torch.nn built-in"):
        fxprune.save(gm, path)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_save_refuses_hooks(tmp_path: Path) -> None:
    result = _compile(RULE_CASES["conv2d"][0]().eval(), torch.randn(2, 3, 16, 16))
    next(m for m in result.model.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(
        lambda *a: None)
    with pytest.raises(fxprune.FormatError, match="hooks"):
        fxprune.save(result, tmp_path / "m.fxp")
    assert os.listdir(tmp_path) == []


def test_save_refuses_non_graph_modules(tmp_path: Path) -> None:
    with pytest.raises(fxprune.FormatError, match="CompileResult or a GraphModule"):
        fxprune.save(nn.Linear(2, 2), tmp_path / "m.fxp")


# ------------------------------------------------------------------------------------------------
# Bad files
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("io") / "good.fxp"
    fxprune.save(_compile(FAMILY["resnet18"][0]().eval(), torch.randn(1, 3, 32, 32)), path)
    return path


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(saved: Path, tmp_path: Path, fraction: float) -> None:
    data = saved.read_bytes()
    bad = tmp_path / "truncated.fxp"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(fxprune.FormatError, match="truncated.fxp"):
        fxprune.load(bad)


def test_corrupted_payload_byte(saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.fxp"
    bad.write_bytes(bytes(data))
    with pytest.raises(fxprune.FormatError, match="flipped.fxp"):
        fxprune.load(bad)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    bad = tmp_path / "random.fxp"
    bad.write_bytes(torch.randint(0, 256, (1000 + 997 * seed,), generator=torch.Generator().manual_seed(seed),
                                  dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(fxprune.FormatError, match="random.fxp.*not an fxprune model"):
        fxprune.load(bad)


def test_foreign_zip(tmp_path: Path) -> None:
    bad = tmp_path / "foreign.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("hello.txt", "not a model")
    with pytest.raises(fxprune.FormatError, match="foreign.zip is a zip archive but not an fxprune model"):
        fxprune.load(bad)


def test_torch_save_file_is_not_ours(tmp_path: Path) -> None:
    bad = tmp_path / "state.pt"
    torch.save(nn.Linear(2, 2).state_dict(), bad)
    with pytest.raises(fxprune.FormatError, match="state.pt .*not an fxprune model"):
        fxprune.load(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(fxprune.FormatError, match="no such file"):
        fxprune.load(tmp_path / "nope.fxp")


def _rewrite(saved: Path, target: Path, edit: object) -> None:
    with zipfile.ZipFile(saved) as z:
        meta, payload = json.loads(z.read("fxprune.json")), z.read("tensors.pt")
    edit(meta)
    with zipfile.ZipFile(target, "w") as z:
        z.writestr("fxprune.json", json.dumps(meta))
        z.writestr("tensors.pt", payload)


@pytest.mark.parametrize(("what", "edit", "message"), [
    ("wrong version", lambda m: m.update(format_version=FORMAT_VERSION + 1), "format version 2"),
    ("no magic", lambda m: m.pop("magic"), "magic marker"),
    ("untrusted function", lambda m: m["graph"][1].update(target={"function": "os:system"}),
     "outside the modules load trusts"),
    ("foreign module class", lambda m: m["modules"]["conv1"].update({"class": "subprocess:Popen"}),
     "not a torch.nn built-in"),
    ("missing tensor", lambda m: m["tensors"].pop(0), "no values for conv1.weight"),
    ("edited graph", lambda m: m["graph"].pop(2), "inconsistent|fails|differ"),
])
def test_tampered_file(saved: Path, tmp_path: Path, what: str, edit: object, message: str) -> None:
    bad = tmp_path / "tampered.fxp"
    _rewrite(saved, bad, edit)
    with pytest.raises(fxprune.FormatError, match=message):
        fxprune.load(bad)
