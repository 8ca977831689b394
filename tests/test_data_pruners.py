"""Data-driven pruners (issue 9, part A): Taylor FO, Activation APoZ / Mean, Slim; their NNI call forms
(v2.6 trainer form, v2.9 evaluator form) and the `fxprune.compile` configs; the v1 forms: tests/test_v1_inplace.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxprune
from fxprune.errors import ConfigError, FxPruneError, InputError
from fxprune.importance import CRITERIA
from fxprune.models import small_cnn
from fxprune.pruners import (
    ActivationAPoZRankPruner,
    ActivationMeanRankPruner,
    ADMMPruner,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    SlimPruner,
    TaylorFOWeightPruner,
    TorchEvaluator,
)
from fxprune.training import evaluate
from tests.realdata import (
    digits_batches,
    digits_cnn,
    digits_cnn_accuracy,
    digits_input,
    digits_trainer,
)

CONV50 = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]


def trace(cls):
    """What `nni.trace(cls)` does for an optimizer: a real instance that remembers its class and arguments."""

    def make(*args, **kwargs):
        obj = cls(*args, **kwargs)
        obj.trace_symbol, obj.trace_args, obj.trace_kwargs = cls, list(args), dict(kwargs)
        return obj

    return make


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _kept(masks) -> dict[int, int]:
    return {gid: int(keep.sum()) for gid, keep in masks.keep.items()}


# -- hand-built model: scores equal hand-computed values --------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


def _tiny() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = _Tiny()
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([1.0, -1.0, 0.5, 2.0]).view(4, 1, 1, 1))
        model.conv.bias.copy_(torch.tensor([0.0, 0.5, -0.2, -1.0]))
    batches = [(torch.randn(5, 1, 3, 3), torch.randint(0, 3, (5,))) for _ in range(3)]
    return model, batches


def test_taylor_scores_equal_hand_computed_values():
    model, batches = _tiny()
    ref = copy.deepcopy(model)
    own = torch.zeros(4, dtype=torch.float64)  # NNI's normal mode: the conv weight's filter
    group = torch.zeros(4, dtype=torch.float64)  # dependency-aware: + the bias and the fc's input columns
    for x, y in batches[:2]:
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        w, b, fc = ref.conv.weight, ref.conv.bias, ref.fc.weight
        filt = ((w * w.grad).double() ** 2).sum((1, 2, 3))
        own += filt
        group += filt + (b * b.grad).double() ** 2 + ((fc * fc.grad).double() ** 2).sum(0)
    session = fxprune.prepare(model, {"pruner": "taylorfo", "sparsity": 0.5}, batches[0][0])
    stats = session.collect(batches, ("gradients",), F.cross_entropy, batches=2)
    layer = session.layers[0]
    g = session.graph.groups[session.graph.group_of[layer.slot]]
    assert stats.backward == 2
    torch.testing.assert_close(CRITERIA["taylor"].fn(session.graph, g, stats, None), group)
    torch.testing.assert_close(CRITERIA["taylor"].fn(session.graph, g, stats, {layer.slot}), own)
    for mode, score in (("dependency_aware", group), ("normal", own)):
        pruner = TaylorFOWeightPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], data=batches,
                                      loss=F.cross_entropy, training_batches=2, mode=mode)
        _, masks = pruner.compress()
        keep = (masks["conv"]["weight"].flatten() != 0).numpy()  # NNI's masks dict
        assert set(keep.nonzero()[0].tolist()) == set(torch.argsort(score, descending=True)[:2].tolist()), mode
        pruner._unwrap_model()


def test_apoz_and_mean_scores_equal_hand_computed_values():
    model, batches = _tiny()
    acts = torch.cat([torch.relu(model.conv(x)).detach() for x, _ in batches])  # (15, 4, 3, 3)
    per_channel = acts.transpose(0, 1).reshape(4, -1)
    apoz_keep = 1 - (per_channel == 0).double().mean(1)
    mean = per_channel.double().mean(1)
    session = fxprune.prepare(model, {"pruner": "apoz", "sparsity": 0.5}, batches[0][0])
    stats = session.collect(batches, ("activations",))
    group = session.graph.groups[session.graph.group_of[session.layers[0].slot]]
    torch.testing.assert_close(CRITERIA["apoz"].fn(session.graph, group, stats, None), apoz_keep)
    torch.testing.assert_close(CRITERIA["mean_activation"].fn(session.graph, group, stats, None), mean)
    for cls, score in ((ActivationAPoZRankPruner, apoz_keep), (ActivationMeanRankPruner, mean)):
        for mode in ("dependency_aware", "normal"):
            pruner = cls(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], data=batches, mode=mode,
                         dummy_input=batches[0][0])
            pruner.compress()
            pruner._unwrap_model()
            with torch.no_grad():
                model.conv.weight.copy_(torch.tensor([1.0, -1.0, 0.5, 2.0]).view(4, 1, 1, 1))
                model.conv.bias.copy_(torch.tensor([0.0, 0.5, -0.2, -1.0]))
            keep = next(iter(pruner.session.masks.keep.values()))
            assert set(keep.nonzero()[0].tolist()) == set(torch.argsort(score, descending=True)[:2].tolist()), mode


# -- seed snippets on the digits CNN (imports changed only) ------------------------------------------------------
@pytest.fixture(scope="module")
def _trainer():
    return digits_trainer()  # one for the module: its shuffled batches go on from test to test


@pytest.fixture
def digits(_trainer):
    return digits_cnn(), _trainer, F.cross_entropy  # a fresh model: NNI's compress() trains and masks it


@pytest.mark.slow
@pytest.mark.parametrize("cls", [TaylorFOWeightPruner, ActivationAPoZRankPruner, ActivationMeanRankPruner])
def test_v2_seed_snippets_run_and_prune_half_the_channels(digits, cls):
    model, trainer, criterion = digits
    before = _state(model)
    traced_optimizer = trace(torch.optim.Adam)(model.parameters())
    config_list = [{"sparsity": 0.8, "op_types": ["Conv2d"]}]
    pruner = cls(model, config_list, trainer, traced_optimizer, criterion, training_batches=20)
    returned, masks = pruner.compress()
    assert returned is model and not torch.equal(model.fc.weight, before["fc.weight"])  # NNI: trained in place
    assert {name: int((m["weight"].flatten(1) != 0).any(1).sum()) for name, m in masks.items()} == {
        "conv1": 4, "conv2": 7, "conv3": 13, "conv4": 13}  # 80% of 16, 32, 64, 64 (floor), NNI's masks dict
    assert _kept(pruner.session.masks) == {4: 4, 9: 7, 16: 13, 21: 13}
    with torch.no_grad():  # the user's model masked in place: the trained weights, masked
        torch.testing.assert_close(model.conv2.weight, pruner.masked_graph.conv2.weight * masks["conv2"]["weight"])
    result = pruner.session.finish()
    assert result.report.max_abs_diff < 1e-4  # pruned == masked after training


@pytest.mark.slow
def test_slim_seed_snippet_with_sparsity_key_in_global_mode(digits):
    model, trainer, criterion = digits
    traced_optimizer = trace(torch.optim.Adam)(model.parameters())
    config_list = [{"sparsity": 0.8, "op_types": ["BatchNorm2d"]}]
    pruner = SlimPruner(model, config_list, trainer, traced_optimizer, criterion, training_epochs=1)
    _, nni_masks = pruner.compress()
    assert sorted(nni_masks) == ["bn1", "bn2", "bn3", "bn4"] and set(nni_masks["bn1"]) == {"weight", "bias"}
    masks, masked_model = pruner.session.masks, pruner.masked_graph
    kept = _kept(masks)
    gammas = torch.cat([masked_model.get_parameter(f"bn{i}.weight").detach().abs() for i in range(1, 5)])
    keep = torch.cat([torch.as_tensor(masks.keep[g]) for g in (4, 9, 16, 21)])
    assert torch.equal(keep, torch.cat([nni_masks[f"bn{i}"]["weight"] != 0 for i in range(1, 5)]))
    # one threshold over all 176 scales; a layer it would empty keeps one channel (at most 4 kept below it)
    assert 176 - int(0.8 * 176) <= sum(kept.values()) <= 176 - int(0.8 * 176) + 4
    assert int((gammas[keep] < gammas[~keep].max()).sum()) <= 4
    assert pruner.session.finish().report.max_abs_diff < 1e-4


def _fine_tune_one_epoch(model: nn.Module) -> None:
    """Issue 9's "one epoch of fine-tuning": batch 16, Adam 3e-3 decaying linearly to 0 over the epoch (as
    `examples/data_pruners.py`)."""
    fxprune.training.train(model, digits_batches(16)[0], 1, 3e-3, decay="linear", desc="fine-tuning")


@pytest.mark.slow
def test_structured_pruners_at_half_within_two_points(record_property):
    """Issue 9: every structured pruner at 50% of the conv channels + one epoch of fine-tuning ends within 2 points
    of the dense accuracy (0.982) on the digits CNN. Seed 0 of `examples/data_pruners.py` (docs/data_pruners.md).

    One epoch of fine-tuning, the same for every pruner: batch 16 (85 steps), Adam 3e-3 decaying linearly to 0.
    Statistics pruners score over 20 batches of 64 (`data=`, no weight change); slim: 1 epoch of sparsity training
    (scale 1e-3, Adam 1e-3), 50% of every BatchNorm; admm: coarse-grained, 10 iterations x 1 epoch (Adam 1e-3,
    rho 1e-4). Measured (seeds 0-4, docs/data_pruners.md): worst drop vs dense -1.1 points (l2, fpgm,
    mean_activation), before fine-tuning all near chance (0.09-0.43). Seed 0 here: dense 0.982, after 0.978 (l1)
    to 0.989 (apoz, admm). Stricter bar, vs the dense model fine-tuned the same epoch (0.991-0.993): apoz -2.4
    and -2.0 on seeds 3 and 4, every other pruner within 2. Without the decay (constant Adam 3e-3) drops stayed
    within 1.3 on seeds 0-7 of scratch runs except one -2.7 (mean_activation, a seed where the unpruned model
    itself lost 2.2 in that epoch); batch 64 with Adam 1e-2 (the first recipe) lost 3-14 points.
    """
    dense = digits_cnn_accuracy()
    test_b = digits_batches()[1]
    x = digits_input(2)
    criterion = F.cross_entropy

    def stats():  # the same seeded order for every pruner (a Batches object reshuffles on every pass)
        return {"data": digits_batches()[0], "training_batches": 20}

    makers = {
        "l1": lambda model: L1NormPruner(model, CONV50, dummy_input=x),
        "l2": lambda model: L2NormPruner(model, CONV50, dummy_input=x),
        "fpgm": lambda model: FPGMPruner(model, CONV50, dummy_input=x),
        "slim": lambda model: SlimPruner(model, [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}],
                                         data=digits_batches()[0], loss=criterion, training_epochs=1, scale=1e-3,
                                         traced_optimizer=(torch.optim.Adam, {"lr": 1e-3}), mode="normal"),
        "apoz": lambda model: ActivationAPoZRankPruner(model, CONV50, **stats()),
        "mean_activation": lambda model: ActivationMeanRankPruner(model, CONV50, **stats()),
        "taylorfo": lambda model: TaylorFOWeightPruner(model, CONV50, loss=criterion, **stats()),
        "admm": lambda model: ADMMPruner(model, CONV50, digits_trainer(),
                                         torch.optim.Adam(model.parameters(), lr=1e-3), criterion, iterations=10,
                                         training_epochs=1, granularity="coarse-grained", dummy_input=x),
    }
    record_property("dense", dense)
    after = {}
    for name, make in makers.items():
        pruner = make(digits_cnn())  # compress() masks the model it is given (NNI's contract): a fresh one each
        pruner.compress()
        assert _kept(pruner.session.masks) == {4: 8, 9: 16, 16: 32, 21: 32}, name
        result = pruner.session.finish()
        assert result.report.max_abs_diff < 1e-4, name
        before = evaluate(result.model, test_b)
        _fine_tune_one_epoch(result.model)
        after[name] = evaluate(result.model, test_b)
        record_property(name, (round(before, 4), round(after[name], 4)))
    assert {name: acc for name, acc in after.items() if acc < dense - 0.02} == {}, dense


@pytest.mark.slow
def test_slim_removes_the_channels_whose_gamma_went_to_zero(digits):
    model, trainer, criterion = digits
    pruner = SlimPruner(model, [{"sparsity": 0.25, "op_types": ["BatchNorm2d"]}], trainer,
                        trace(torch.optim.Adam)(model.parameters(), lr=3e-2), criterion, training_epochs=3,
                        scale=5e-2)
    pruner.compress()
    masked, masks = pruner.masked_graph, pruner.session.masks
    gammas = torch.cat([masked.get_parameter(f"bn{i}.weight").detach().abs() for i in range(1, 5)])
    keep = torch.cat([torch.as_tensor(masks.keep[g]) for g in (4, 9, 16, 21)])
    assert gammas[~keep].max() <= gammas[keep].min()  # one global threshold on |gamma|
    assert (gammas[~keep] < 0.05).all()  # the channels removed are those the penalty drove to ~0
    assert (gammas < 0.05).sum() >= int(0.25 * 176)
    assert pruner.session.finish().report.max_abs_diff < 1e-4


@pytest.mark.slow
def test_slim_loses_less_than_l1_on_the_same_sparsity_trained_model(record_property):
    """Issue 9: Slim after its sparsity training removes channels whose gamma went to zero and, before fine-tuning,
    loses less than L1 removing as many filters per layer from the SAME sparsity-trained model.

    The paper's recipe in miniature: 7 epochs of penalised training (scale 5e-2), Adam 1e-2 divided by 10 after
    epoch 5 (its step decay: the BatchNorm statistics settle; at a constant 1e-2 the trained model's running
    statistics lag and it scores 0.11 until recalibrated), then 25% of the BatchNorm channels by one global
    |gamma| threshold (about 48 of 176 are below 1e-2 by then). A removed channel still sent relu(beta) to
    the next layer, so removal is only free where gamma AND that constant went to ~0. Measured here (seed 0):
    sparsity-trained 0.951, Slim 0.951, L1 on the same model 0.764, L1 on the dense model 0.411; on seeds 0-2
    with another data order: sparsity-trained 0.980/0.980/0.984, Slim 0.980/0.976/0.984, L1 on the same model
    0.793/0.947/0.618, on the dense model 0.389/0.409/0.151. At 50% (past the gammas that reached zero) both are
    near chance; with NNI's default scale 1e-4 or Adam 1e-3 no gamma gets below 0.1 in 10 epochs.
    """
    model = digits_cnn()
    x, test_b = digits_input(2), digits_batches()[1]
    evaluator = TorchEvaluator(digits_trainer(), lambda params: torch.optim.Adam(params, lr=1e-2), F.cross_entropy,
                               lr_schedulers=lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [5], 0.1),
                               dummy_input=x)
    pruner = SlimPruner(model, [{"sparsity": 0.25, "op_types": ["BatchNorm2d"]}], evaluator, training_epochs=7,
                        scale=5e-2)
    pruner.compress()
    masked, masks = pruner.masked_graph, pruner.session.masks
    trained = small_cnn(image=8)  # the sparsity-trained weights, unmasked
    trained.load_state_dict({k: v for k, v in masked.state_dict().items() if k in trained.state_dict()})
    trained.eval()
    gammas = torch.cat([trained.get_parameter(f"bn{i}.weight").detach().abs() for i in range(1, 5)])
    sizes = {4: 16, 9: 32, 16: 64, 21: 64}
    keep = torch.cat([torch.as_tensor(masks.keep[g]) if g in masks.keep else torch.ones(n, dtype=torch.bool)
                      for g, n in sizes.items()])
    assert int((~keep).sum()) == 44 and gammas[~keep].max() < 1e-2  # what was removed had gone to ~0
    removed = [n - int(torch.as_tensor(masks.keep[g]).sum()) if g in masks.keep else 0 for g, n in sizes.items()]
    slim = evaluate(pruner.session.finish().model, test_b)

    def l1(source: nn.Module) -> float:
        pairs = zip(removed, sizes.values())
        rules = [{"sparsity": r / n, "op_names": [f"conv{i}"]} for i, (r, n) in enumerate(pairs, 1) if r]
        other = L1NormPruner(source, rules, dummy_input=x)
        other.compress()
        assert sum(int((~torch.as_tensor(k)).sum()) for k in other.session.masks.keep.values()) == 44
        return evaluate(other.session.finish().model, test_b)

    sparse_trained, l1_same, l1_dense = evaluate(trained, test_b), l1(trained), l1(digits_cnn())
    for name, value in (("sparse_trained", sparse_trained), ("slim", slim), ("l1_same_model", l1_same),
                        ("l1_dense_model", l1_dense), ("removed_per_layer", removed)):
        record_property(name, value)
    assert slim >= sparse_trained - 0.01, (slim, sparse_trained)
    assert slim > l1_same + 0.02 and slim > l1_dense + 0.2, (slim, l1_same, l1_dense)


# -- other call forms ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluator_form_and_plain_optimizer(digits):
    model, trainer, criterion = digits
    evaluator = TorchEvaluator(trainer, trace(torch.optim.SGD)(model.parameters(), lr=0.01, momentum=0.9), criterion,
                               dummy_input=digits_input(4))
    pruner = TaylorFOWeightPruner(model, CONV50, evaluator, 5, mode="global")
    pruner.compress()
    assert sum(_kept(pruner.session.masks).values()) == 176 - 88
    model = digits_cnn()
    evaluator = TorchEvaluator(trainer, trace(torch.optim.SGD)(model.parameters(), lr=0.01, momentum=0.9), criterion,
                               dummy_input=digits_input(4))
    pruner = ActivationAPoZRankPruner(model, CONV50, evaluator=evaluator, training_steps=3)
    pruner.compress()
    assert _kept(pruner.session.masks) == {4: 8, 9: 16, 16: 32, 21: 32}
    model = digits_cnn()
    plain = torch.optim.SGD(model.parameters(), lr=0.01)  # not traced: rebuilt from its class and groups
    pruner = TaylorFOWeightPruner(model, CONV50, trainer, plain, criterion, training_batches=2)
    pruner.compress()
    assert _kept(pruner.session.masks) == {4: 8, 9: 16, 16: 32, 21: 32}


def test_plain_data_changes_no_weight():
    model, batches = _tiny()
    pruner = TaylorFOWeightPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], data=batches,
                                  loss=F.cross_entropy)
    before = _state(model)
    _, masks = pruner.compress()
    pruner._unwrap_model()
    for name, p in model.named_parameters():  # no training: the weights are the masked originals
        torch.testing.assert_close(p, before[name] * masks.get(name.rpartition(".")[0], {}).get("weight", 1.0)
                                   if name.endswith("weight") else before[name] * masks.get(
                                       name.rpartition(".")[0], {}).get("bias", 1.0), msg=name)
        torch.testing.assert_close(pruner.masked_graph.get_parameter(name), before[name], msg=name)


@pytest.mark.parametrize("pruner", ["taylorfo", "apoz", "mean_activation"])
def test_compile_configs_for_statistics_pruners(pruner):
    model, batches = _tiny()
    result = fxprune.compile(model, {"pruner": pruner, "sparsity": 0.5, "data": batches, "loss": F.cross_entropy,
                                     "batches": 2}, batches[0][0])
    assert result.model.conv.out_channels == 2
    assert result.report.max_abs_diff < 1e-4


@pytest.mark.slow
def test_compile_slim(digits):
    model, _, _ = digits
    train_b, test_b = digits_batches()
    result = fxprune.compile(model, {"pruner": "slim", "sparsity": 0.5, "mode": "global", "data": train_b,
                                     "loss": F.cross_entropy, "options": {"scale": 1e-3, "training_epochs": 1}},
                             digits_input(2))
    assert sum(m.num_features for m in result.model.modules() if isinstance(m, nn.BatchNorm2d)) == 88
    assert result.report.max_abs_diff < 1e-4


# the v1 forms (masked in place by the user's own training loop): tests/test_v1_inplace.py


# -- bad input: FxPruneError naming the argument, layer or batch; the model untouched -------------------------------
def _expect(exc: type[Exception], match: str, make, model: nn.Module) -> None:
    state = _state(model)
    with pytest.raises(exc, match=match):
        make().compress()
    assert _same(model, state)


def test_bad_inputs_name_the_argument_and_leave_the_model():
    model, batches = _tiny()
    opt = trace(torch.optim.SGD)(model.parameters(), lr=0.1)

    def trainer(m, optimizer, criterion):
        for x, y in batches:
            optimizer.zero_grad()
            criterion(m(x), y).backward()
            optimizer.step()

    def lazy_trainer(m, optimizer, criterion):
        for x, y in batches:
            criterion(m(x), y).backward()

    cfg = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
    with pytest.raises(InputError, match="needs batches"):
        TaylorFOWeightPruner(model, cfg)
    with pytest.raises(InputError, match="training_batches=0"):
        TaylorFOWeightPruner(model, cfg, trainer, opt, F.cross_entropy, training_batches=0)
    with pytest.raises(InputError, match="training_batches=20"):
        TaylorFOWeightPruner(model, cfg, trainer, opt, F.cross_entropy)
    _expect(InputError, "never called optimizer.step", lambda: TaylorFOWeightPruner(
        model, cfg, lazy_trainer, opt, F.cross_entropy, training_batches=2), model)
    _expect(InputError, "criterion returned Tensor of shape .5,. on batch 0", lambda: TaylorFOWeightPruner(
        model, cfg, trainer, opt, lambda o, t: F.cross_entropy(o, t, reduction="none"), training_batches=2), model)
    _expect(InputError, "loss is nan on batch 1", lambda: ActivationAPoZRankPruner(
        model, cfg, trainer, opt, _nan_on(1), training_batches=2), model)
    _expect(InputError, "on batch 0", lambda: TaylorFOWeightPruner(
        model, cfg, data=[(x.fill_(float("nan")) if i == 0 else x, y) for i, (x, y) in
                          enumerate(copy.deepcopy(batches))], loss=F.cross_entropy, dummy_input=batches[0][0]), model)
    with pytest.raises(ConfigError, match="mode='global'"):
        ActivationAPoZRankPruner(model, cfg, data=batches, mode="global")
    _expect(ConfigError, "no BatchNorm layer", lambda: SlimPruner(
        model, [{"sparsity": 0.5, "op_types": ["default"]}], trainer, opt, F.cross_entropy, training_epochs=1), model)


def _nan_on(batch: int):
    calls = [0]

    def criterion(output, target):
        calls[0] += 1
        loss = F.cross_entropy(output, target)
        return loss * float("nan") if calls[0] == batch + 1 else loss

    return criterion


@pytest.mark.slow
def test_slim_bad_inputs(digits):
    model, trainer, criterion = digits
    state = _state(model)

    def no_step(m, optimizer, crit):
        for x, y in digits_batches()[0]:
            crit(m(x), y).backward()

    with pytest.raises(ConfigError, match=r"only prunes BatchNorm layers.*conv1 \(Conv2d\).*bn1"):
        SlimPruner(model, CONV50, trainer, trace(torch.optim.Adam)(model.parameters()), criterion,
                   training_epochs=1).compress()
    with pytest.raises(InputError, match="penalty on the BatchNorm scales never moved"):
        SlimPruner(model, [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}], no_step,
                   trace(torch.optim.Adam)(model.parameters()), criterion, training_epochs=1).compress()
    frozen = trace(torch.optim.Adam)([p for n, p in model.named_parameters() if not n.startswith("bn")])
    with pytest.raises(InputError, match="BatchNorm scales did not change"):
        SlimPruner(model, [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}], trainer, frozen, criterion,
                   training_epochs=1).compress()
    assert _same(model, state)


def test_compile_bad_configs():
    model, batches = _tiny()
    x = batches[0][0]
    with pytest.raises(ConfigError, match="'data'"):
        fxprune.compile(model, {"pruner": "apoz", "sparsity": 0.5}, x)
    with pytest.raises(ConfigError, match="'loss'"):
        fxprune.compile(model, {"pruner": "taylorfo", "sparsity": 0.5, "data": batches}, x)
    with pytest.raises(ConfigError, match="takes no options"):
        fxprune.compile(model, {"pruner": "apoz", "sparsity": 0.5, "data": batches, "options": {"x": 1}}, x)
    with pytest.raises(ConfigError, match=r"options'\]\['lr'\] is not a slim option"):
        fxprune.compile(model, {"pruner": "slim", "sparsity": 0.5, "data": batches, "loss": F.cross_entropy,
                                "options": {"lr": 1}}, x)
    with pytest.raises(FxPruneError, match="no BatchNorm layer"):
        fxprune.compile(model, {"pruner": "slim", "sparsity": 0.5, "data": batches, "loss": F.cross_entropy}, x)
