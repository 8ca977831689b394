"""The v1 data-driven pruners mask the user's own model in place, as NNI v1 did (issue 12).

`compress()` returns the model passed in; Slim masks it at once; APoZ / Mean / Taylor FO collect statistics from
the user's own training loop and mask the model after `statistics_batch_num` batches. The masks equal what
fxprune computes from the same statistics, and `fxprune.speedup` / `ModelSpeedup` shrink the model in place.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxprune
from fxprune.errors import InputError
from fxprune.importance import Stats
from fxprune.nni import ModelSpeedup
from fxprune.nni_masks import masked_tensors
from fxprune.pruners import v1
from fxprune.pruners.data import score_masks
from tests.realdata import digits_batches, digits_cnn, digits_input

CONVS = {"conv1": 16, "conv2": 32, "conv3": 64, "conv4": 64}
CRITERION = {"ActivationAPoZRankFilterPruner": "apoz", "ActivationMeanRankFilterPruner": "mean_activation",
             "TaylorFOWeightFilterPruner": "taylor"}


def _alive(mask: torch.Tensor) -> torch.Tensor:
    return (mask != 0).flatten(1).any(1) if mask.dim() > 1 else mask != 0


class _UserLoop:
    """The user's own training loop (SGD: zero_grad, forward, backward, step), recording by hand what the
    statistics pruners collect: relu(bn_i(.)) per channel on each forward, (w * g)^2 of every parameter."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = dict(model.named_parameters())  # the Parameter objects (they stay the same when masked)
        self.zeros: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.positions: dict[str, int] = {}
        self.taylor: dict[str, torch.Tensor] = {}
        self.recording = True
        for i in range(1, 5):
            bn = model.get_submodule(f"bn{i}")
            bn.register_forward_hook(self._bn_hook(f"conv{i}", bn))

    def _bn_hook(self, conv: str, bn: nn.Module):
        def hook(module, args, out):
            if self.recording and module is bn:  # fxprune's copies of the model carry this hook too
                act = F.relu(out.detach()).transpose(0, 1).flatten(1).double()
                self.zeros[conv] = self.zeros.get(conv, 0) + (act == 0).sum(1)
                self.sums[conv] = self.sums.get(conv, 0) + act.sum(1)
                self.positions[conv] = self.positions.get(conv, 0) + act.shape[1]
        return hook

    def run(self, batches, n: int, record: int) -> None:
        optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)
        for i, (x, y) in enumerate(batches[:n]):
            self.recording = i < record
            weights = {k: p.detach().clone() for k, p in self.params.items()}
            optimizer.zero_grad()
            F.cross_entropy(self.model(x), y).backward()
            if i < record:
                for k, p in self.params.items():
                    self.taylor[k] = self.taylor.get(k, 0) + (weights[k] * p.grad).double().square()
            optimizer.step()
        self.recording = False

    def score(self, criterion: str, conv: str) -> torch.Tensor:
        """Higher = kept, per filter of `conv`, as NNI's per-layer metric."""
        if criterion == "apoz":
            return 1 - self.zeros[conv] / self.positions[conv]
        if criterion == "mean_activation":
            return self.sums[conv] / self.positions[conv]
        return self.taylor[f"{conv}.weight"].sum((1, 2, 3))


def _reference(model: nn.Module, cls: type, config_list, mode: str, stats: Stats | None = None,
               data=None) -> dict[str, torch.Tensor]:
    """fxprune's masks from the same statistics, on a copy of the model as it was: kept filters per conv."""
    session = fxprune.prepare(model, {"pruner": cls.algorithm, "rules": config_list, "mode": mode}, digits_input(2))
    if stats is None:
        stats = session.collect(data, ("activations",))
    # score_masks, as fxprune's own APoZ/Mean/Taylor pruners (session.compute_masks in normal mode scores the
    # layer's weight slot only, which holds no activation statistics)
    session.apply(score_masks(session, CRITERION[cls.__name__], stats))
    nni = session.masks.to_nni()
    return {name: _alive(nni[name]["weight"]) if name in nni else torch.ones(w, dtype=torch.bool)
            for name, w in CONVS.items()}


def _speedup_checked(model: nn.Module, masks, widths: dict[str, int]) -> None:
    """Shrink the user's model in place (ModelSpeedup); pruned == masked (verified), the convs have `widths`."""
    x = digits_input(16)
    speedup = ModelSpeedup(model, dummy_input=x, masks_file=masks)
    assert speedup.speedup_model() is model
    assert speedup.result.report.max_abs_diff < 1e-4
    assert not masked_tensors(model)
    assert {n: model.get_submodule(n).out_channels for n in CONVS} == widths
    with torch.no_grad():
        torch.testing.assert_close(model(x), speedup.result.model(x), rtol=1e-4, atol=1e-5)


# -- Slim ------------------------------------------------------------------------------------------------------------
def test_v1_slim_seed_snippet_masks_in_place_and_speeds_up():
    model = digits_cnn()
    gammas = torch.cat([model.get_submodule(f"bn{i}").weight.detach().abs() for i in range(1, 5)])
    x = digits_input(16)
    from fxprune.pruners.v1 import SlimPruner

    config_list = [{ 'sparsity': 0.8, 'op_types': ['BatchNorm2d'] }]
    pruner = SlimPruner(model, config_list)
    assert pruner.compress() is model

    masks = pruner.get_masks()
    assert sorted(masks) == ["bn1", "bn2", "bn3", "bn4"] and all(set(m) == {"weight", "bias"} for m in masks.values())
    keep = torch.cat([masks[f"bn{i}"]["weight"] != 0 for i in range(1, 5)])
    # one threshold over all 176 scales; a layer it would empty keeps one channel (at most 4 kept below it)
    assert int(0.8 * 176) - 4 <= int((~keep).sum()) <= int(0.8 * 176)
    assert int((gammas[keep] < gammas[~keep].max()).sum()) <= 4
    for i in range(1, 5):  # masked in place: gamma and beta of the removed channels are zero
        bn = model.get_submodule(f"bn{i}")
        dead = masks[f"bn{i}"]["weight"] == 0
        assert hasattr(bn, "parametrizations") and (bn.weight[dead] == 0).all() and (bn.bias[dead] == 0).all()
    with torch.no_grad():
        masked_out = model(x)
    _speedup_checked(model, masks, {f"conv{i}": int((masks[f"bn{i}"]["weight"] != 0).sum()) for i in range(1, 5)})
    with torch.no_grad():  # the BatchNorm zeroes its removed channels: removing them changes no output
        torch.testing.assert_close(model(x), masked_out, rtol=1e-4, atol=1e-5)


# -- APoZ / Mean / Taylor: the seed snippets, then the user's own loop ------------------------------------------------
@pytest.mark.parametrize("name", ["ActivationAPoZRankFilterPruner", "ActivationMeanRankFilterPruner",
                                  "TaylorFOWeightFilterPruner"])
def test_v1_statistics_seed_snippets_mask_the_users_model(name, tmp_path):
    model = digits_cnn()
    before = copy.deepcopy(model)
    batches = list(itertools.islice(digits_batches()[0], 3))  # the same three batches for the reference
    x = digits_input(16)
    loop = _UserLoop(model)
    convs = {n: loop.params[f"{n}.weight"] for n in CONVS}
    import fxprune.pruners.v1

    cls = getattr(fxprune.pruners.v1, name)
    config_list = [{
        'sparsity': 0.5,
        'op_types': ['Conv2d']
    }]
    pruner = cls(model, config_list, statistics_batch_num=1)
    pruner.compress()

    assert pruner.compress() is model  # v1: the same object (a second call changes nothing)
    assert pruner.get_masks() == {} and not masked_tensors(model)
    if name.startswith("Taylor"):  # a forward call without backward is no statistics batch for Taylor
        with torch.no_grad():
            torch.testing.assert_close(model(x), before(x))
        assert pruner.get_masks() == {} and not masked_tensors(model)
    loop.run(batches, 3, record=1)

    masks = pruner.get_masks()
    criterion = CRITERION[name]
    assert sorted(masks) == sorted(CONVS) and all(set(m) == {"weight"} for m in masks.values())  # no conv bias
    for n, width in CONVS.items():
        conv = model.get_submodule(n)
        assert conv.parametrizations.weight.original is convs[n], n  # the user's Parameter, masked in place
        keep = _alive(masks[n]["weight"])
        assert int(keep.sum()) == width - int(0.5 * width), n  # per layer: v1's default dependency_aware=False
        assert (conv.weight[~keep] == 0).all(), n  # and masked through the rest of the training
        score = loop.score(criterion, n)  # by hand, from the user's own forward/backward of the first batch
        assert score[~keep].max() <= score[keep].min(), n
    if criterion == "taylor":
        stats = Stats(weight_taylor=loop.taylor, backward=1)
        expected = _reference(before, cls, config_list, "normal", stats=stats)
    else:  # fxprune's own collection on the first batch (it ran before any step), on the model as it was
        expected = _reference(before, cls, config_list, "normal", data=batches[:1])
    for n in CONVS:
        assert torch.equal(_alive(masks[n]["weight"]), expected[n]), n

    pruner.export_model(model_path=tmp_path / "pruned.pth", mask_path=tmp_path / "mask.pth")
    state = torch.load(tmp_path / "pruned.pth")
    assert (state["conv2.weight"][~expected["conv2"]] == 0).all() and "conv2.parametrizations.weight.original" \
        not in state
    assert masked_tensors(model)  # export_model leaves the model masked, as NNI
    assert fxprune.speedup(model, str(tmp_path / "mask.pth"), x, inplace=True) is model
    assert {n: model.get_submodule(n).out_channels for n in CONVS} == {n: w // 2 for n, w in CONVS.items()}


# -- the replay follows the user's forward: training flags, changing weights, dropout --------------------------------
class _DropNet(nn.Module):
    """Functional ReLUs (no module to hook) and a Dropout before conv2: conv2's statistics depend on its mask."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.relu(self.conv2(x)).mean((2, 3)))


@pytest.mark.parametrize("cls", [v1.ActivationAPoZRankFilterPruner, v1.ActivationMeanRankFilterPruner])
def test_activation_statistics_are_those_of_the_users_own_forward_calls(cls):
    """Three training batches in train mode (BatchNorm on batch statistics, dropout drawn, SGD steps between):
    fxprune's statistics equal the activations of the user's forward calls, recorded by hand."""
    torch.manual_seed(0)
    model = _DropNet().train()
    batches = list(itertools.islice(digits_batches()[0], 4))
    seen: dict[int, list[torch.Tensor]] = {8: [], 16: []}  # relu(output) per forward call, by channel count
    recording = [True]

    def record(module, args, out):
        if recording[0] and (module is model.bn1 or module is model.conv2):  # fxprune's copy carries this hook
            seen[out.shape[1]].append(F.relu(out.detach()).transpose(0, 1).flatten(1).double())

    model.bn1.register_forward_hook(record)
    model.conv2.register_forward_hook(record)
    pruner = cls(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], statistics_batch_num=3)
    assert pruner.compress() is model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for i, (x, y) in enumerate(batches):
        recording[0] = i < 3
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        assert bool(masked_tensors(model)) == (i >= 2), i  # set after the third batch's backward
    stats = pruner._stats
    assert stats.batches == 3 and len(seen[8]) == len(seen[16]) == 3
    for slot, zeros in stats.activation_zeros.items():
        acts = torch.cat(seen[len(zeros)], 1)
        assert stats.positions[slot] == acts.shape[1]
        assert torch.equal(zeros, (acts == 0).sum(1)), slot  # the same dropout, weights and BatchNorm statistics
        torch.testing.assert_close(stats.activation_sum[slot], acts.sum(1))
    masks = pruner.get_masks()
    assert {n: int(_alive(m["weight"]).sum()) for n, m in masks.items()} == {"conv1": 4, "conv2": 8}
    assert set(masks["conv1"]) == {"weight", "bias"} and torch.equal(masks["conv1"]["bias"] != 0,
                                                                     _alive(masks["conv1"]["weight"]))


# -- dependency-aware mode ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [v1.ActivationAPoZRankFilterPruner, v1.TaylorFOWeightFilterPruner])
def test_dependency_aware_masks_equal_fxprunes_from_the_same_statistics(cls):
    model = digits_cnn()
    before = copy.deepcopy(model)
    batches = list(itertools.islice(digits_batches()[0], 3))
    loop = _UserLoop(model)
    n = 2 if cls is v1.TaylorFOWeightFilterPruner else 1  # APoZ: one batch, so fxprune's collect sees the same model
    config_list = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
    pruner = cls(model, config_list, statistics_batch_num=n, dependency_aware=True, dummy_input=digits_input(2))
    assert pruner.compress() is model and pruner.session is not None  # traced at compress(): dummy_input given
    loop.run(batches, 3, record=n)
    if cls is v1.TaylorFOWeightFilterPruner:  # (w * g)^2 of every parameter on the first two batches, by hand
        expected = _reference(before, cls, config_list, "dependency_aware", stats=Stats(weight_taylor=loop.taylor,
                                                                                      backward=n))
    else:
        expected = _reference(before, cls, config_list, "dependency_aware", data=batches[:1])
    masks = pruner.get_masks()
    for name, width in CONVS.items():
        keep = _alive(masks[name]["weight"])
        assert int(keep.sum()) == width // 2 and torch.equal(keep, expected[name]), name
    _speedup_checked(model, masks, {name: width // 2 for name, width in CONVS.items()})


# -- bad input ---------------------------------------------------------------------------------------------------------
def test_bad_arguments_name_the_argument_and_the_fix():
    model = digits_cnn()
    cfg = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InputError, match=rf"statistics_batch_num={bad!r} must be a positive int"):
            v1.ActivationAPoZRankFilterPruner(model, cfg, statistics_batch_num=bad)
    with pytest.raises(InputError, match="statistics_batch_num=0"):
        v1.TaylorFOWeightFilterPruner(model, cfg, statistics_batch_num=0)
    with pytest.raises(InputError, match=r"dependency_aware=True.*dummy_input=torch.randn"):
        v1.ActivationMeanRankFilterPruner(model, cfg, dependency_aware=True)
    with pytest.raises(InputError, match="activation='tanh'"):
        v1.ActivationMeanRankFilterPruner(model, cfg, activation="tanh")
    assert not masked_tensors(model)


@pytest.mark.parametrize("cls", [v1.ActivationAPoZRankFilterPruner, v1.TaylorFOWeightFilterPruner])
def test_a_model_never_trained_has_no_masks_and_export_says_why(cls, tmp_path):
    model = digits_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = cls(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}], statistics_batch_num=2)
    with pytest.raises(InputError, match=r"call compress\(\) first"):
        pruner.export_model(tmp_path / "m.pth", tmp_path / "mask.pth")
    pruner.compress()
    what = "backward passes" if cls is v1.TaylorFOWeightFilterPruner else "forward calls"
    with pytest.raises(InputError, match=rf"statistics_batch_num=2 {what}.*and 0 went through"):
        pruner.export_model(tmp_path / "m.pth", tmp_path / "mask.pth")
    with torch.no_grad():
        model(digits_input(8))  # one forward call: one of two for APoZ; no backward pass for Taylor
    seen = 0 if cls is v1.TaylorFOWeightFilterPruner else 1
    with pytest.raises(InputError, match=rf"and {seen} went through; run your training loop"):
        pruner.export_model(tmp_path / "m.pth")
    pruner.update_mask()
    assert pruner.get_masks() == {} and not masked_tensors(model) and not (tmp_path / "m.pth").exists()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # computes as before


def test_masks_wait_for_the_backward_of_the_last_statistics_batch_or_come_at_once_without_grad():
    """APoZ's masks are computed at the last statistics forward call; set in the model when its backward ends
    (masking re-registers the parameters, which a pending backward would refuse), or at once under no_grad."""
    batches = list(itertools.islice(digits_batches()[0], 2))
    model = digits_cnn()
    pruner = v1.ActivationAPoZRankFilterPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}])
    pruner.compress()
    x, y = batches[0]
    loss = F.cross_entropy(model(x), y)
    assert not masked_tensors(model)
    loss.backward()
    assert set(masked_tensors(model)) == {f"{n}.weight" for n in CONVS}
    assert all(p.grad is not None for p in model.parameters())
    model = digits_cnn()
    pruner = v1.ActivationAPoZRankFilterPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}])
    pruner.compress()
    with torch.no_grad():  # an evaluation loop: the statistics come from it, the masks at once
        model(x)
    assert set(masked_tensors(model)) == {f"{n}.weight" for n in CONVS} and len(pruner.get_masks()) == 4
    model = digits_cnn()
    pruner = v1.ActivationAPoZRankFilterPruner(model, [{"sparsity": 0.5, "op_types": ["Conv2d"]}])
    pruner.compress()
    model(x)  # with grad, and no backward: the masks come at the next forward call (or get_masks())
    assert not masked_tensors(model)
    model(batches[1][0])
    assert set(masked_tensors(model)) == {f"{n}.weight" for n in CONVS}
