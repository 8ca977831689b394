"""Iterative pruning: schedules, rounds with and without speedup, Lottery Ticket, NNI v2 and v1 forms, seeds."""

from __future__ import annotations

import json
import math

import pytest
import torch

import fxprune
from fxprune import schedules
from fxprune.errors import ConfigError, FxPruneError
from fxprune.pruners.iterative import _measure
from tests.realdata import digits_batches, digits_cnn, digits_evaluator, digits_input

X = digits_input()


def _quick_finetuner(steps: int = 5, lr: float = 1e-3):
    train_b = digits_batches()[0]

    def finetuner(model: torch.nn.Module) -> None:
        fxprune.training.train(model, train_b, epochs=1, lr=lr, max_steps=steps)

    return finetuner


# -- schedules -------------------------------------------------------------------------------------

def test_linear_schedule_is_nni_worked_example() -> None:
    assert schedules.rounds(schedules.linear, 5, 0.5) == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert schedules.rounds(schedules.linear, 5, 0.5, warm_up=False) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_agp_schedule_matches_formula_and_nni_values() -> None:
    got = schedules.rounds(schedules.agp, 10, 0.8)
    assert got == pytest.approx([0.8 * (1 - (1 - i / 10) ** 3) for i in range(11)])
    assert got == pytest.approx([0, .2168, .3904, .5256, .6272, .7, .7488, .7784, .7936, .7992, .8], abs=1e-4)


def test_lottery_schedule_prunes_the_same_fraction_of_survivors_each_round() -> None:
    got = schedules.rounds(schedules.lottery, 5, 0.8, warm_up=False)
    assert got == pytest.approx([.2752, .4747, .6193, .7241, .8], abs=1e-4)
    left = [1.0] + [1 - s for s in got]
    per_round = [1 - b / a for a, b in zip(left, left[1:])]
    assert per_round == pytest.approx([1 - 0.2 ** (1 / 5)] * 5)


@pytest.mark.parametrize("fn", [schedules.linear, schedules.agp, schedules.lottery])
def test_schedules_start_at_zero_end_at_target_and_grow(fn) -> None:
    values = schedules.rounds(fn, 7, 0.6)
    assert values[0] == 0 and values[-1] == pytest.approx(0.6)
    assert all(b >= a for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        fn(8, 7, 0.6)


# -- foundation pieces the rounds rely on ---------------------------------------------------------

def test_level_rounds_in_one_session_count_what_is_already_removed() -> None:
    s = fxprune.prepare(digits_cnn(), {"pruner": "level", "sparsity": 0.8}, X)
    before = None
    for sp in (0.3, 0.6, 0.8):
        s.apply(s.compute_masks(config=[{"sparsity": sp, "op_types": ["default"]}]))
        keep = s.masks.weights["conv2.weight"]
        assert 1 - keep.float().mean().item() == pytest.approx(sp, abs=1e-3)
        if before is not None:
            assert not (keep & ~before).any()  # never revived
        before = keep.clone()


def test_a_session_on_a_finished_model() -> None:
    r = fxprune.compile(digits_cnn(), {"pruner": "l1", "sparsity": 0.3}, X)
    s = fxprune.prepare(r.model, {"pruner": "l1", "sparsity": 0.3}, X)
    assert [layer.name for layer in s.layers] == ["conv1", "conv2", "conv3", "conv4", "fc"]
    s.apply(s.compute_masks())
    r2 = s.finish()
    assert r2.report.params_before == r.report.params_after > r2.report.params_after


# -- fxprune.iterate -------------------------------------------------------------------------------

def test_iterate_with_speedup_is_smaller_and_verified_every_round() -> None:
    model = digits_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    r = fxprune.iterate(model, {"pruner": "l1", "sparsity": 0.5}, X, schedule="agp", iterations=3,
                        finetune=_quick_finetuner(), evaluate=digits_evaluator())
    assert [x.id for x in r.rounds] == [0, 1, 2, 3]
    assert [x.sparsity for x in r.rounds] == pytest.approx(schedules.rounds(schedules.agp, 3, 0.5))
    params = [x.params for x in r.rounds]
    assert params[0] == r.params_before and all(b < a for a, b in zip(params, params[1:]))
    assert all(x.max_abs_diff < 1e-4 for x in r.rounds)
    assert all(0 <= x.score <= 1 for x in r.rounds)
    one_shot = fxprune.compile(digits_cnn(), {"pruner": "l1", "sparsity": 0.5}, X).report
    assert (r.rounds[-1].params, r.rounds[-1].macs) == (one_shot.params_after, one_shot.macs_after)
    assert _measure(r.model, r.example_inputs)[:2] == (r.rounds[-1].params, r.rounds[-1].macs)
    task_id, best, masks, score, config_list = r.best_result()
    assert (task_id, masks, score) == (3, {}, r.rounds[-1].score) and best is r.model
    assert {e["op_names"][0] for e in config_list} == {"conv1", "conv2", "conv3", "conv4", "fc"}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # user's model untouched


def test_iterate_without_speedup_carries_masks_and_never_revives() -> None:
    seen = []

    def finetuner(model: torch.nn.Module) -> None:
        seen.append({n: b.clone() for n, b in model.named_buffers() if n.startswith("fxprune_mask_")})
        _quick_finetuner(3)(model)

    r = fxprune.iterate(digits_cnn(), {"pruner": "fpgm", "sparsity": 0.5}, X, schedule="linear", iterations=4,
                        finetune=finetuner, speedup=False)
    for a, b in zip(seen, seen[1:]):
        assert all((b[n] <= a[n]).all() for n in a)
    assert isinstance(r.masks, fxprune.Masks) and r.masks.structured
    pruned = fxprune.speedup(r.model, r.masks, X)
    assert sum(p.numel() for p in pruned.parameters()) == r.rounds[-1].params
    one_shot = fxprune.compile(digits_cnn(), {"pruner": "fpgm", "sparsity": 0.5}, X).report
    assert r.rounds[-1].params == one_shot.params_after


def test_level_with_speedup_keeps_zeros_through_fine_tuning() -> None:
    r = fxprune.iterate(digits_cnn(), {"pruner": "level", "sparsity": 0.8}, X, schedule="agp", iterations=2,
                        finetune=_quick_finetuner(10, lr=1e-2))
    one_shot = fxprune.compile(digits_cnn(), {"pruner": "level", "sparsity": 0.8}, X).report
    assert r.rounds[-1].nonzero_params == one_shot.nonzero_params_after
    w = r.model.get_parameter("conv2.weight")
    assert (w == 0).float().mean().item() == pytest.approx(0.8, abs=1e-3)
    assert not any(n for n, _ in r.model.named_parameters() if "parametrizations" in n)


def test_log_dir_rounds_json_and_saved_models(tmp_path) -> None:
    r = fxprune.iterate(digits_cnn(), {"pruner": "l2", "sparsity": 0.4}, X, schedule="linear", iterations=2,
                        finetune=_quick_finetuner(2), evaluate=digits_evaluator(), log_dir=tmp_path,
                        keep_intermediate_result=True)
    data = json.loads((tmp_path / "rounds.json").read_text())
    assert data["chosen"] == 2 and [x["id"] for x in data["rounds"]] == [0, 1, 2]
    assert [x["params"] for x in data["rounds"]] == [x.params for x in r.rounds]
    assert {"sparsity", "params", "macs", "score", "seconds", "config_list"} <= set(data["rounds"][0])
    for x in r.rounds:
        loaded = fxprune.load(x.file)
        assert sum(p.numel() for p in loaded.model.parameters()) == x.params
    torch.testing.assert_close(fxprune.load(r.rounds[-1].file).model(X), r.model(X))


def test_best_score_option_and_intermediate_files(tmp_path) -> None:
    scores = iter([0.9, 0.5, 0.7])
    r = fxprune.iterate(digits_cnn(), {"pruner": "l1", "sparsity": 0.5}, X, schedule="linear", iterations=2,
                        evaluate=lambda m: next(scores), best="score", log_dir=tmp_path)
    assert r.chosen.id == 0 and r.chosen.score == 0.9
    assert _measure(r.model, X)[0] == r.rounds[0].params
    assert sorted(p.name for p in tmp_path.glob("*.fxp")) == ["round_0.fxp", "round_2.fxp"]  # chosen + latest


def test_lottery_rewinds_weights_to_their_initial_values() -> None:
    model = digits_cnn()
    r = fxprune.iterate(model, {"pruner": "level", "sparsity": 0.8}, X, schedule="lottery", iterations=3,
                        finetune=_quick_finetuner(10, lr=1e-2), speedup=False, reset_weights=True)
    assert [x.id for x in r.rounds] == [1, 2, 3]
    keep = r.masks.weights["conv2.weight"]
    assert 1 - keep.float().mean().item() == pytest.approx(0.8, abs=1e-3)
    torch.testing.assert_close(r.model.conv2.weight, model.conv2.weight * keep)
    torch.testing.assert_close(r.model.bn2.running_mean, model.bn2.running_mean)


def test_lottery_with_speedup_gives_initial_weights_of_kept_channels() -> None:
    model = digits_cnn()
    r = fxprune.iterate(model, {"pruner": "l1", "sparsity": 0.5}, X, schedule="lottery", iterations=2,
                        finetune=_quick_finetuner(10, lr=1e-2), reset_weights=True)
    w0, w = model.conv1.weight, r.model.conv1.weight
    assert w.shape[0] == 8 and all(any(torch.equal(row, w0[j]) for j in range(16)) for row in w)


def test_progress_line_on_stderr(capsys) -> None:
    fxprune.iterate(digits_cnn(), {"pruner": "l1", "sparsity": 0.3}, X, schedule="linear", iterations=1,
                    evaluate=digits_evaluator(), progress=True)
    err = capsys.readouterr().err
    assert "linear pruning (l1) 2/2" in err and "sparsity=0.3" in err and "score=" in err
    fxprune.iterate(digits_cnn(), {"pruner": "l1", "sparsity": 0.3}, X, iterations=1, progress=False)
    assert capsys.readouterr().err == ""


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"iterations": 0}, "at least one round"),
    ({"schedule": "cubic"}, "linear, agp, lottery"),
    ({"schedule": lambda i, n, s: 1.1 * s * i / n}, "above the target"),
    ({"schedule": lambda i, n, s: 0.5 * s * i / n}, "not the target"),
    ({"best": "max"}, "latest"),
])
def test_bad_iterate_arguments(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        fxprune.iterate(digits_cnn(), {"pruner": "l1", "sparsity": 0.5}, X, **kwargs)


def test_inner_algorithm_errors() -> None:
    from fxprune.pruners import AGPPruner

    with pytest.raises(ConfigError, match="level, l1, l2, fpgm, slim, apoz"):
        AGPPruner(digits_cnn(), [{"sparsity": 0.5, "op_types": ["Conv2d"]}], pruning_algorithm="l3")
    with pytest.raises(ConfigError, match="not implemented in this build"):
        AGPPruner(digits_cnn(), [{"sparsity": 0.5, "op_types": ["Conv2d"]}], pruning_algorithm="apoz")
    with pytest.raises(ConfigError, match="total_iteration=0"):
        AGPPruner(digits_cnn(), [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "l1", 0)
    with pytest.raises(ConfigError, match="schedule goes in schedule="):
        fxprune.iterate(digits_cnn(), {"pruner": "agp", "sparsity": 0.5}, X)


@pytest.mark.parametrize("who", ["finetune", "evaluate"])
def test_a_raising_callable_names_the_round_and_keeps_the_rounds_done(tmp_path, who) -> None:
    model = digits_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def flaky(m: torch.nn.Module) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return 0.5

    with pytest.raises(FxPruneError, match=r"round 2: the (finetuner|evaluator) raised RuntimeError: out of memory"):
        fxprune.iterate(model, {"pruner": "l1", "sparsity": 0.5}, X, schedule="linear", iterations=3,
                        log_dir=tmp_path, **{who: flaky})
    data = json.loads((tmp_path / "rounds.json").read_text())
    assert [x["id"] for x in data["rounds"]] == [0, 1]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


# -- NNI v2 seed snippets (only the import line changed) -----------------------------------------

def _seed_v2(cls_name: str, extra: str) -> dict:
    model = digits_cnn()
    finetuner = _quick_finetuner(3)
    scope = {"model": model, "finetuner": finetuner}
    code = f"""
from fxprune.pruners import {cls_name}
config_list = [{{ 'sparsity': 0.8, 'op_types': ['Conv2d'] }}]
pruner = {cls_name}(model, config_list, pruning_algorithm='l1', total_iteration=10, finetuner=finetuner{extra})
pruner.compress()
_, model, masks, _, _ = pruner.get_best_result()
"""
    exec(code, scope)
    return scope


@pytest.mark.slow
@pytest.mark.parametrize("cls_name, extra", [("LinearPruner", ""), ("AGPPruner", ""),
                                             ("LotteryTicketPruner", ", reset_weight=True")])
def test_v2_seed_snippets(tmp_path, monkeypatch, cls_name, extra) -> None:
    monkeypatch.chdir(tmp_path)  # NNI's log_dir='.' default
    scope = _seed_v2(cls_name, extra)
    model, masks, pruner = scope["model"], scope["masks"], scope["pruner"]
    assert isinstance(model, torch.fx.GraphModule) and isinstance(masks, fxprune.Masks)
    assert pruner.compress is not None and pruner.result.rounds[-1].sparsity == pytest.approx(0.8)
    n_rounds = 10 if cls_name == "LotteryTicketPruner" else 11
    assert len(pruner.result.rounds) == n_rounds
    conv = fxprune.speedup(model, masks, X).get_parameter("conv2.weight")
    assert conv.shape[0] == 32 - math.floor(0.8 * 32)
    assert (tmp_path / pruner.log_dir / "rounds.json").exists()
