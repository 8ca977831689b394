"""Figures: `fxprune prune --out` draws layers.png, `fxprune bench --chart` a latency chart; no matplotlib, no crash."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import fxprune
from fxprune import figures
from fxprune.cli import main
from tests.test_cli import QUICK_BENCH, USER_MODULE, user  # noqa: F401  (user is a fixture)

plt = pytest.importorskip("matplotlib.pyplot", reason="figures need matplotlib: pip install matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pixels_near(path, hex_color: str, tol: float = 0.04) -> int:
    image = plt.imread(str(path))[..., :3]
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image - rgb).max(-1) < tol).sum())


def _report() -> fxprune.report.Report:
    torch.manual_seed(0)
    model = fxprune.models.resnet18(num_classes=10, width=8).eval()
    return fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, torch.randn(1, 3, 32, 32)).report


def test_layers_png_marks_frozen_groups(tmp_path) -> None:
    report = _report()
    assert any(g.frozen == g.channels for g in report.groups)  # fc reaches the output: frozen
    path = figures.plot_layers(report, tmp_path / "layers.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert _pixels_near(path, figures._FROZEN) > 50 and _pixels_near(path, figures._KEPT) > 1000
    unfrozen = figures.plot_layers(replace(report, groups=[]), tmp_path / "plain.png")
    assert _pixels_near(unfrozen, figures._FROZEN) == 0
    height = plt.imread(str(path)).shape[0]
    assert height > 400  # grows with the number of layers (20 convs + fc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.png", "plain.png"]  # no temp files


def test_prune_out_writes_layers_png(user, capsys) -> None:  # noqa: F811
    src, work = user
    rc = main(["prune", f"{USER_MODULE}:build", "-c", str(src / "prune.yaml"), "-i", "1,3,16,16", "--out", "out",
               "--no-bench", "-q"])
    assert rc == 0, capsys.readouterr().err
    png = work / "out" / "layers.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "layers.png" in capsys.readouterr().out


def test_prune_without_matplotlib_writes_the_rest(user, capsys, monkeypatch) -> None:  # noqa: F811
    src, work = user
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    rc = main(["prune", f"{USER_MODULE}:build", "-c", str(src / "prune.yaml"), "-i", "1,3,16,16", "--out", "out",
               "--no-bench", "-q"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "warning: layers.png not written" in err and "pip install matplotlib" in err
    assert {p.name for p in (work / "out").iterdir()} == {"model.fxp", "model.onnx", "dense.onnx", "report.json",
                                                          "report.txt"}


def test_bench_chart(user, capsys, monkeypatch) -> None:  # noqa: F811
    src, work = user
    assert main(["prune", f"{USER_MODULE}:build", "-c", str(src / "prune.yaml"), "-i", "1,3,16,16", "--out", "out",
                 "--no-bench", "-q"]) == 0
    files = [str(work / "out" / "dense.onnx"), str(work / "out" / "model.onnx")]
    capsys.readouterr()
    bench = ["bench", *files, "--batch-sizes", "1,2", "--warmup", "1", "--min-runs", "2", "--min-time", "0", "-q"]
    assert main([*bench, "--chart", "lat.png", "--json", "b.json"]) == 0
    assert (work / "lat.png").read_bytes()[:8] == PNG_MAGIC
    assert _pixels_near(work / "lat.png", figures._KEPT) > 500  # the pruned model's bars
    # a missing directory is refused before any timing
    assert main([*bench, "--chart", "nodir/lat.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    # no matplotlib: the table and the JSON are still written, then one error line with the pip line
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main([*bench, "--chart", "lat2.png", "--json", "b2.json"]) == 2
    captured = capsys.readouterr()
    assert "| dense |" in captured.out and json.loads((work / "b2.json").read_text())["rows"]
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "pip install matplotlib" in lines[0] and not (work / "lat2.png").exists()


def test_plot_lines_skips_empty_series(tmp_path) -> None:
    path = figures.plot_lines({"l1": [(50, 0.9), (30, 0.95)], "slim": []}, "MACs kept (%)", "test accuracy (%)",
                              tmp_path / "a.png", reference=("dense", 0.97))
    assert path.read_bytes()[:8] == PNG_MAGIC
