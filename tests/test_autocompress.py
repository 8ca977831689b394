"""AutoCompress (v2 and v1 forms) on the digits CNN: the seeds' snippets with only their imports changed (counts
shrunk), the lottery schedule and the budget met, rounds and SA histories on disk, seeds reproducible, bad input
refused before any work, an evaluator raising mid-search keeps what was done on disk."""

from __future__ import annotations

import json

import pytest
import torch

from fxprune import nni
from fxprune.errors import FxPruneError
from fxprune.pruners import AutoCompressPruner, v1
from fxprune.schedules import lottery
from tests.realdata import digits_batches, digits_cnn, digits_evaluator, digits_finetuner, digits_input, digits_trainer

SA_FAST = {"cool_down_rate": 0.5, "start_temperature": 100, "stop_temperature": 40}


def _v2(model, log_dir, total_iteration=2, **sa):
    trainer, criterion = digits_trainer(), torch.nn.CrossEntropyLoss()
    evaluator, finetuner = digits_evaluator(), digits_finetuner(1)
    # the v2 seed, imports changed; counts shrunk (iterations, total_iteration, the annealing)
    traced_optimizer = nni.trace(torch.optim.Adam)(model.parameters())
    config_list = [{'sparsity': 0.8, 'op_types': ['Conv2d']}]
    admm_params = {
        'trainer': trainer,
        'traced_optimizer': traced_optimizer,
        'criterion': criterion,
        'iterations': 2,
        'training_epochs': 1
    }
    sa_params = {
        'evaluator': evaluator, **SA_FAST, **sa
    }
    pruner = AutoCompressPruner(model, config_list, total_iteration, admm_params, sa_params, finetuner=finetuner,
                                log_dir=log_dir, dummy_input=digits_input())
    pruner.compress()
    return pruner


@pytest.mark.slow
def test_v2_seed_snippet_budget_schedule_history_and_seed(tmp_path):
    model = digits_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = _v2(model, tmp_path / "a")
    _, model_out, masks, score, config_list = pruner.get_best_result()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched
    dense_params = sum(p.numel() for p in digits_cnn().parameters())
    pruned_params = sum(p.numel() for p in pruner.result.model.parameters())
    assert 1 - pruned_params / dense_params >= 0.8 - 1e-6  # the budget, over the whole model
    assert pruner.rounds[0]["resource_ratio"] <= 1 - lottery(1, 2, 0.8) + 1e-9  # round 1 meets its schedule step
    assert pruner.rounds[0]["relative_sparsity"] == pytest.approx(lottery(1, 2, 0.8))
    assert score is None  # no evaluator given to AutoCompress itself
    assert {name for e in config_list for name in e["op_names"]} <= {"conv1", "conv2", "conv3", "conv4"}
    x = digits_input(32)
    assert torch.allclose(model_out(x), pruner.result.model(x), atol=1e-4)  # masked (speedup=False) == pruned
    assert masks.structured
    assert digits_evaluator()(pruner.result.model) > 0.5
    run = next((tmp_path / "a").iterdir())
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["id"] for r in rounds["rounds"]] == [1, 2]
    for i in (1, 2):
        history = json.loads((run / f"round_{i}" / "SA" / "search_history.json").read_text())
        assert history["candidates"] == rounds["rounds"][i - 1]["sa_candidates"] >= 2
        assert history["budget"] == pytest.approx(rounds["rounds"][i - 1]["relative_sparsity"])
    assert sorted(p.name for p in run.glob("round_*.fxp")) == ["round_2.fxp"]  # keep_intermediate_result=False

    again = _v2(digits_cnn(), tmp_path / "b")
    assert again.get_best_result()[4] == config_list
    assert [r["params"] for r in again.rounds] == [r["params"] for r in pruner.rounds]


@pytest.mark.slow
def test_v1_seed_snippet(tmp_path):
    model = digits_cnn()
    batches = [b for _, b in zip(range(6), digits_batches()[0])]
    evaluator = digits_evaluator()
    dummy_input = digits_input()

    def trainer(model, optimizer, criterion, epoch, callback):
        model.train()
        for x, y in batches:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            callback()
            optimizer.step()

    # the v1 seed, imports changed (NNI's line imports ADMMPruner, a typo), counts shrunk
    config_list = [{
        'sparsity': 0.5,
        'op_types': ['Conv2d']
    }]
    pruner = v1.AutoCompressPruner(
        model, config_list, trainer=trainer, evaluator=evaluator,
        dummy_input=dummy_input, num_iterations=2, optimize_mode='maximize', base_algo='l1',
        cool_down_rate=0.5, stop_temperature=40, admm_num_iterations=2, admm_training_epochs=1,
        experiment_data_dir=str(tmp_path))
    out = pruner.compress()
    dense_params = sum(p.numel() for p in digits_cnn().parameters())
    assert 1 - sum(p.numel() for p in out.parameters()) / dense_params >= 0.5 - 1e-6
    assert out.conv1.out_channels < 16 or out.conv4.out_channels < 64
    rounds = json.loads((tmp_path / "rounds.json").read_text())["rounds"]
    assert [r["score"] for r in rounds] == [pytest.approx(s) for s in (rounds[0]["score"], evaluator(out))]
    assert (tmp_path / "round_2" / "SA" / "search_history.csv").exists()


def _admm(model=None):
    model = digits_cnn() if model is None else model
    return {"trainer": digits_trainer(), "traced_optimizer": torch.optim.Adam(model.parameters()),
            "criterion": torch.nn.CrossEntropyLoss(), "iterations": 1, "training_epochs": 1}


@pytest.mark.parametrize("args, where", [
    ({"total_iteration": 0}, "total_iteration=0"),
    ({"sa_params": {"evaluator": digits_evaluator(), "temprature": 5}},
     r"sa_params has unknown key\(s\) \['temprature'\]"),
    ({"sa_params": {"cool_down_rate": 0.5}}, r"sa_params\['evaluator'\]"),
    ({"sa_params": {"evaluator": digits_evaluator(), "pruning_algorithm": "level"}}, "pruning_algorithm='level'"),
    ({"admm_params": {"iterations": 1}}, "training_epochs"),
    ({"admm_params": {**_admm(), "granularity": "fine-grained"}}, "coarse-grained"),
    ({"admm_params": {**_admm(), "lr": 1}}, r"admm_params has unknown key\(s\) \['lr'\]"),
])
def test_bad_arguments_refused_before_any_work(args, where):
    calls = []

    def evaluator(model):
        calls.append(1)
        return 0.5

    kwargs = {"total_iteration": 2, "admm_params": _admm(), "sa_params": {"evaluator": evaluator}, **args}
    with pytest.raises(FxPruneError, match=where):
        AutoCompressPruner(digits_cnn(), [{"sparsity": 0.5, "op_types": ["Conv2d"]}], log_dir=None,
                           dummy_input=digits_input(), **kwargs)
    assert not calls


@pytest.mark.slow
def test_evaluator_raising_in_round_two_keeps_round_one_on_disk(tmp_path):
    ev = digits_evaluator()
    round_two_calls = []

    def finetuner(model):  # runs once, at the end of round 1
        round_two_calls.append(0)

    def evaluator(model):
        if round_two_calls:
            round_two_calls.append(1)
            if len(round_two_calls) > 3:  # round 2: the dense score and SA's first candidate, then the failure
                raise RuntimeError("evaluation server went away")
        return ev(model)

    model = digits_cnn()
    admm = {**_admm(model), "trainer": lambda model, optimizer, criterion: _few_steps(model, optimizer, criterion)}
    sa = {"evaluator": evaluator, "cool_down_rate": 0.3, "stop_temperature": 40}
    pruner = AutoCompressPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], 2, admm, sa,
                                log_dir=tmp_path, dummy_input=digits_input(), finetuner=finetuner)
    with pytest.raises(FxPruneError, match="round 2: the simulated annealing raised RuntimeError.*rounds.json"):
        pruner.compress()
    run = next(tmp_path.iterdir())
    rounds = json.loads((run / "rounds.json").read_text())["rounds"]
    assert [r["id"] for r in rounds] == [1] and (run / "round_1.fxp").exists()
    history = json.loads((run / "round_2" / "SA" / "search_history.json").read_text())
    assert len(history["history"]) == 1 and all(r["score"] > 0 for r in history["history"])
    assert pruner.get_best_result()[0] == 1  # the rounds done stay usable


def _few_steps(model, optimizer, criterion):
    model.train()
    for _, (x, y) in zip(range(3), digits_batches()[0]):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
