"""The algorithm foundation (issue 8): the pruning session, the probe pass, the criteria on hand-computed
numbers, layers as users name them, the config's one vocabulary, and the package's import layering."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.errors import ConfigError, FxPruneError, InputError
from fxprune.graph import Slot
from fxprune.importance import CRITERIA
from tests.fixtures import FAMILY

X = torch.randn(2, 3, 16, 16)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def _net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


# -- the session ------------------------------------------------------------------------------------


def test_session_applies_twice_without_retracing_and_masks_only_shrink() -> None:
    session = fxprune.prepare(_net(), {"pruner": "l1", "sparsity": 0.25}, X)
    graph, n_nodes = session.model.graph, len(session.model.graph.nodes)
    session.apply(session.compute_masks())
    first = {gid: keep.copy() for gid, keep in session.masks.keep.items()}
    assert first and all((~k).sum() == 2 for k in first.values())  # 25% of 8 channels
    # one optimizer step of fine-tuning on the masked model
    session.model.train()
    opt = torch.optim.SGD(session.model.parameters(), lr=0.1)
    F.cross_entropy(session.model(X), torch.tensor([0, 1])).backward()
    opt.step()
    session.model.eval()
    more = session.compute_masks(config=[{"sparsity": 0.5, "op_types": ["default"]}])
    session.apply(more)
    assert session.model.graph is graph and len(session.model.graph.nodes) == n_nodes  # no re-trace
    for gid, keep in first.items():
        assert not (session.masks.keep[gid] & ~keep).any(), "a removed channel came back"
        assert (~session.masks.keep[gid]).sum() == 4
    result = session.finish()
    assert result.model.conv1.out_channels == 4 and result.model.conv2.out_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(result.model(X), session.model(X), rtol=1e-4, atol=1e-5)


def test_masked_channels_read_as_zero_after_apply() -> None:
    session = fxprune.prepare(_net(), {"pruner": "l1", "sparsity": 0.5}, X)
    before = session.model(X).detach()
    session.apply(session.compute_masks())
    gid = session.graph.group_of[Slot("@conv1.weight", 0)]
    gone = torch.as_tensor(~session.masks.keep[gid]).nonzero().flatten()
    seen = {}
    session.model.conv2.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    after = session.model(X).detach()
    assert not torch.equal(before, after)
    assert seen["x"][:, gone].abs().max() == 0  # conv2 reads zeros where conv1's channels went


def test_compile_reports_the_model_as_it_came_in() -> None:
    model = _net()
    result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, X)
    assert result.report.params_before == sum(p.numel() for p in model.parameters())
    assert result.report.params_after == sum(p.numel() for p in result.model.parameters())
    assert result.masked_model is not result.model


def test_apply_refuses_masks_of_another_session() -> None:
    a = fxprune.prepare(_net(), {"pruner": "l1", "sparsity": 0.5}, X)
    b = fxprune.prepare(_net(), {"pruner": "l1", "sparsity": 0.5}, X)
    with pytest.raises(InputError, match="another model's dependency graph"):
        a.apply(b.compute_masks())


def test_finish_twice_is_an_error() -> None:
    session = fxprune.prepare(_net(), {"pruner": "l1", "sparsity": 0.5}, X)
    session.apply(session.compute_masks())
    session.finish()
    with pytest.raises(InputError, match="already called"):
        session.finish()


def test_a_compile_that_removes_nothing_says_why() -> None:
    with pytest.warns(UserWarning, match="removed nothing") as record:
        fxprune.compile(_net(), {"pruner": "l1", "sparsity": 0.05}, X)
    text = str(record[0].message)
    assert "conv1: sparsity 0.05 of its 8 prunable channel(s) rounds to zero" in text
    assert "fc: kept whole: reaches the model output" in text


# -- the probe pass ---------------------------------------------------------------------------------


class Probed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1, bias=False)
        self.out = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.conv(x)))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_probe_statistics_equal_hand_computed_ones(frontend: str) -> None:
    torch.manual_seed(0)
    model = Probed().eval()
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([1.0, -1.0, 2.0]).view(3, 1, 1, 1))
    batches = [(torch.randn(2, 1, 4, 4), torch.zeros(2, 2, 4, 4)) for _ in range(3)]
    session = fxprune.prepare(model, {"pruner": "l1", "sparsity": 0.5, "frontend": frontend}, batches[0][0])
    stats = session.collect(batches, needs=("activations", "gradients"), loss=F.mse_loss)
    assert stats.batches == 3 and stats.backward == 3
    acts = torch.cat([torch.relu(model.conv(x)) for x, _ in batches]).detach()  # (6, 3, 4, 4)
    per_channel = acts.transpose(0, 1).reshape(3, -1)
    (slot,) = stats.activation_sum
    torch.testing.assert_close(stats.activation_sum[slot].float() / stats.positions[slot], per_channel.mean(1))
    torch.testing.assert_close(stats.activation_zeros[slot].float() / stats.positions[slot],
                               (per_channel == 0).float().mean(1))
    taylor = torch.zeros(3, 1, 1, 1, dtype=torch.float64)
    for x, y in batches:
        model.zero_grad()
        F.mse_loss(model(x), y).backward()
        taylor += (model.conv.weight * model.conv.weight.grad).double().square()
    torch.testing.assert_close(stats.weight_taylor["conv.weight"], taylor)
    act_taylor = torch.zeros(3, dtype=torch.float64)  # activation gradients: |mean over positions of a * dL/da|
    for x, y in batches:
        a = torch.relu(model.conv(x))
        a.retain_grad()
        F.mse_loss(model.out(a), y).backward()
        act_taylor += (a * a.grad).transpose(0, 1).reshape(3, -1).double().mean(1).abs().detach()
    (slot,) = stats.activation_taylor
    assert stats.activation_backward[slot] == 3
    torch.testing.assert_close(stats.activation_taylor[slot], act_taylor)
    assert all(p.grad is None for p in session.model.parameters()), "collect leaves no gradient behind"
    assert not any("probe" in n.name for n in session.model.graph.nodes), "probes are removed"
    # the criteria read these statistics: APoZ keeps the channel with the fewest zeros
    group = session.graph.groups[session.graph.group_of[Slot("@conv.weight", 0)]]
    zeros = (per_channel == 0).double().mean(1)
    torch.testing.assert_close(CRITERIA["apoz"].fn(session.graph, group, stats, None), 1 - zeros)
    torch.testing.assert_close(CRITERIA["mean_activation"].fn(session.graph, group, stats, None),
                               per_channel.double().mean(1))


def test_probe_with_the_users_own_loop_counts_only_the_first_batches() -> None:
    session = fxprune.prepare(_net(), {"pruner": "l1", "sparsity": 0.5}, X)
    with session.probe(("activations",), batches=2) as stats:
        for _ in range(5):
            session.model(X)
    assert stats.batches == 2
    assert {s.tensor for s in stats.activation_sum} == {"relu", "relu_1"}  # after BN: the real activation


def test_collect_rejects_a_nan_loss_naming_the_batch() -> None:
    session = fxprune.prepare(_net(), {"pruner": "l1", "sparsity": 0.5}, X)
    data = [(X, torch.tensor([0, 1])), (X, torch.tensor([0, 1]))]
    calls = iter([torch.tensor(1.0, requires_grad=True), torch.tensor(float("nan"), requires_grad=True)])
    with pytest.raises(InputError, match="on batch 1"):
        session.collect(data, needs=("gradients",), loss=lambda out, y: next(calls) + 0 * out.sum())


# -- criteria on hand-computed numbers --------------------------------------------------------------


def _one_layer(weight: torch.Tensor) -> tuple[fxprune.DependencyGraph, object]:
    model = nn.Sequential(nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False), nn.ReLU(),
                          nn.Conv2d(weight.shape[0], 1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(weight.view(*weight.shape, 1, 1))
        model[2].weight.zero_()  # the next layer's columns add nothing to the scores
    _, dg = fxprune.analyze(model, torch.randn(1, weight.shape[1], 2, 2))
    return dg, dg.groups[dg.group_of[Slot("@0.weight", 0)]]


def test_l1_and_l2_rank_by_their_own_norm() -> None:
    w = torch.tensor([[3.0, 0.0], [2.0, 2.0], [1.0, 1.0]])  # L1: 3, 4, 2   L2: 3, 2.83, 1.41
    dg, group = _one_layer(w)
    torch.testing.assert_close(CRITERIA["l1"].fn(dg, group, None, None), torch.tensor([3.0, 4.0, 2.0]).double())
    l2 = CRITERIA["l2"].fn(dg, group, None, None)
    torch.testing.assert_close(l2, torch.tensor([3.0, 8 ** 0.5, 2 ** 0.5]).double())
    assert l2.argmax() == 0 and CRITERIA["l1"].fn(dg, group, None, None).argmax() == 1


def test_a_scorer_reads_each_weight_once_and_scores_as_without_it(monkeypatch) -> None:
    from fxprune import importance

    factory, shape = FAMILY["resnet18"]
    _, dg = fxprune.analyze(factory(), torch.randn(shape))
    groups = [g for g in dg.groups if g.prunable.any()]
    for name, elementwise in (("l1", importance._abs_sum), ("l2", importance._square_sum)):
        plain = [CRITERIA[name].fn(dg, g, None, None) for g in groups]  # no WeightSums active: per slot
        calls: list[tuple[int, ...]] = []
        fn = importance._ELEMENTWISE[elementwise]
        monkeypatch.setitem(importance._ELEMENTWISE, elementwise,
                            lambda t, out, fn=fn, calls=calls: calls.append(tuple(t.shape)) or fn(t, out=out))
        with importance.WeightSums():
            cached = [CRITERIA[name].fn(dg, g, None, None) for g in groups]
        assert all(torch.equal(a, b) for a, b in zip(plain, cached))  # the same sums, bit for bit
        weights = {s.tensor for g in groups for s in g.param_slots() if len(dg.shapes[s.tensor]) > 1}
        assert len(calls) == len(weights)  # a conv weight is in two groups (filters, input channels): read once


def test_fpgm_drops_the_filter_nearest_the_geometric_median() -> None:
    w = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.4, 0.4]])  # (0.4, 0.4) sits in the middle
    dg, group = _one_layer(w)
    scores = CRITERIA["fpgm"].fn(dg, group, None, None)
    expected = torch.cdist(w[None], w[None])[0].sum(1).double()
    torch.testing.assert_close(scores, expected)
    assert scores.argmin() == 3
    result = fxprune.compile(nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Conv2d(4, 1, 1)),
                             {"pruner": "fpgm", "sparsity": 0.25}, torch.randn(1, 2, 2, 2))
    assert result.model.get_submodule("0").out_channels == 3


def test_bn_scale_scores_the_batchnorm_gamma() -> None:
    model = _net()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([0.5, -2.0, 0.0, 1.0, 3.0, -0.1, 0.2, 0.7]))
    _, dg = fxprune.analyze(model, X)
    group = dg.groups[dg.group_of[Slot("@conv1.weight", 0)]]
    torch.testing.assert_close(CRITERIA["bn_scale"].fn(dg, group, None, None), model.bn1.weight.detach().abs().double())


# -- layers as users name them ----------------------------------------------------------------------


class SamePadConv(nn.Conv2d):
    """A Conv2d subclass with its own forward (EfficientNet-Lite's static 'same' padding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SubclassNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = SamePadConv(3, 8, 3)
        self.block = SamePadConv(8, 8, 3)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.block(torch.relu(self.stem(x)))))


@pytest.mark.parametrize("rules", [[{"sparsity": 0.5, "op_types": ["Conv2d"]}], [{"sparsity": 0.5,
                                                                                 "op_types": ["default"]}]])
def test_conv2d_subclasses_with_their_own_forward_are_conv2d_layers(rules: list) -> None:
    result = fxprune.compile(SubclassNet().eval(), {"pruner": "l1", "rules": rules}, X)
    layers = {s.name: s for s in result.report.layers}
    assert layers["stem"].type == "SamePadConv" and layers["stem"].channels_after == 4
    assert layers["block"].channels_after == 4


def test_op_names_match_any_name_of_a_module() -> None:
    model = _net()
    model.features = nn.Sequential(model.conv1)  # conv1 is also features.0
    cfg = {"pruner": "l1", "rules": [{"sparsity": 0.5, "op_names": ["conv1"]}]}
    assert fxprune.compile(model, cfg, X).report.params_after < sum(p.numel() for p in model.parameters())
    cfg = {"pruner": "l1", "rules": [{"sparsity": 0.5, "op_names": ["features.0"]}]}
    assert fxprune.compile(model, cfg, X).report.params_after < sum(p.numel() for p in model.parameters())


def test_level_default_types_are_nnis_and_leave_batchnorm_alone() -> None:
    result = fxprune.compile(_net(), {"pruner": "level", "sparsity": 0.8}, X)
    assert set(result.masks.weights) == {"conv1.weight", "conv2.weight", "fc.weight"}


# -- config: one vocabulary ---------------------------------------------------------------------------


def test_a_config_built_in_code_is_validated_like_a_dict() -> None:
    model = _net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for bad, match in [(fxprune.Config(pruner="magic", sparsity=0.5), "config\\['pruner'\\] = 'magic'"),
                       (fxprune.Config(sparsity=1.5), "outside \\[0, 1\\)"),
                       (fxprune.Config(sparsity=0.5, mode="fast"), "config\\['mode'\\]")]:
        with pytest.raises(ConfigError, match=match):
            fxprune.compile(model, bad, X)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    a = fxprune.compile(_net(), fxprune.Config(pruner="l2", sparsity=0.5, global_ranking=True), X)
    b = fxprune.compile(_net(), {"pruner": "l2", "sparsity": 0.5, "global_ranking": True}, X)
    assert all((a.masks.keep[g] == b.masks.keep[g]).all() for g in a.masks.keep)


def test_an_algorithm_of_the_catalogue_not_in_this_build_says_so() -> None:
    from fxprune.catalog import ALGORITHMS

    missing = [a for a in ALGORITHMS.values() if not a.implemented]
    if not missing:
        pytest.skip("every algorithm of the catalogue is implemented")
    with pytest.raises(ConfigError, match="not implemented in this build"):
        fxprune.parse_config({"pruner": missing[0].name, "sparsity": 0.5})


def test_unknown_criterion_is_an_error() -> None:
    session = fxprune.prepare(_net(), {"pruner": "l1", "sparsity": 0.5}, X)
    with pytest.raises(FxPruneError, match="unknown criterion"):
        session.compute_masks("l3")
    with pytest.raises(FxPruneError, match="needs activations"):
        session.compute_masks("apoz")


# -- layering -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_module_imports_alone_without_a_cycle() -> None:
    """Import each module of the package first, in a fresh interpreter state: a cycle shows up as an
    ImportError (partially initialised module) for some entry point."""
    names = ["fxprune"] + [m.name for m in pkgutil.walk_packages(fxprune.__path__, "fxprune.")]
    saved = {k: v for k, v in sys.modules.items() if k == "fxprune" or k.startswith("fxprune.")}
    try:
        for name in names:
            for k in list(sys.modules):
                if k == "fxprune" or k.startswith("fxprune."):
                    del sys.modules[k]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
    finally:
        for k in list(sys.modules):
            if k == "fxprune" or k.startswith("fxprune."):
                del sys.modules[k]
        sys.modules.update(saved)


def test_no_module_imports_a_private_helper_of_another() -> None:
    import ast
    import pathlib

    root = pathlib.Path(fxprune.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                offenders += [f"{path.name}: {a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
    assert not offenders


def test_family_models_still_compile_through_the_session() -> None:
    factory, shape = FAMILY["resnet18"]
    torch.manual_seed(0)
    result = fxprune.compile(factory().eval(), {"pruner": "l1", "sparsity": 0.5}, torch.randn(*shape))
    assert result.report.param_reduction > 0.5
