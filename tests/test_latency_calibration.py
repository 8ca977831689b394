"""Latency budgets that land (issues 11 and 14): the table's choice calibrated end to end (`fxprune.latency.calibrate`,
`EndToEnd`), in `compile` (config["budget"]["latency"]) and in the searches (target='latency'); refusals before
any search."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxprune
from fxprune.errors import ConfigError, UnsupportedError
from fxprune.latency import Measurement, Step, _next_fraction, calibrate, kernel_per_run
from fxprune.pruners import SimulatedAnnealingPruner
from fxprune.pruners.v1 import NetAdaptPruner
from tests.test_latency import X, _Small

pytest.importorskip("onnxruntime")


def _measured(ratio: float) -> Measurement:
    return Measurement(ratio, ratio, ratio, ratio, 1.0, ratio, 1.0, ratio, 20)


def _true_latency(x: float) -> float:
    """A model whose end-to-end latency falls slower than the table says (fixed costs): 0.78 at a table 0.5."""
    return 0.35 + 0.65 * x ** 0.6


def test_calibrate_lands_on_the_budget_with_a_fake_measurement() -> None:
    solved: list[float] = []

    def solve(t: float) -> tuple[float, float]:
        solved.append(t)
        return t, t  # the candidate is its table ratio

    chosen, steps, best = calibrate(0.5, solve, lambda c: _measured(_true_latency(c)))
    assert solved[0] == 0.5 and steps[0].measured.ratio == pytest.approx(_true_latency(0.5))
    assert abs(_true_latency(chosen) / 0.5 - 1) <= 0.03  # landed within the tolerance
    assert best == len(steps) - 1 and len(steps) <= 5
    assert chosen < 0.5  # the table had to be asked for less than the budget


def test_calibrate_with_discrete_candidates_keeps_the_closest_and_stops() -> None:
    def solve(t: float) -> tuple[float, float]:
        x = math_floor(t, 0.1)  # channel chunks: the table reaches only multiples of 0.1
        return x, x

    chosen, steps, best = calibrate(0.5, solve, lambda c: _measured(_true_latency(c)), steps=6)
    errors = [abs(s.measured.ratio / 0.5 - 1) for s in steps]
    assert best == int(np.argmin(errors)) and chosen == steps[best].table_ratio
    assert len(steps) <= 6


def math_floor(t: float, step: float) -> float:
    return max(step, np.floor(t / step + 1e-9) * step)


def test_calibrate_raises_at_the_first_step_and_stops_later() -> None:
    def never(t: float) -> tuple[float, float]:
        raise ConfigError("below the floor")

    with pytest.raises(ConfigError, match="below the floor"):
        calibrate(0.5, never, lambda c: _measured(1.0))

    def floor(t: float) -> tuple[float, float]:
        if t < 0.45:
            raise ConfigError("below the floor")
        return t, t

    chosen, steps, best = calibrate(0.5, floor, lambda c: _measured(_true_latency(c)))
    assert len(steps) == 1 and chosen == 0.5 and best == 0  # could not go lower: the closest it measured


def test_next_fraction_is_proportional_then_inside_the_bracket() -> None:
    one = [Step(0.5, 0.5, _measured(1.0))]
    assert _next_fraction(0.5, one) == pytest.approx(0.25)  # twice too slow: ask the table for half
    two = one + [Step(0.25, 0.2, _measured(0.4))]
    # between (0.2 -> 0.4) and (0.5 -> 1.0): linear
    assert _next_fraction(0.5, two) == pytest.approx(0.2 + 0.1 * 0.3 / 0.6)


def test_kernel_per_run_sums_the_nodes_of_each_run() -> None:
    events = [{"name": "model_run", "ts": 0, "dur": 100}, {"name": "model_run", "ts": 200, "dur": 100},
              {"cat": "Node", "name": "a_kernel_time", "ts": 10, "dur": 30},
              {"cat": "Node", "name": "b_kernel_time", "ts": 50, "dur": 20},
              {"cat": "Node", "name": "a_kernel_time", "ts": 210, "dur": 40},
              {"cat": "Node", "name": "a_fence_before", "ts": 220, "dur": 5}]
    assert kernel_per_run(events) == pytest.approx([50e-6, 40e-6])


class _NoExport(nn.Module):
    """Conv layers the table measures, and an op (cummax) no ONNX exporter has."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.c1(x))
        return self.c2(torch.cummax(y, dim=3)[0])


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.2])
def test_latency_budget_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"outside \(0, 1\]"):
        fxprune.compile(_Small().eval(), {"pruner": "l1", "budget": {"latency": fraction}}, X)


@pytest.mark.parametrize("total", [0.0, 1.0])
def test_search_latency_budget_outside_0_1_is_refused(total: float) -> None:
    with pytest.raises(ConfigError, match="total_sparsity"):
        NetAdaptPruner(_Small().eval(), [{"sparsity": total, "op_types": ["Conv2d"]}], evaluator=lambda m: 1.0,
                       target="latency", experiment_data_dir=None)


@pytest.mark.slow  # the ONNX exporters try (and fail) first: ~20 s
def test_latency_on_a_model_that_does_not_export_is_refused_before_the_search(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXPRUNE_CACHE_DIR", str(tmp_path))
    calls: list[int] = []

    def evaluator(model: nn.Module) -> float:
        calls.append(1)
        return 1.0

    pruner = SimulatedAnnealingPruner(_NoExport().eval(), [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}],
                                      evaluator=evaluator, dummy_input=X, target="latency", log_dir=None)
    with pytest.raises(UnsupportedError, match=r"(?s)target='latency'.*does not export to ONNX.*cummax.*"
                                               r"target='flops'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner.compress()
    assert len(calls) == 1 and not pruner.history  # the dense score only: no candidate evaluated
    assert not list(tmp_path.glob("latency-*.json"))  # nor a layer measured
    with pytest.raises(UnsupportedError, match=r"config\['budget'\].*does not export"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fxprune.compile(_NoExport().eval(), {"pruner": "l1", "budget": {"latency": 0.5}}, X)


# Latency budgets of _Small: well above its floor (0.43 of the dense latency here, 0.45 on the CI machine: fixed
# per-op costs the table measures), so that a slower machine can still meet them.
BUDGET = 0.6
_NOTE = re.compile(r"measured end to end ([0-9.]+) of the dense latency.*the table estimates ([0-9.]+)")


@pytest.mark.slow  # measures a table and calibrates end to end in onnxruntime (seconds)
def test_compile_calibrates_a_latency_budget_end_to_end() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fxprune.compile(_Small().eval(), {"pruner": "l1", "budget": {"latency": BUDGET}}, X)
    notes = [m for n in result.report.notes if (m := _NOTE.search(n))]
    assert len(notes) == 1, result.report.notes
    measured, estimate = float(notes[0].group(1)), float(notes[0].group(2))
    assert 0 < measured < 1 and 0 < estimate < 1  # both recorded; the model got faster end to end
    assert result.report.max_abs_diff < 1e-3


@pytest.mark.slow  # a search with a measured table and an end-to-end calibration (seconds)
def test_netadapt_with_a_latency_target_reports_the_measured_ratio(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Small().eval()

    def evaluator(m: nn.Module) -> float:  # higher is better: stay close to the dense output
        with torch.no_grad():
            return -float((m(X) - dense).abs().mean())

    with torch.no_grad():
        dense = model(X)
    pruner = NetAdaptPruner(model, [{"sparsity": 1 - BUDGET, "op_types": ["Conv2d"]}], evaluator=evaluator,
                            sparsity_per_iteration=0.25, experiment_data_dir=tmp_path, dummy_input=X, target="latency")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner.compress()
    latency = pruner.summary()["latency"]
    assert latency["kept_budget"] == pytest.approx(BUDGET) and 1 <= len(latency["steps"]) <= 5
    assert latency["steps"][0]["table_ratio"] <= BUDGET + 1e-9  # the search's best, within the table's budget
    for step in latency["steps"]:  # the table's estimate next to the end-to-end measurement
        assert 0 < step["table_ratio"] < 1 and step["wall_ratio"] > 0 and step["kernel_ratio"] > 0
        assert step["runs"] >= 20
    chosen = latency["steps"][latency["chosen_step"]]
    errors = [abs(s["wall_ratio"] / BUDGET - 1) for s in latency["steps"]]
    assert abs(chosen["wall_ratio"] / BUDGET - 1) == min(errors)  # the closest measured step is the result
    best = pruner._best[0]
    assert best.extra["measured_wall_ratio"] == chosen["wall_ratio"]
    saved = json.loads((tmp_path / "search_history.json").read_text())
    assert saved["latency"]["steps"] == latency["steps"] and saved["target"] == "latency"
    assert pruner.result.report.max_abs_diff < 1e-3


@pytest.mark.slow  # a search with a measured table and an end-to-end calibration (seconds)
def test_amc_with_a_latency_target_is_calibrated_end_to_end() -> None:
    from fxprune.pruners import AMCPruner

    torch.manual_seed(0)
    model = _Small().eval()
    pruner = AMCPruner(4, model, [{"total_sparsity": 1 - BUDGET, "op_types": ["Conv2d"]}], X,
                       lambda m: float(-m(X).abs().mean()), log_dir=None, target="latency", ddpg_params={"warmup": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner.compress()
    steps = pruner.summary()["latency"]["steps"]
    assert steps[0]["table_ratio"] <= BUDGET + 1e-9 and all(s["wall_ratio"] > 0 for s in steps)
    chosen = steps[pruner.summary()["latency"]["chosen_step"]]
    assert abs(chosen["wall_ratio"] / BUDGET - 1) == min(abs(s["wall_ratio"] / BUDGET - 1) for s in steps)


def test_autocompress_refuses_a_latency_target_with_the_fix() -> None:
    from fxprune.pruners import AutoCompressPruner

    with pytest.raises(ConfigError, match=r"sa_params\['target'\]='latency'.*target='latency'"):
        AutoCompressPruner(_Small().eval(), [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}], 2, {},
                           {"evaluator": lambda m: 1.0, "target": "latency"})
