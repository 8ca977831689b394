"""The per-layer latency table (issue 14): measured in onnxruntime, cached per machine, never trusted when the
cache is corrupted or foreign; estimates that follow the widths; latency budgets; refusals."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxprune
from fxprune.errors import ConfigError, UnsupportedError
from fxprune.latency import FORMAT, LatencyTable, signature_of
from fxprune.session import prepare

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


class _Small(nn.Module):
    """Conv -> depthwise conv -> conv -> linear: every kind of layer the table measures, small enough to measure
    in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 64, 3, padding=1)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.c2 = nn.Conv2d(64, 64, 1)
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c2(F.relu(self.dw(F.relu(self.c1(x)))))
        return self.fc(x.mean((2, 3)))


X = torch.randn(1, 3, 32, 32)  # large enough that kernel time follows the channels (at 8x8 it is all overhead)


@pytest.fixture(scope="module")
def session() -> fxprune.Session:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(_Small().eval(), {"pruner": "l1", "sparsity": 0.5}, X)


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory: pytest.TempPathFactory, session: fxprune.Session) -> Path:
    path = tmp_path_factory.mktemp("latency")
    LatencyTable.for_graph(session.graph, cache_dir=path)  # measured once for the module's tests
    return path


def _cache_file(path: Path) -> Path:
    files = list(path.glob("latency-*.json"))
    assert len(files) == 1
    return files[0]


@pytest.mark.slow  # measures the layers in onnxruntime (seconds)
def test_every_layer_has_a_signature_and_a_measured_entry(session: fxprune.Session, table_dir: Path) -> None:
    table = LatencyTable.for_graph(session.graph, cache_dir=table_dir)
    kinds = []
    for node in session.graph.gm.graph.nodes:
        found = signature_of(session.graph, node) if node.op == "call_module" else None
        if found is not None:
            kinds.append(found[0].kind + ("-dw" if found[0].kind == "conv" and found[0].get("dw") else ""))
            assert found[0].key in table.entries
    assert sorted(kinds) == ["conv", "conv", "conv-dw", "gemm"]
    data = json.loads(_cache_file(table_dir).read_text())
    assert data["format"] == FORMAT and data["machine"] == table.machine and data["block"] >= 1
    assert all(v > 0 for e in data["entries"].values() for row in e["seconds"] for v in row)


@pytest.mark.slow  # measures the layers in onnxruntime (seconds)
def test_estimate_falls_with_the_kept_channels(session: fxprune.Session, table_dir: Path) -> None:
    table = LatencyTable.for_graph(session.graph, cache_dir=table_dir)
    dense = table.estimate(fxprune.Masks(session.graph))
    half = table.estimate(session.compute_masks())
    assert 0 < half < dense


@pytest.mark.slow  # measures the layers in onnxruntime (seconds)
def test_second_build_reads_the_cache_without_measuring(session: fxprune.Session, table_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import fxprune.latency as latency

    monkeypatch.setattr(latency, "_measure", lambda *a: pytest.fail("measured although cached"))
    monkeypatch.setattr(latency, "_measure_block", lambda *a: pytest.fail("measured although cached"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good cache gives no warning
        LatencyTable.for_graph(session.graph, cache_dir=table_dir)


def _fake_measure(calls: list) -> object:
    def measure(sig: object, threads: int) -> dict:
        calls.append(sig)
        return {"cin": [1], "cout": [1], "seconds": [[1e-3]]}
    return measure


@pytest.mark.parametrize("damage", ["not json {", "[]", "foreign machine", "other format", "negative time",
                                    "rows of the wrong length"])
def test_corrupted_or_foreign_cache_is_rebuilt_with_a_warning(session: fxprune.Session, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    import fxprune.latency as latency

    calls: list = []
    monkeypatch.setattr(latency, "_measure", _fake_measure(calls))
    monkeypatch.setattr(latency, "_measure_block", lambda threads: 8)
    good = LatencyTable.for_graph(session.graph, cache_dir=tmp_path)
    n_signatures = len(calls)
    target = _cache_file(tmp_path)
    data = json.loads(target.read_text())
    if damage in ("not json {", "[]"):
        target.write_text(damage)
    else:
        entry = next(iter(data["entries"].values()))
        if damage == "foreign machine":
            data["machine"]["cpu"] = "another CPU"
        elif damage == "other format":
            data["format"] = "fxprune-latency/0"
        elif damage == "negative time":
            entry["seconds"][0][0] = -1.0
        else:
            entry["seconds"][0].append(1.0)
        target.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="corrupted or was written for another machine"):
        table = LatencyTable.for_graph(session.graph, cache_dir=tmp_path)
    assert len(calls) == 2 * n_signatures  # every layer measured again, nothing taken from the bad file
    rebuilt = json.loads(target.read_text())  # and the file rewritten
    assert rebuilt["format"] == FORMAT and rebuilt["machine"] == table.machine == good.machine
    assert set(rebuilt["entries"]) == set(good.entries)


@pytest.mark.slow  # measures the layers in onnxruntime (seconds)
def test_latency_budget_lowers_the_estimate_to_the_budget(session: fxprune.Session, table_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXPRUNE_CACHE_DIR", str(table_dir))
    table = LatencyTable.for_graph(session.graph, cache_dir=table_dir)
    masks = session.compute_masks(config={"sparsity": 0.9, "budget": {"latency": 0.6}, "round_to": 2,
                                          "options": {"latency_calibration": False}})  # the table alone
    dense = table.estimate(fxprune.Masks(session.graph))
    assert table.estimate(masks) <= 0.6 * dense + 1e-12
    assert masks.structured


@pytest.mark.slow  # measures the layers in onnxruntime (seconds)
def test_latency_budget_cuts_no_group_below_the_tables_measured_range(session: fxprune.Session, table_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXPRUNE_CACHE_DIR", str(table_dir))
    step = {"sparsity": 0.9, "budget": {"latency": 0.01}, "options": {"latency_calibration": False}}
    with pytest.raises(ConfigError, match=r"at most 0.75 of a group: what the latency table measured") as error:
        session.compute_masks(config=step)
    lowest = float(re.search(r"can go as low as ([0-9.]+)", str(error.value)).group(1))  # depends on the timings
    assert 0.01 < lowest < 1
    masks = session.compute_masks(config={**step, "budget": {"latency": lowest}})  # the advice holds
    # the rule would allow 90%; the table measured down to 25%, and at its floor the budget cuts that far
    fractions = [keep.sum() / keep.size for keep in masks.keep.values()]
    assert fractions and min(fractions) >= 0.25 and min(fractions) < 0.5


class _Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 8, 2, stride=2)  # transposed: the table measures no such op
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(F.relu(self.up(x)))


def test_latency_budget_on_a_layer_the_table_cannot_measure_is_refused(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXPRUNE_CACHE_DIR", str(tmp_path))
    with pytest.raises(UnsupportedError, match=r"(?s)cannot measure.*up.*'macs'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fxprune.compile(_Transposed().eval(), {"pruner": "l1", "budget": {"latency": 0.5}}, X)
    assert not list(tmp_path.glob("latency-*.json"))  # refused before measuring anything


def test_a_grid_with_a_load_spike_is_measured_again_and_the_spike_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    import fxprune.latency as latency

    clean = [[1.0, 1.9, 2.8, 3.7], [1.8, 3.5, 5.2, 6.9], [2.6, 5.1, 7.6, 10.1], [3.4, 6.7, 10.0, 13.3]]
    corner = [row[:] for row in clean]
    corner[3][3] = 13.3 * 4.7  # the cached table's 1x1 conv: its full width at 4.7x its 3/4 neighbour
    dip = [row[:] for row in clean]
    dip[3][2] = 10.0 * 5.8  # a middle variant at 5.8x its larger neighbour
    grid = {"cin": [16, 32, 48, 64], "cout": [16, 32, 48, 64]}
    assert latency._plausible({**grid, "seconds": clean})
    assert not latency._plausible({**grid, "seconds": corner}) and not latency._plausible({**grid, "seconds": dip})

    attempts = iter([corner, clean])
    monkeypatch.setattr(latency, "_measure_once", lambda sig, threads: {**grid, "seconds": next(attempts)})
    assert latency._measure(None, 2)["seconds"] == clean  # measured again; the elementwise minimum is the clean one

    attempts = iter([corner, corner, corner])  # on every attempt: a real slow width, kept as measured
    monkeypatch.setattr(latency, "_measure_once", lambda sig, threads: {**grid, "seconds": next(attempts)})
    assert latency._measure(None, 2)["seconds"] == corner
