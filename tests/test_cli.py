"""The `fxprune` command line (fxprune.cli.main) and the parameter accounting of exported ONNX files.

Every bad input must give exit code 2, exactly one `fxprune: error:` line naming the thing that is
wrong, no traceback, and no file left next to the output directory.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import onnx
import pytest
import torch
import torch.fx
from torch import nn

import fxprune
from fxprune.cli import main
from tests.fixtures import FAMILY

QUICK_BENCH = ["--batch-sizes", "1", "--warmup", "1", "--min-runs", "2", "--min-time", "0"]

USER_MODULE = "fxp_cli_user_models"
USER_SOURCE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.conv2(x))
            return self.fc(x.mean((2, 3)))


    class FftNet(nn.Module):
        """Prunable, but the ONNX exporter has no symbolic for fft."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            return torch.fft.fft2(self.conv2(F.relu(self.conv1(x)))).abs()


    def build():
        torch.manual_seed(0)
        return Net()


    def fftnet():
        torch.manual_seed(0)
        return FftNet()
''')

OUT_FILES = {"model.fxp", "model.onnx", "dense.onnx", "report.json", "report.txt", "bench.json", "bench.md",
             "layers.png"}


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A user's module in tmp_path/src, configs next to it, and an empty tmp_path/work for outputs."""
    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir()
    work.mkdir()
    (src / f"{USER_MODULE}.py").write_text(USER_SOURCE)
    (src / "prune.yaml").write_text("pruner: l1\nrules:\n  - {sparsity: 0.5, op_types: [Conv2d]}\n")
    (src / "prune.json").write_text(json.dumps({"pruner": "fpgm", "sparsity": 0.5}))
    (src / "typo.yaml").write_text("pruner: l1\nsparsty: 0.5\n")
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.delitem(sys.modules, USER_MODULE, raising=False)
    monkeypatch.chdir(work)
    return src, work


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("fxprune: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    return errors[0]


# --------------------------------------------------------------------------------------------- help


def test_help_is_complete(capsys) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("demo", "prune", "bench", "examples:", "exit codes"):
        assert word in text
    for command, words in {"demo": ["--quick", "--sparsity", "--batch-sizes"],
                           "prune": ["MODULE:FACTORY", "--config", "--input-shape", "--out", "model.fxp", "YAML"],
                           "bench": ["--batch-sizes", "--threads", "--ideal", "--json"]}.items():
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "examples:" in text, command
        for word in words:
            assert word in text, (command, word)


def test_no_command_and_unknown_flag_are_one_line_errors(capsys) -> None:
    assert main([]) == 2
    assert "a command is required" in _one_error_line(capsys.readouterr().err)
    assert main(["bench", "a.onnx", "b.onnx", "--no-such-flag"]) == 2
    assert "--no-such-flag" in _one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------- demo


def test_demo_quick(capsys) -> None:
    assert main(["demo", "--quick", "--width", "8", "--image-size", "32", "-q"]) == 0
    out = capsys.readouterr().out
    assert "ResNet-18" in out and "ideal speedup" in out
    assert "ONNX: pruned" in out and "onnxruntime vs torch" in out
    assert "measured/ideal" in out and "| pruned | 1 |" in out


# --------------------------------------------------------------------------------------------- prune


@pytest.mark.parametrize("config", ["prune.yaml", "prune.json"])
def test_prune_from_factory(user, capsys, config: str) -> None:
    src, work = user
    rc = main(["prune", f"{USER_MODULE}:build", "--config", str(src / config), "--input-shape", "1,3,16,16",
               "--out", "out", *QUICK_BENCH])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "fxprune: building the model" in captured.err  # progress on stderr
    out = work / "out"
    assert {p.name for p in out.iterdir()} == OUT_FILES
    assert sorted(os.listdir(work)) == ["out"]  # no temp dirs left

    report = json.loads((out / "report.json").read_text())
    assert report["pruner"] == ("l1" if config.endswith("yaml") else "fpgm")
    assert report["params_after"] < report["params_before"]
    model = fxprune.load(out / "model.fxp").model
    assert isinstance(model, torch.fx.GraphModule)
    assert sum(p.numel() for p in model.parameters()) == report["params_after"]
    assert model.conv1.out_channels == 8
    onnx.checker.check_model(str(out / "model.onnx"))
    assert report["onnx"]["pruned"]["num_params"] < report["onnx"]["dense"]["num_params"]
    bench = json.loads((out / "bench.json").read_text())
    assert {r["model"] for r in bench["rows"]} == {"dense", "pruned"}
    assert "measured/ideal" in (out / "bench.md").read_text()
    assert "params" in (out / "report.txt").read_text()


def test_prune_refuses_non_empty_out_without_force(user, capsys) -> None:
    src, work = user
    (work / "out").mkdir()
    (work / "out" / "keep.txt").write_text("mine")
    args = ["prune", f"{USER_MODULE}:build", "-c", str(src / "prune.yaml"), "-i", "1,3,16,16", "--out", "out",
            "--no-bench", "-q"]
    assert main(args) == 2
    assert "not empty" in _one_error_line(capsys.readouterr().err)
    assert (work / "out" / "keep.txt").read_text() == "mine"
    assert main([*args, "--force"]) == 0
    assert {p.name for p in (work / "out").iterdir()} == OUT_FILES - {"bench.json", "bench.md"}
    assert sorted(os.listdir(work)) == ["out"]


def _unwritable(monkeypatch) -> None:
    # Tests may run as root, where chmod does not stop writes: make the OS refuse instead.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("fxprune.cli.tempfile.mkdtemp", refuse)


BAD = {
    "missing module": (["no_such_module_xyz:build"], {}, "no_such_module_xyz"),
    "missing factory": ([f"{USER_MODULE}:no_such_factory"], {}, "no_such_factory"),
    "not MODULE:FACTORY": ([USER_MODULE], {}, "MODULE:FACTORY"),
    "bad config key": ([f"{USER_MODULE}:build"], {"config": "typo.yaml"}, "sparsty"),
    "missing config": ([f"{USER_MODULE}:build"], {"config": "nope.yaml"}, "nope.yaml"),
    "wrong input shape": ([f"{USER_MODULE}:build"], {"shape": "1,4,16,16"}, "1,4,16,16"),
    "bad shape syntax": ([f"{USER_MODULE}:build"], {"shape": "1;3;16"}, "1;3;16"),
    "out parent missing": ([f"{USER_MODULE}:build"], {"out": "missing/out"}, "does not exist"),
    "unwritable out dir": ([f"{USER_MODULE}:build"], {"unwritable": True}, "Permission denied"),
    "cannot export": ([f"{USER_MODULE}:fftnet"], {}, "fft"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_prune_bad_input(user, capsys, monkeypatch, case: str) -> None:
    src, work = user
    model, opts, needle = BAD[case]
    if opts.get("unwritable"):
        _unwritable(monkeypatch)
    before = sorted(os.listdir(work))
    rc = main(["prune", *model, "--config", str(src / opts.get("config", "prune.yaml")),
               "--input-shape", opts.get("shape", "1,3,16,16"), "--out", opts.get("out", "out"), "--no-bench"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert needle in line, line
    assert sorted(os.listdir(work)) == before


def test_internal_error_is_exit_1_and_debug_shows_traceback(user, capsys, monkeypatch) -> None:
    src, _ = user

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("fxprune.session.trace", boom)
    args = ["prune", f"{USER_MODULE}:build", "-c", str(src / "prune.yaml"), "-i", "1,3,16,16", "-o", "out",
            "--no-bench", "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "fxprune: internal error: RuntimeError: boom" in err and "Traceback" not in err
    assert main([*args, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert sorted(os.listdir(".")) == []


# --------------------------------------------------------------------------------------------- bench


def test_bench_two_onnx_files(tmp_path, capsys) -> None:
    x = torch.randn(1, 3, 16, 16)
    torch.manual_seed(0)
    paths = []
    for width in (16, 8):
        model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 4, 3)).eval()
        paths.append(fxprune.export_onnx(model, (x,), tmp_path / f"w{width}.onnx").path)
    out_json = tmp_path / "bench.json"
    rc = main(["bench", *paths, "--batch-sizes", "1,2", "--threads", "1", "--warmup", "1", "--min-runs", "2",
               "--min-time", "0", "--ideal", "4", "--json", str(out_json), "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| w16 | 1 |" in out and "| w8 | 2 |" in out and "4.00x" in out
    data = json.loads(out_json.read_text())
    assert len(data["rows"]) == 4 and data["ideal_speedup"] == {"w8": 4.0}


def test_bench_bad_input(tmp_path, capsys) -> None:
    assert main(["bench", str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx"), "-q"]) == 2
    assert "a.onnx" in _one_error_line(capsys.readouterr().err)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    assert main(["bench", str(tmp_path / "junk.onnx"), str(tmp_path / "junk.onnx"), "-q"]) == 2
    assert "junk.onnx" in _one_error_line(capsys.readouterr().err)
    assert main(["bench", str(tmp_path / "junk.onnx"), "-q"]) == 2
    assert "at least two" in _one_error_line(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == ["junk.onnx"]


# --------------------------------------------------------------------------------------------- ONNX params


def _randomise_bn(model: nn.Module) -> None:
    """Distinct trained-looking BN values: the exporter stores byte-identical initializers once."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def _bn_adjustment(gm: torch.fx.GraphModule) -> int:
    """ONNX params minus torch params, from what the exporter does with each BatchNorm.

    (tests/test_export.py asserts these rules exactly.) A BN whose input is a conv with no other
    user is folded: its weight and bias vanish (-2C) and the conv gains a bias if it had none (+C).
    Any other BN stays a BatchNormalization node whose running_mean and running_var become
    initializers (+2C).
    """
    delta = 0
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        bn = gm.get_submodule(node.target)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        c = bn.num_features
        src = node.args[0]
        conv = gm.get_submodule(src.target) if isinstance(src, torch.fx.Node) and src.op == "call_module" else None
        if isinstance(conv, nn.modules.conv._ConvNd) and not isinstance(conv, nn.modules.conv._ConvTransposeNd) \
                and len(src.users) == 1:
            delta += -2 * c + (c if conv.bias is None else 0)
        else:
            delta += 2 * c
    return delta


@pytest.mark.parametrize("name", ["resnet18", "vgg16_cifar", "mobilenet_v2", "densenet_small"])
def test_pruned_onnx_has_fewer_params_by_what_the_report_says(tmp_path, name: str) -> None:
    # Like with like: report.params_before/after are torch counts of the traced dense and the pruned
    # model. The ONNX files differ from those torch counts only by BN folding (_bn_adjustment), so
    #   onnx_dense - onnx_pruned == (params_before - params_after) + adj(dense) - adj(pruned)
    # must hold exactly; adj(dense) != adj(pruned) because folded BNs lose channels too.
    factory, shape = FAMILY[name]
    torch.manual_seed(0)
    model = factory().eval()
    _randomise_bn(model)
    x = torch.randn(shape)
    result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, x)
    report = result.report
    dense = fxprune.export_onnx(model, (x,), tmp_path / "dense.onnx")
    pruned = result.export_onnx(tmp_path / "pruned.onnx")
    for exported in (dense, pruned):
        onnx.checker.check_model(exported.path)
        assert exported.max_abs_err < 1e-3

    adj_dense, adj_pruned = _bn_adjustment(torch.fx.symbolic_trace(model)), _bn_adjustment(result.model)
    assert dense.num_params == report.params_before + adj_dense
    assert pruned.num_params == report.params_after + adj_pruned
    assert dense.num_params - pruned.num_params == (report.params_before - report.params_after) + adj_dense - adj_pruned
    assert pruned.num_params < dense.num_params
