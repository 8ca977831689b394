"""Iterative pruning: schedules, rounds with and without speedup, Lottery Ticket, NNI v2 and v1 forms, seeds."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import fxprune
from fxprune import schedules
from fxprune.errors import ConfigError, FxPruneError
from fxprune.nni import TorchEvaluator
from fxprune.pruners.iterative import _measure
from tests.realdata import digits_batches, digits_cnn, digits_data, digits_evaluator, digits_input

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
    model = digits_cnn()
    r = fxprune.iterate(model, {"pruner": "level", "sparsity": 0.8}, X, schedule="agp", iterations=2,
                        finetune=_quick_finetuner(10, lr=1e-2))
    _assert_level_budget(r.model, model, 0.8)
    assert r.rounds[-1].nonzero_params < r.rounds[1].nonzero_params < r.rounds[0].nonzero_params
    assert not any(n for n, _ in r.model.named_parameters() if "parametrizations" in n)


def _assert_level_budget(pruned: torch.nn.Module, dense: torch.nn.Module, sparsity: float) -> None:
    """At most (1 - sparsity) of each layer's original weights are non-zero: fine-tuning revived none. (The speedup
    pass also removes channels whose weights all became zero, so a layer can hold fewer.)"""
    for name in ("conv1", "conv2", "conv3", "conv4", "fc"):
        n0 = dense.get_parameter(f"{name}.weight").numel()
        assert (pruned.get_parameter(f"{name}.weight") != 0).sum().item() <= n0 - math.floor(sparsity * n0)


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
    with pytest.raises(FxPruneError, match="pruning_params for pruning_algorithm 'apoz'.*needs batches"):
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


# -- NNI v1 forms ----------------------------------------------------------------------------------

def test_v1_agp_epoch_schedule_matches_nni() -> None:
    got = [schedules.agp_epoch(e, 0.0, 0.8, 0, 10, 1) for e in range(11)]
    assert got == pytest.approx([0, .238, .424, .563, .663, .730, .770, .791, .799, .8, .8], abs=1e-3)
    assert schedules.agp_epoch(3, 0.0, 0.8, 0, 10, 2) is None and schedules.agp_epoch(0, 0.0, 0.8, 2, 10, 1) is None


def _train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    model.train()
    for i, (x, y) in enumerate(digits_batches()[0]):
        if i == steps:
            break
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_v1_agp_seed_snippet_level() -> None:
    model = digits_cnn()
    scope = {"model": model, "torch": torch}
    exec("""
from fxprune.pruners.v1 import AGPPruner
config_list = [{
    'initial_sparsity': 0,
    'final_sparsity': 0.8,
    'start_epoch': 0,
    'end_epoch': 10,
    'frequency': 1,
    'op_types': ['default']
}]
optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-4)
pruner = AGPPruner(model, config_list, optimizer, pruning_algorithm='level')
pruner.compress()
""", scope)
    pruner, optimizer = scope["pruner"], scope["optimizer"]
    seen = []
    for epoch in range(11):
        _train_steps(model, optimizer, 2)
        pruner.update_epoch(epoch)
        _train_steps(model, optimizer, 1)  # the masks follow the next step
        seen.append(1 - (model.conv2.weight != 0).float().mean().item())
    expected = [schedules.agp_epoch(e, 0, 0.8, 0, 10, 1) for e in range(11)]
    assert seen == pytest.approx(expected, abs=2e-3)
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert set(pruner.get_masks()) == {"conv1", "conv2", "conv3", "conv4", "fc"}
    result = pruner.speedup()
    assert result.report.max_abs_diff < 1e-4
    torch.testing.assert_close(result.model.eval()(X), model.eval()(X), rtol=1e-4, atol=1e-5)


def test_v1_agp_l1_masks_channels_of_your_model_and_speedup_removes_them() -> None:
    from fxprune.pruners.v1 import AGPPruner

    model = digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pruner = AGPPruner(model, [{"final_sparsity": 0.5, "end_epoch": 3, "op_types": ["Conv2d"]}], optimizer, "l1")
    assert pruner.compress() is model
    for epoch in range(4):
        pruner.update_epoch(epoch)
        _train_steps(model, optimizer, 2)
    zero_rows = (model.conv3.weight.flatten(1).abs().sum(1) == 0).sum().item()
    assert zero_rows == 32 and (model.bn3.weight == 0).sum().item() == 32
    result = pruner.speedup()
    assert result.model.get_parameter("conv3.weight").shape[0] == 32 and result.report.max_abs_diff < 1e-4
    torch.testing.assert_close(result.model.eval()(X), model.eval()(X), rtol=1e-4, atol=1e-5)


def test_v1_lottery_seed_snippet_resets_weights_optimizer_and_scheduler() -> None:
    model = digits_cnn()
    w0 = model.conv2.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)
    scope = {"model": model, "optimizer": optimizer}
    exec("""
from fxprune.pruners.v1 import LotteryTicketPruner
config_list = [{
    'prune_iterations': 5,
    'sparsity': 0.8,
    'op_types': ['default']
}]
pruner = LotteryTicketPruner(model, config_list, optimizer)
pruner.compress()
""", scope)
    pruner = scope["pruner"]
    pruner.lr_scheduler, pruner._scheduler_state = scheduler, scheduler.state_dict()
    sparsities = []
    for r in pruner.get_prune_iterations():
        pruner.prune_iteration_start()
        keep = (model.conv2.weight != 0) if r else torch.ones_like(w0, dtype=torch.bool)
        torch.testing.assert_close(model.conv2.weight, w0 * keep)
        assert not optimizer.state and optimizer.param_groups[0]["lr"] == 0.01
        sparsities.append(1 - keep.float().mean().item())
        _train_steps(model, optimizer, 2)
        scheduler.step()
    assert sparsities == pytest.approx([0] + schedules.rounds(schedules.lottery, 5, 0.8, warm_up=False), abs=2e-3)
    with pytest.raises(fxprune.InputError, match="6 rounds"):
        pruner.prune_iteration_start()


@pytest.mark.parametrize("entry, match", [
    ({"initial_sparsity": 0.1, "op_types": ["default"]}, "no 'final_sparsity'"),
    ({"sparsity": 0.5, "op_types": ["default"]}, "v1 AGP uses 'final_sparsity'"),
    ({"final_sparsity": 0.5, "start_epoch": 5, "end_epoch": 2, "op_types": ["default"]}, "end_epoch 2 < start_epoch"),
    ({"final_sparsity": 0.5, "frequency": 0, "op_types": ["default"]}, "frequency must be an integer >= 1"),
])
def test_v1_agp_bad_config(entry, match) -> None:
    from fxprune.pruners.v1 import AGPPruner

    model = digits_cnn()
    with pytest.raises(ConfigError, match=match):
        AGPPruner(model, [entry], torch.optim.SGD(model.parameters(), lr=0.1))


def test_v1_bad_calls() -> None:
    from fxprune.pruners.v1 import AGPPruner, LotteryTicketPruner

    model = digits_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = AGPPruner(model, [{"final_sparsity": 0.5, "op_types": ["default"]}], opt)  # no initial: fine
    for bad in (1.5, "3", True, -1):
        with pytest.raises(fxprune.InputError, match="update_epoch"):
            pruner.update_epoch(bad)
    with pytest.raises(fxprune.InputError, match="optimizer"):
        AGPPruner(model, [{"final_sparsity": 0.5, "op_types": ["default"]}], None)
    with pytest.raises(ConfigError, match="the same number"):
        LotteryTicketPruner(model, [{"prune_iterations": 2, "sparsity": 0.5, "op_types": ["Conv2d"]},
                                    {"prune_iterations": 3, "sparsity": 0.5, "op_types": ["Linear"]}], opt)
    with pytest.raises(ConfigError, match="'admm' is not one of level, l1"):
        AGPPruner(model, [{"final_sparsity": 0.5, "op_types": ["default"]}], opt, "admm")


# -- accuracy: AGP against one-shot at the same fine-tuning budget ---------------------------------

# (batch size, Adam learning rate, decay): the fixtures' fine-tuner (a short budget: 21 steps an epoch at a constant
# rate) and issue 9's protocol (84 steps an epoch, the rate decaying linearly to 0 over each call)
_SHORT = (64, 1e-3, None)
_DECAY = (16, 3e-3, "linear")


def _agp_and_one_shot(pruner: str, sparsity: float, seed: int, protocol: tuple) -> tuple[float, float]:
    """(AGP, one-shot) test accuracies from the same trained CNN: AGP in 5 rounds plus the warm-up, one epoch of
    fine-tuning per round; one-shot pruning to the same target, then as many epochs as AGP had rounds. Same data
    order (`seed`), batch size, optimizer and rate; both end at the same structure."""
    data, evaluator = digits_data(), digits_evaluator()
    batch_size, lr, decay = protocol
    train_b = fxprune.datasets.batches(data.x_train, data.y_train, batch_size, shuffle=True, seed=seed)

    def finetune(model: torch.nn.Module, epochs: int = 1) -> None:
        fxprune.training.train(model, train_b, epochs, lr, decay=decay, desc="fine-tuning")

    config = {"pruner": pruner, "sparsity": sparsity}
    torch.manual_seed(seed)
    r = fxprune.iterate(digits_cnn(), config, X, schedule="agp", iterations=5, finetune=finetune, progress=False)
    torch.manual_seed(seed)
    s = fxprune.prepare(digits_cnn(), config, X)
    s.apply(s.compute_masks())
    finetune(s.model, len(r.rounds))  # masked: removed weights stay removed
    one_shot = s.finish()
    if pruner == "level":  # channels whose weights all became zero are removed too: which ones depends on training
        _assert_level_budget(r.model, digits_cnn(), sparsity)
        _assert_level_budget(one_shot.model, digits_cnn(), sparsity)
    else:
        assert (r.rounds[-1].params, r.rounds[-1].macs) == (one_shot.report.params_after, one_shot.report.macs_after)
    return evaluator(r.model), evaluator(one_shot.model.eval())


@pytest.mark.slow
def test_agp_to_80_percent_of_the_weights_beats_one_shot_with_the_same_fine_tuning(record_property) -> None:
    agp, one_shot = _agp_and_one_shot("level", 0.8, 0, _SHORT)
    record_property("agp_accuracy", agp)
    record_property("one_shot_accuracy", one_shot)
    # 450 test images: one standard error near 0.95 is 0.01; measured AGP 0.98, one-shot 0.93. With issue 9's
    # longer protocol (_DECAY) one-shot catches up and both reach ~0.985 (docs/iterative.md): the gain of gradual
    # pruning is a gain at a short fine-tuning budget.
    assert agp > one_shot + 0.02, f"level 0.8: AGP {agp:.4f}, one-shot + 6 epochs {one_shot:.4f}"


@pytest.mark.slow
def test_agp_to_50_percent_of_the_channels_stays_near_one_shot_with_the_same_fine_tuning(record_property) -> None:
    pairs = [_agp_and_one_shot("l1", 0.5, seed, _DECAY) for seed in (0, 1, 2)]
    agp, one_shot = [a for a, _ in pairs], [b for _, b in pairs]
    record_property("agp_accuracy", agp)
    record_property("one_shot_accuracy", one_shot)
    mean_diff = (sum(agp) - sum(one_shot)) / len(pairs)
    # MEASURED, not issue 10's target met: at 50% of the channels AGP is not ahead of one-shot. Here the paired
    # mean is -0.0030 (per data order +0.0022, -0.0067, -0.0044); over 5 separately trained CNNs
    # (examples/agp_vs_oneshot.py) -0.0049, AGP ahead in none; on Fashion-MNIST, where neither is at ceiling,
    # one-shot + 6 epochs leads by 0.3-1.6 points under every protocol tried (docs/iterative.md): the final
    # structure fine-tunes for 6 epochs after one-shot pruning, for about 2 after AGP's last rounds. So this only
    # bounds the gap: the paired mean within 1 point (4.5 of 450 images, over two standard errors of the mean
    # above what was measured); it fails if AGP's rounds break, it does not claim AGP >= one-shot.
    assert mean_diff >= -0.01, f"l1 0.5: AGP {agp}, one-shot + 6 epochs {one_shot}, mean difference {mean_diff:+.4f}"


@pytest.mark.slow
def test_lottery_ticket_in_miniature_trains_back_to_dense_accuracy() -> None:
    import importlib.util
    from pathlib import Path

    from tests.realdata import load_or_skip

    load_or_skip(fxprune.datasets.mnist5k)
    path = Path(__file__).parent.parent / "examples" / "lottery_ticket.py"
    spec = importlib.util.spec_from_file_location("lottery_ticket", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.run(epochs=4, rounds=3)  # the benchmark (docs/iterative.md) uses 10 epochs, 5 rounds
    print(out)
    assert out["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert out["ticket"] >= out["dense"] - 0.01


# -- every NNI pruning_algorithm through pruning_params (issue 10) ------------------------------------

def _pruning_params(algorithm: str, model: torch.nn.Module) -> dict:
    """NNI's pruning_params for `algorithm`, in the three call forms: 2.6 (trainer), 2.9 (evaluator), fxprune (data)."""
    train_b = digits_batches()[0]
    nni26 = {"trainer": fxprune.training.make_trainer(train_b, 1),
             "traced_optimizer": torch.optim.SGD(model.parameters(), lr=1e-3), "criterion": F.cross_entropy}
    if algorithm == "apoz":
        return {**nni26, "training_batches": 5}
    if algorithm == "mean_activation":
        evaluator = TorchEvaluator(fxprune.training.make_trainer(train_b, 1),
                                   torch.optim.Adam(model.parameters(), lr=1e-3), F.cross_entropy)
        return {"evaluator": evaluator, "training_steps": 3}
    if algorithm == "taylorfo":
        return {"data": list(train_b)[:3], "loss": F.cross_entropy}
    if algorithm == "slim":
        return {**nni26, "training_epochs": 1, "scale": 1e-4}
    granularity = algorithm.partition(":")[2] or "fine-grained"
    return {**nni26, "iterations": 2, "training_epochs": 1, "granularity": granularity}


@pytest.mark.parametrize("speedup", [True, False], ids=["speedup", "masked"])
@pytest.mark.parametrize("algorithm", ["apoz", "mean_activation", "taylorfo", "slim", "admm",
                                       pytest.param("admm:coarse-grained", marks=pytest.mark.slow)])
def test_agp_schedules_every_nni_pruning_algorithm(tmp_path, algorithm, speedup) -> None:
    from fxprune.pruners import AGPPruner

    model = digits_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = algorithm.partition(":")[0]
    op_types = ["BatchNorm2d"] if name == "slim" else ["Conv2d"]
    seen: list[torch.Tensor] = []  # the round's masked (or pruned) model's outputs (the finetuner only looks)
    pruner = AGPPruner(model, [{"sparsity": 0.5, "op_types": op_types}], name, 3, str(tmp_path), True,
                       finetuner=lambda m: seen.append(m.eval()(X).detach()), speedup=speedup, dummy_input=X,
                       pruning_params=_pruning_params(algorithm, model), progress=False)
    pruner.compress()
    r = pruner.result
    assert [x.id for x in r.rounds] == [0, 1, 2, 3]
    assert [x.sparsity for x in r.rounds] == pytest.approx(schedules.rounds(schedules.agp, 3, 0.5))
    for x, masked in zip(r.rounds, seen):  # pruned == masked, every round
        pruned = fxprune.load(x.file).model.eval()
        torch.testing.assert_close(pruned(X), masked, rtol=1e-4, atol=1e-5)
        assert sum(p.numel() for p in pruned.parameters()) == x.params
        assert x.max_abs_diff < 1e-4
    final = r.model if speedup else fxprune.speedup(r.model, r.masks, X)
    convs = {n: final.get_parameter(f"{n}.weight") for n in ("conv1", "conv2", "conv3", "conv4")}
    sizes = {"conv1": 16, "conv2": 32, "conv3": 64, "conv4": 64}
    if algorithm == "admm":
        for n, w in convs.items():  # unstructured: half of each layer's weights are zero, shapes kept
            assert w.shape[0] == sizes[n] and (w == 0).sum().item() == w.numel() // 2
        assert r.rounds[-1].nonzero_params < r.rounds[1].nonzero_params < r.rounds[0].nonzero_params
    elif name == "slim":  # one threshold across the BatchNorm layers: half of all their channels
        total = sum(sizes.values())
        assert sum(w.shape[0] for w in convs.values()) == total - total // 2
        assert r.rounds[-1].params < r.rounds[1].params < r.rounds[0].params == r.params_before
    else:
        assert {n: w.shape[0] for n, w in convs.items()} == {n: k - k // 2 for n, k in sizes.items()}
        assert r.rounds[-1].params < r.rounds[1].params < r.rounds[0].params == r.params_before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # user's model untouched


def test_iterate_takes_fxprune_config_data_for_a_data_driven_round() -> None:
    train_b = digits_batches()[0]
    r = fxprune.iterate(digits_cnn(), {"pruner": "taylorfo", "sparsity": 0.5, "data": list(train_b)[:2],
                                       "loss": F.cross_entropy}, schedule="linear", iterations=2, progress=False)
    one_shot = fxprune.compile(digits_cnn(), {"pruner": "l1", "sparsity": 0.5}, X).report
    assert r.rounds[-1].params == one_shot.params_after  # the same channel counts, example inputs from the data
    assert r.example_inputs[0].shape[1:] == X.shape[1:]


def _evaluator_form(model: torch.nn.Module, calls: list, steps: int = 3, **kwargs) -> TorchEvaluator:
    trainer = fxprune.training.make_trainer(digits_batches()[0], 1)

    def training_func(model, optimizers, criterion, lr_schedulers=None, max_steps=None, max_epochs=None):
        trained = sum(p.numel() for g in optimizers.param_groups for p in g["params"])
        calls.append((max_steps, max_epochs, trained, sum(p.numel() for p in model.parameters())))
        trainer(model, optimizers, criterion, lr_schedulers, max_steps=max_steps or steps, max_epochs=max_epochs)

    return TorchEvaluator(training_func, torch.optim.Adam(model.parameters(), lr=1e-3), F.cross_entropy, **kwargs)


@pytest.mark.parametrize("cls_name", ["LinearPruner", "AGPPruner", "LotteryTicketPruner"])
def test_nni_29_evaluator_form(tmp_path, cls_name) -> None:
    import fxprune.pruners as pruners

    model = digits_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list = []
    scores = iter([0.9, 0.8, 0.7])
    evaluator = _evaluator_form(model, calls, dummy_input=X, evaluating_func=lambda m: {"default": next(scores)})
    pruner = getattr(pruners, cls_name)(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "l1", 2, str(tmp_path),
                                        False, evaluator, True, progress=False)  # no dummy_input: the evaluator's
    pruner.compress()
    r = pruner.result
    assert len(calls) == len(r.rounds) == (2 if cls_name == "LotteryTicketPruner" else 3)
    assert all(c[:2] == (None, None) and c[2] == c[3] for c in calls)  # "finetune", every parameter trained
    assert [x.score for x in r.rounds] == pytest.approx([0.9, 0.8, 0.7][:len(r.rounds)])
    one_shot = fxprune.compile(digits_cnn(), {"pruner": "l1", "rules": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]},
                               X).report
    assert r.rounds[-1].params == one_shot.params_after and r.rounds[-1].max_abs_diff < 1e-4
    assert pruner.get_best_result()[3] == r.rounds[-1].score
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_evaluator_form_fine_tunes_unstructured_weights_and_feeds_pruning_params(tmp_path) -> None:
    from fxprune.pruners import AGPPruner, LinearPruner

    model = digits_cnn()
    calls: list = []
    evaluator = _evaluator_form(model, calls, steps=5)
    pruner = LinearPruner(model, [{"sparsity": 0.8, "op_types": ["Conv2d"]}], "level", 2, str(tmp_path),
                          evaluator=evaluator, speedup=True, dummy_input=X, progress=False)
    pruner.compress()
    assert all(c[2] == c[3] for c in calls)  # the masked (parametrized) conv weights are trained too
    one_shot = fxprune.compile(digits_cnn(), {"pruner": "level", "rules": [{"sparsity": 0.8, "op_types": ["Conv2d"]}]},
                               X).report
    assert pruner.result.rounds[-1].nonzero_params == one_shot.nonzero_params_after  # zeros stayed zeros
    calls.clear()
    pruner = AGPPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], "taylorfo", 1, str(tmp_path),
                       evaluator=evaluator, speedup=True, dummy_input=X,
                       pruning_params={"evaluator": evaluator, "training_steps": 2}, progress=False)
    pruner.compress()
    assert [c[:2] for c in calls] == [(2, None), (None, None)] * 2  # per round: statistics, then fine-tuning


@pytest.mark.parametrize("algorithm, params, error, match", [
    ("apoz", {"training_batch": 5}, ConfigError, r"unknown key\(s\) \['training_batch'\].*training_batches"),
    ("l1", {"trainer": print}, ConfigError, r"\['trainer'\] for pruning_algorithm 'l1'; it takes: mode, dummy_input"),
    ("slim", {"scale": 1e-4}, FxPruneError, "pruning_params for pruning_algorithm 'slim'.*trainer"),
    ("taylorfo", {"trainer": print, "criterion": F.cross_entropy}, FxPruneError, "traced_optimizer"),
    ("admm", {"trainer": print, "traced_optimizer": (torch.optim.SGD, {"lr": 0.1}), "criterion": F.cross_entropy},
     ConfigError, "misses iterations, training_epochs"),
    ("apoz", {"data": [], "mode": "global"}, ConfigError, "mode='global' is not one of"),
    ("apoz", [("training_batches", 5)], ConfigError, "pruning_params must be a dict"),
])
def test_bad_pruning_params(algorithm, params, error, match) -> None:
    from fxprune.pruners import AGPPruner

    with pytest.raises(error, match=match):
        AGPPruner(digits_cnn(), [{"sparsity": 0.5, "op_types": ["Conv2d"]}], algorithm, 3, dummy_input=X,
                  pruning_params=params)


def test_bad_iterative_call_forms() -> None:
    from fxprune.pruners import AGPPruner

    model = digits_cnn()
    evaluator = _evaluator_form(model, [])
    cl = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
    with pytest.raises(FxPruneError, match="evaluator=TorchEvaluator.*or finetuner=, not both"):
        AGPPruner(model, cl, "l1", 3, evaluator=evaluator, finetuner=_quick_finetuner())
    with pytest.raises(FxPruneError, match="NNI 2.9's form, which has no finetuner"):
        AGPPruner(model, cl, "l1", 3, ".", False, _quick_finetuner(), evaluator=evaluator)
    with pytest.raises(FxPruneError, match="at most 3 arguments after keep_intermediate_result"):
        AGPPruner(model, cl, "l1", 3, ".", False, evaluator, True, {}, 1)
    with pytest.raises(ConfigError, match="'movement'.*cannot be scheduled"):
        fxprune.iterate(model, {"pruner": "movement", "sparsity": 0.5}, X)
