"""Search pruners (SA, NetAdapt, Sensitivity, AMC; v2 and v1 forms) on the digits CNN: the seeds' snippets
with only their imports changed, budgets met, histories written, seeds reproducible, bad input refused."""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing

import numpy as np
import pytest
import torch

from fxprune import datasets, training
from fxprune.errors import FxPruneError
from fxprune.pruners import AMCPruner, SimulatedAnnealingPruner, v1
from tests.realdata import (
    digits_batches,
    digits_cnn,
    digits_data,
    digits_evaluator,
    digits_finetuner,
    digits_input,
)


def _kept_channels(masks, model) -> dict[str, int]:
    return {name: int(m.weight.shape[0]) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


@pytest.mark.slow
def test_sa_v2_seed_snippet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, evaluator, finetuner = digits_cnn(), digits_evaluator(), digits_finetuner(1)
    # the v2 seed, imports changed, cool_down_rate raised to shrink the search
    config_list = [{'sparsity': 0.8, 'op_types': ['Conv2d']}]
    pruner = SimulatedAnnealingPruner(model, config_list, pruning_algorithm='l1', evaluator=evaluator,
                                      cool_down_rate=0.5, finetuner=finetuner)
    pruner.compress()
    _, model, masks, _, _ = pruner.get_best_result()
    task_id, _, _, score, cfg = pruner.get_best_result()
    assert pruner.result.report.param_reduction >= 0.8 - 1e-6
    assert pruner.result.report.param_reduction < 0.85  # scaled to the budget, not far past it
    assert score == pytest.approx(digits_evaluator()(model))  # the fine-tuned weights of the best candidate
    assert {e["op_names"][0] for e in cfg} <= {"conv1", "conv2", "conv3", "conv4"}
    history = json.loads((tmp_path / "search_history.json").read_text())
    assert history["best_id"] == task_id and len(history["history"]) == history["candidates"] >= 4
    assert 0 <= history["acceptance_rate"] <= 1
    assert (tmp_path / "search_history.csv").read_text().count("\n") == history["candidates"] + 1


def test_sa_energy_is_normalised_and_seeded(tmp_path):
    ev = digits_evaluator()
    runs = []
    for d in ("a", "b"):
        p = SimulatedAnnealingPruner(digits_cnn(), [{"total_sparsity": 0.3, "op_types": ["Conv2d"]}], evaluator=ev,
                                     cool_down_rate=0.5, log_dir=tmp_path / d, target="flops", seed=3)
        p.compress()
        runs.append(json.loads((tmp_path / d / "search_history.json").read_text()))
    a, b = runs
    assert [r["score"] for r in a["history"]] == [r["score"] for r in b["history"]]
    assert a["best"] == b["best"]
    current = a["history"][0]["score"]
    for row in a["history"][1:]:  # p = exp(-dE / T), dE in basis points of the dense score
        drop = 1e4 * (current - row["score"]) / a["dense_score"]
        expected = 1.0 if drop <= 0 else math.exp(-drop / row["temperature"])
        assert row["p_accept"] == pytest.approx(expected)
        assert row["resource_ratio"] <= 0.7 + 1e-9
        if row["accepted"]:
            current = row["score"]


@pytest.mark.slow
def test_netadapt_v1_seed_snippet(tmp_path):
    model, evaluator = digits_cnn(), digits_evaluator()
    short_term_fine_tuner = digits_finetuner(1)
    config_list = [{
        'sparsity': 0.5,
        'op_types': ['Conv2d']
    }]
    pruner = v1.NetAdaptPruner(model, config_list, short_term_fine_tuner=short_term_fine_tuner, evaluator=evaluator,
                               base_algo='l1', experiment_data_dir=str(tmp_path), sparsity_per_iteration=0.15)
    out = pruner.compress()
    reduction = pruner.result.report.param_reduction
    assert 0.5 - 1e-6 <= reduction < 0.56
    history = json.loads((tmp_path / "search_history.json").read_text())
    iterations = {r["iteration"] for r in history["history"]}
    assert len(iterations) >= 3  # 0.15 steps to 0.5: at least 3 iterations, then it stops
    assert history["best"]["score"] == pytest.approx(evaluator(out))
    assert sum(r["accepted"] is True for r in history["history"]) == len(iterations)


@pytest.mark.slow
def test_sensitivity_v1_seed_snippet_and_op_names(tmp_path):
    model, evaluator, fine_tuner = digits_cnn(), digits_evaluator(), digits_finetuner(1)
    config_list = [{'sparsity': 0.3, 'op_types': ['Conv2d'], 'op_names': ['conv3', 'conv4']}]
    pruner = v1.SensitivityPruner(model, config_list, finetuner=fine_tuner, evaluator=evaluator,
                                  checkpoint_dir=str(tmp_path))
    # eval_args and finetune_args are the parameters passed to the evaluator and finetuner respectively
    out = pruner.compress(eval_args=[model], finetune_args=[model])
    assert pruner.result.report.param_reduction >= 0.3 - 1e-6
    assert {name for c in pruner.config_list_result for name in c["op_names"]} <= {"conv3", "conv4"}
    assert set(pruner.sensitivities[0]) == {"conv3", "conv4"}  # conv1/conv2 are not analysed
    saved = torch.load(tmp_path / "masks.pth")
    assert set(saved) <= {"conv3", "conv4", "bn3", "bn4", "fc"}
    assert json.loads((tmp_path / "config_list.json").read_text()) == pruner.config_list_result
    assert evaluator(out) > 0.9
    assert all(p.shape == q.shape for p, q in zip(out.parameters(), model.parameters()))  # masked, not shrunk


def test_amc_v2_seed_snippet_and_seed(tmp_path):
    evaluator, dummy_input = digits_evaluator(), digits_input()
    results = []
    for d in ("a", "b"):
        model = digits_cnn()
        config_list = [{'op_types': ['Conv2d'], 'total_sparsity': 0.5, 'max_sparsity_per_layer': 0.8}]
        pruner = AMCPruner(8, model, config_list, dummy_input, evaluator, log_dir=tmp_path / d,
                           ddpg_params={"warmup": 3, "bsize": 8, "hidden1": 32, "hidden2": 32})
        pruner.compress()
        results.append(pruner.get_best_result())
        assert pruner.result.report.mac_reduction >= 0.5 - 1e-6
        rewards = pruner.summary()["rewards"]
        assert len(rewards) == 8 and all(r is not None for r in rewards)
        assert all(e["sparsity"] <= 0.8 for e in results[-1][4])
    assert results[0][4] == results[1][4] and results[0][3] == results[1][3]


def test_amc_v1_seed_snippet(tmp_path):
    model = digits_cnn()
    _, val_loader = digits_batches()

    def evaluator(val_loader, model):
        return 100 * digits_evaluator()(model)

    config_list = [{
        'op_types': ['Conv2d', 'Linear']
    }]
    pruner = v1.AMCPruner(model, config_list, evaluator, val_loader, flops_ratio=0.5, train_episode=5, warmup=2,
                          output_dir=str(tmp_path), hidden1=16, hidden2=16, bsize=4)
    pruner.compress()
    assert pruner.result.report.mac_reduction >= 0.5 - 1e-6
    kept = _kept_channels(None, pruner.result.model)
    assert all(n % 8 == 0 for n in kept.values())  # channel_round=8
    assert all(n >= 0.2 * c for n, c in zip(kept.values(), (16, 32, 64, 64)))  # lbound=0.2
    run = tmp_path / "mobilenet_cifar10_r0.5_search"
    assert (run / "best_mask.pth").exists() and (run / "search_history.json").exists()


@pytest.mark.parametrize("kwargs, where", [
    ({"cool_down_rate": 1.5}, "cool_down_rate"),
    ({"start_temperature": 10, "stop_temperature": 20}, "start_temperature"),
    ({"pruning_algorithm": "level"}, "pruning_algorithm"),
    ({"target": "watts"}, "target='watts'.*'latency'"),
])
def test_sa_bad_arguments(kwargs, where):
    calls = []

    def evaluator(model):
        calls.append(1)
        return 0.5

    with pytest.raises(FxPruneError, match=where):
        SimulatedAnnealingPruner(digits_cnn(), [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}], evaluator=evaluator,
                                 log_dir=None, **kwargs).compress()
    assert len(calls) <= 1  # refused before the search (at most the dense score)


def test_bad_budget_and_evaluators():
    cfg = [{"total_sparsity": 0.9, "op_types": ["Conv2d"], "max_sparsity_per_layer": 0.2}]
    with pytest.raises(FxPruneError, match="cannot be met.*lower total_sparsity"):
        SimulatedAnnealingPruner(digits_cnn(), cfg, evaluator=digits_evaluator(), log_dir=None).compress()
    ok = [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}]
    with pytest.raises(FxPruneError, match="evaluator returned nan"):
        SimulatedAnnealingPruner(digits_cnn(), ok, evaluator=lambda m: float("nan"), log_dir=None).compress()
    with pytest.raises(FxPruneError, match="evaluator returned str"):
        SimulatedAnnealingPruner(digits_cnn(), ok, evaluator=lambda m: "good", log_dir=None).compress()
    with pytest.raises(FxPruneError, match="warmup"):
        AMCPruner(4, digits_cnn(), ok, digits_input(), digits_evaluator(), ddpg_params={"warmup": 4})


def test_interrupted_search_keeps_history(tmp_path):
    ev = digits_evaluator()
    calls = []

    def evaluator(model):
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return ev(model)

    with pytest.raises(KeyboardInterrupt):
        SimulatedAnnealingPruner(digits_cnn(), [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}], evaluator=evaluator,
                                 log_dir=tmp_path).compress()
    history = json.loads((tmp_path / "search_history.json").read_text())
    assert len(history["history"]) == 3  # the dense score, then three candidates before the interruption
    assert np.isfinite([r["score"] for r in history["history"]]).all()


# -- executors: candidates evaluated in workers give the serial run's results --------------------------
class _Evaluate:
    """A picklable, stateless evaluator (test accuracy on the digits; unshuffled batches)."""

    def __call__(self, model):
        return training.evaluate(model, digits_batches()[1])


class _Finetune:
    """A picklable finetuner that does the same on every call: a fresh shuffled loader with seed 0 each time
    (a loader whose order advances per pass would make serial and parallel runs differ)."""

    def __call__(self, model):
        data = digits_data()
        training.train(model, datasets.batches(data.x_train, data.y_train, 64, shuffle=True, seed=0), epochs=1)


def _runs(make, executor):
    pruner = make(executor)
    pruner.compress()
    return [(c.phase, c.score, c.resource_ratio, c.sparsities, c.extra) for c in pruner.history], \
        pruner.get_best_result()[4]


def _executor_cases():
    def netadapt(executor):
        return v1.NetAdaptPruner(digits_cnn(), [{"sparsity": 0.2, "op_types": ["Conv2d"]}], _Finetune(), _Evaluate(),
                                 sparsity_per_iteration=0.1, experiment_data_dir=None, executor=executor)

    def sensitivity(executor):
        return v1.SensitivityPruner(digits_cnn(), [{"sparsity": 0.3, "op_types": ["Conv2d"]}], _Evaluate(),
                                    executor=executor)

    def sa(executor):
        return SimulatedAnnealingPruner(digits_cnn(), [{"total_sparsity": 0.4, "op_types": ["Conv2d"]}],
                                        evaluator=_Evaluate(), cool_down_rate=0.3, log_dir=None, seed=2,
                                        executor=executor)

    return {"netadapt": netadapt, "sensitivity": sensitivity, "sa": sa}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_executor_gives_the_serial_results(kind):
    cases = _executor_cases()
    if kind == "thread":
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    else:  # spawn: a forked child would inherit torch's thread pools mid-state
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
        cases = {k: cases[k] for k in ("netadapt", "sensitivity")}
    with pool:
        for name, make in cases.items():
            serial, parallel = _runs(make, None), _runs(make, pool)
            assert parallel == serial, name
            assert len(serial[0]) >= 3


def test_executor_argument_checked():
    with pytest.raises(FxPruneError, match="concurrent.futures.Executor"):
        SimulatedAnnealingPruner(digits_cnn(), [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}],
                                 evaluator=digits_evaluator(), executor=4)


def test_sensitivity_waves_record_the_serial_order():
    """The analysis runs unit after unit in the history (ids in order, each unit's sparsities rising) and stops a
    unit at its first drop beyond the threshold, as a serial analysis does."""
    pruner = v1.SensitivityPruner(digits_cnn(), [{"sparsity": 0.2, "op_types": ["Conv2d"]}], digits_evaluator(),
                                  acc_drop_threshold=0.02)
    pruner.compress()
    rows = [c for c in pruner.history if c.phase.startswith("analysis 0")]
    units = [r.extra["unit"] for r in rows]
    assert units == sorted(units, key=units.index)  # contiguous per unit
    start = digits_evaluator()(digits_cnn())
    for curve in pruner.sensitivities[0].values():
        scores = list(curve.values())
        assert all(start - s <= 0.02 for s in scores[:-1])  # every step but the last kept going
        assert len(scores) == 9 or start - scores[-1] > 0.02
