"""Tests of ONNX export (fxprune.passes.export) and the onnxruntime benchmark (fxprune.bench).

What the exporter does with BatchNorm, asserted exactly below (torch 2.13, TorchScript exporter):
a BN right after a Conv whose output has no other user is folded into the conv, which gains a bias
if it had none; every other BN stays and keeps weight, bias, running_mean and running_var as
initializers (num_batches_tracked is dropped). Initializers with identical bytes are stored once,
so the tests randomise BN statistics (as training would) before counting.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.fx
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from fxprune.bench import BenchResult, benchmark, kernel_time, kernel_times
from fxprune.errors import ExportError, FxPruneError, InputError
from fxprune.passes.export import ExportResult, export_onnx, onnx_param_count

FAST = {"warmup": 1, "min_runs": 3, "min_time_s": 0.0, "threads": 1}


# --------------------------------------------------------------------------- models


class ConvBnNet(nn.Module):
    """conv-bn-relu-conv-flatten-linear; the BN folds into a bias-free conv."""

    FOLDED = (("conv1", "bn1"),)
    KEPT_BN = ()

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv2(x)
        return self.fc(torch.flatten(x, 1))


class ViewNet(nn.Module):
    """`view(x.size(0), -1)`; a folded BN after a biased conv and a kept BatchNorm1d after a Linear."""

    FOLDED = (("conv", "bn"),)
    KEPT_BN = ("bn_fc",)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6 * 4 * 4, 12)
        self.bn_fc = nn.BatchNorm1d(12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.bn_fc(self.fc1(x))))


class CatChunkNet(nn.Module):
    """chunk, grouped conv, cat, split, ConvTranspose, interpolate; two outputs; no BN."""

    FOLDED = ()
    KEPT_BN = ()

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.right = nn.Conv2d(4, 4, 1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = nn.Linear(4 * 4 * 4, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.stem(x).chunk(2, dim=1)
        y = torch.cat([F.relu(self.left(a)), self.right(b)], dim=1)
        p, q = torch.split(y, [4, 4], dim=1)
        y = torch.cat([p * q, p + q], dim=1)
        y = F.interpolate(self.up(y), scale_factor=0.5, mode="nearest")
        y = F.adaptive_avg_pool2d(y, 4)
        return self.head(torch.flatten(y, 1)), y.mean(dim=(2, 3))


class NumpyNet(nn.Module):
    """Computes through NumPy: the tracer can only record the result as a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.from_numpy(np.tanh(x.detach().numpy())).mean(dim=1, keepdim=True)


class FftNet(nn.Module):
    """Uses an operator the ONNX exporter has no symbolic for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).abs()


class BranchNet(nn.Module):
    """Data-dependent Python control flow: the trace freezes the branch taken."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else -x


class TokenNet(nn.Module):
    """Integer token ids in, as a transformer takes them."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids).mean(dim=1))


NETS = {"convbn": ConvBnNet, "view": ViewNet, "catchunk": CatChunkNet}


def _make(name: str, traced: bool) -> nn.Module:
    torch.manual_seed(0)
    model = NETS[name]()
    _randomise_bn(model)
    model.eval()
    return torch.fx.symbolic_trace(model) if traced else model


def _randomise_bn(model: nn.Module) -> None:
    """Give every BN trained-looking, pairwise distinct statistics and affine parameters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def _expected_onnx_params(model: nn.Module, spec: type) -> int:
    """Torch parameter count, adjusted for what the exporter does with BN (module docstring)."""
    count = sum(p.numel() for p in model.parameters())
    for conv_name, bn_name in spec.FOLDED:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        count -= bn.weight.numel() + bn.bias.numel()  # folded into the conv weight and bias
        if conv.bias is None:
            count += conv.out_channels  # the folded conv gets a bias
    for bn_name in spec.KEPT_BN:
        bn = model.get_submodule(bn_name)
        count += bn.running_mean.numel() + bn.running_var.numel()  # buffers become initializers
    return count


def _ort_run(path: str, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _torch_run(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(x)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "fx"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_export_passes_checker_parity_and_dynamic_batch(tmp_path, name: str, traced: bool) -> None:
    model = _make(name, traced)
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / f"{name}.onnx"

    result = export_onnx(model, (x,), path)

    assert isinstance(result, ExportResult)
    assert result.path == str(path) and path.is_file()
    onnx.checker.check_model(str(path))
    assert result.opset >= 13 and result.dynamic_batch
    assert result.input_names == ("x",)
    n_out = 2 if name == "catchunk" else 1
    assert len(result.output_names) == n_out
    assert result.max_abs_err <= 1e-4 and result.max_rel_err < 1.0
    assert result.tracer_warnings == ()
    # The batch axis is symbolic and works at a batch size never seen before.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    x5 = torch.randn(5, 3, 8, 8)
    for got, want in zip(_ort_run(str(path), x5), _torch_run(model, x5), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "fx"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_num_params_counts_bn_folding_exactly(tmp_path, name: str, traced: bool) -> None:
    model = _make(name, traced)
    path = tmp_path / "m.onnx"
    result = export_onnx(model, (torch.randn(2, 3, 8, 8),), path)

    assert result.num_params == _expected_onnx_params(model, NETS[name])
    assert onnx_param_count(path) == result.num_params
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("BatchNormalization") == len(NETS[name].KEPT_BN)


def test_identical_initializers_are_stored_once(tmp_path) -> None:
    # A freshly initialised BN has weight == running_var (ones) and bias == running_mean (zeros); the
    # exporter keeps one copy of each, so an untrained model counts 2*C fewer than the formula.
    torch.manual_seed(0)
    model = ViewNet().eval()
    result = export_onnx(model, (torch.randn(2, 3, 8, 8),), tmp_path / "fresh.onnx")
    assert result.num_params == _expected_onnx_params(model, ViewNet) - 2 * model.bn_fc.num_features


def test_pruned_model_has_fewer_params(tmp_path) -> None:
    torch.manual_seed(0)
    dense, pruned = ConvBnNet(16), ConvBnNet(8)
    for m in (dense, pruned):
        _randomise_bn(m)
    x = torch.randn(1, 3, 8, 8)
    n_dense = export_onnx(dense, (x,), tmp_path / "d.onnx").num_params
    n_pruned = export_onnx(pruned, (x,), tmp_path / "p.onnx").num_params
    assert n_pruned == _expected_onnx_params(pruned, ConvBnNet)
    assert n_dense == _expected_onnx_params(dense, ConvBnNet)
    assert n_pruned < n_dense


def test_example_batch_one_still_gives_dynamic_batch(tmp_path) -> None:
    model = _make("view", traced=True)
    path = tmp_path / "b1.onnx"
    export_onnx(model, (torch.randn(1, 3, 8, 8),), path)
    x = torch.randn(3, 3, 8, 8)
    np.testing.assert_allclose(_ort_run(str(path), x)[0], _torch_run(model, x)[0], rtol=1e-3, atol=1e-4)


def test_static_batch_when_not_dynamic(tmp_path) -> None:
    path = tmp_path / "static.onnx"
    result = export_onnx(_make("convbn", traced=True), (torch.randn(2, 3, 8, 8),), path, dynamic_batch=False)
    assert not result.dynamic_batch
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 8, 8]


def test_opset_is_honoured(tmp_path) -> None:
    result = export_onnx(
        _make("convbn", traced=False), (torch.randn(1, 3, 8, 8),), tmp_path / "o.onnx", opset=17
    )
    assert result.opset == 17


def test_mode_restored_and_weights_untouched(tmp_path) -> None:
    model = ViewNet()
    _randomise_bn(model)
    model.train()
    model.bn_fc.eval()  # mixed modes must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}

    export_onnx(model, (torch.randn(4, 3, 8, 8),), tmp_path / "m.onnx")

    assert {name: m.training for name, m in model.named_modules()} == modes
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def test_tolerance_failure_names_output_and_leaves_no_file(tmp_path) -> None:
    # With BN folded into the conv, onnxruntime's float rounding differs from torch's: exactness fails.
    path = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match=r"ONNX output 0 .*max abs err .*max rel err"):
        export_onnx(_make("convbn", traced=True), (torch.randn(2, 3, 8, 8),), path, rtol=0.0, atol=0.0)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "where",
    ["missing_dir", "is_dir", "parent_is_file"],
)
def test_bad_path_raises_before_export(tmp_path, where: str) -> None:
    if where == "missing_dir":
        path, needle = tmp_path / "nope" / "m.onnx", "does not exist"
    elif where == "is_dir":
        path, needle = tmp_path, "is a directory"
    else:
        (tmp_path / "file").write_text("x")
        path, needle = tmp_path / "file" / "m.onnx", "not a directory"
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(ExportError, match=needle) as info:
        export_onnx(_make("convbn", traced=False), (torch.randn(1, 3, 8, 8),), path)
    assert str(path) in str(info.value) or str(path.parent) in str(info.value)
    assert isinstance(info.value, FxPruneError)
    assert sorted(os.listdir(tmp_path)) == listing


def test_unwritable_directory_raises_before_export(tmp_path, monkeypatch) -> None:
    # Tests may run as root, where chmod does not stop writes: simulate the OS refusing instead.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("fxprune.passes.export.tempfile.mkdtemp", refuse)
    exported = []
    monkeypatch.setattr("fxprune.passes.export.torch.onnx.export", lambda *a, **k: exported.append(a))
    with pytest.raises(ExportError, match=r"cannot write in directory .*Permission denied.*writable"):
        export_onnx(ConvBnNet(), (torch.randn(1, 3, 8, 8),), tmp_path / "m.onnx")
    assert exported == [] and os.listdir(tmp_path) == []


def test_numpy_in_forward_is_rejected_and_leaves_no_file(tmp_path) -> None:
    path = tmp_path / "np.onnx"
    with pytest.raises(ExportError, match="NumpyNet") as info:
        export_onnx(NumpyNet(), (torch.randn(2, 3, 4, 4),), path)
    assert "NumPy" in str(info.value)  # the tracer warning that explains it
    assert os.listdir(tmp_path) == []


def test_numpy_in_forward_is_rejected_without_dynamic_batch(tmp_path) -> None:
    # The fresh-values probe, not only the doubled batch, catches the frozen constant.
    with pytest.raises(ExportError, match="NumpyNet"):
        export_onnx(NumpyNet(), (torch.randn(2, 3, 4, 4),), tmp_path / "np.onnx", dynamic_batch=False)
    assert os.listdir(tmp_path) == []


def test_unsupported_operator_names_model_and_operator(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"FftNet.*fft_fft2"):
        export_onnx(FftNet(), (torch.randn(2, 3, 4, 4),), tmp_path / "fft.onnx")
    assert os.listdir(tmp_path) == []


def test_failed_export_keeps_previous_file(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export_onnx(NumpyNet(), (torch.randn(2, 3, 4, 4),), path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_frozen_branch_that_passes_parity_warns(tmp_path) -> None:
    x = torch.randn(2, 3, 4, 4) + 3.0  # positive sum; the fresh probe keeps the sign
    with pytest.warns(UserWarning, match="BranchNet.*froze"):
        result = export_onnx(BranchNet(), (x,), tmp_path / "branch.onnx")
    assert any("Python boolean" in w for w in result.tracer_warnings)


def test_bad_example_inputs(tmp_path) -> None:
    with pytest.raises(InputError, match=r"example_inputs\[0\]"):
        export_onnx(ConvBnNet(), ([1, 2],), tmp_path / "m.onnx")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="fails on the example inputs"):
        export_onnx(ConvBnNet(), (torch.randn(1, 5, 8, 8),), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_onnx_param_count_missing_file(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        onnx_param_count(tmp_path / "missing.onnx")


# --------------------------------------------------------------------------- benchmark


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    dense = export_onnx(torch.fx.symbolic_trace(ConvBnNet(32).eval()), (x,), out / "dense.onnx")
    pruned = export_onnx(torch.fx.symbolic_trace(ConvBnNet(8).eval()), (x,), out / "pruned.onnx")
    return {"dense": dense.path, "pruned": pruned.path}


def test_kernel_times_profile_models_interleaved(onnx_pair) -> None:
    name = ort.InferenceSession(onnx_pair["dense"]).get_inputs()[0].name
    feeds = {name: np.random.default_rng(0).standard_normal((1, 3, 8, 8), dtype=np.float32)}
    both = kernel_times({k: (p, feeds) for k, p in onnx_pair.items()}, threads=1, runs=5, warmup=1)
    assert set(both) == {"dense", "pruned"} and all(v > 0 for v in both.values())
    assert kernel_time(onnx_pair["dense"], feeds, threads=1, runs=5, warmup=1) > 0


def test_timing_sessions_do_not_spin_between_alternated_runs() -> None:
    from fxprune.latency import session_options

    # a spinning session's threads take the cores the next model's run needs (2x slower alternated runs)
    assert session_options(2).get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_benchmark_rows_speedup_json_markdown(onnx_pair) -> None:
    result = benchmark(onnx_pair, batch_sizes=(1, 3), **FAST)

    assert isinstance(result, BenchResult)
    assert [(r["model"], r["batch"]) for r in result.rows] == [
        ("dense", 1),
        ("pruned", 1),
        ("dense", 3),
        ("pruned", 3),
    ]
    for row in result.rows:
        assert set(row) == {"model", "batch", "median_ms", "p90_ms", "mean_ms", "min_ms", "runs", "speedup",
                            "kernel_ms", "kernel_speedup"}
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["kernel_ms"] > 0  # the profiler's summed kernel time of a run (issue 14)
        assert row["mean_ms"] > 0 and row["runs"] >= 3
    by_key = {(r["model"], r["batch"]): r for r in result.rows}
    for batch in (1, 3):
        base, other = by_key[("dense", batch)], by_key[("pruned", batch)]
        assert base["speedup"] == 1.0
        assert other["speedup"] == pytest.approx(base["median_ms"] / other["median_ms"])
        assert base["kernel_speedup"] == 1.0
        assert other["kernel_speedup"] == pytest.approx(base["kernel_ms"] / other["kernel_ms"])
        assert base["runs"] == other["runs"]  # interleaved rounds

    data = json.loads(result.to_json())
    assert data["rows"] == result.rows and data["machine"] == result.machine
    assert "onnxruntime" in result.machine and "1 intra-op threads" in result.machine

    table = result.to_markdown().splitlines()
    assert len(table) == 2 + 4
    assert table[0].startswith("| model | batch | median ms")
    assert table[2].startswith("| dense | 1 |") and table[2].endswith("| 1.00x |")

    ideal_table = result.to_markdown(ideal={"pruned": 2.0}).splitlines()
    assert "| ideal | measured/ideal |" in ideal_table[0]
    assert ideal_table[2].endswith("| - | - |")  # no ideal given for the baseline
    assert "| 2.00x |" in ideal_table[3]


def test_benchmark_min_time_is_reached(onnx_pair) -> None:
    result = benchmark(onnx_pair, batch_sizes=(2,), warmup=0, min_runs=1, min_time_s=0.01, threads=1)
    for row in result.rows:
        # Timed runs continue until each model has 10 ms of measured time, or the 2000-run cap.
        assert row["runs"] == 2000 or row["runs"] * row["mean_ms"] >= 10.0 - 1e-6
        assert row["runs"] > 1


def test_benchmark_static_batch(tmp_path) -> None:
    path = tmp_path / "static.onnx"
    export_onnx(ConvBnNet(), (torch.randn(2, 3, 8, 8),), path, dynamic_batch=False)
    with pytest.raises(InputError, match=r"static batch size of 2.*dynamic"):
        benchmark({"static": path}, batch_sizes=(1,), **FAST)
    rows = benchmark({"static": path}, batch_sizes=(2,), **FAST).rows
    assert rows[0]["batch"] == 2 and rows[0]["speedup"] == 1.0


def test_benchmark_integer_inputs(tmp_path) -> None:
    path = tmp_path / "tokens.onnx"
    ids = torch.randint(0, 100, (2, 7))
    result = export_onnx(TokenNet(), (ids,), path)
    assert result.input_names == ("ids",)
    rows = benchmark({"tokens": path}, batch_sizes=(1, 4), **FAST).rows
    assert [r["batch"] for r in rows] == [1, 4]


def _symbolic_seq_model(path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime reads, whatever the installed onnx writes by default
    onnx.save(model, str(path))


def test_benchmark_symbolic_axis_needs_input_shapes(tmp_path) -> None:
    path = tmp_path / "seq.onnx"
    _symbolic_seq_model(path)
    with pytest.raises(InputError, match=r"axis 1 .*'seq'.*input_shapes"):
        benchmark({"seq": path}, batch_sizes=(2,), **FAST)
    with pytest.raises(InputError, match=r"\['nope'\] are not inputs"):
        benchmark({"seq": path}, batch_sizes=(2,), input_shapes={"nope": (1, 4)}, **FAST)
    rows = benchmark({"seq": path}, batch_sizes=(2,), input_shapes={"x": (1, 16)}, **FAST).rows
    assert rows[0]["batch"] == 2 and rows[0]["median_ms"] > 0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"models": {}}, "no models"),
        ({"models": {"a": "/nonexistent/a.onnx"}}, "does not exist"),
        ({"batch_sizes": (0,)}, "batch_sizes"),
        ({"threads": 0}, "threads"),
    ],
)
def test_benchmark_bad_arguments(onnx_pair, kwargs: dict, needle: str) -> None:
    args = {"models": onnx_pair, "batch_sizes": (1,), **FAST, **kwargs}
    with pytest.raises(InputError, match=needle):
        benchmark(args.pop("models"), **args)
