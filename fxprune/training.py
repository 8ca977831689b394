"""A tiny training toolkit for tests, examples and data-driven pruners: train, evaluate, and NNI-style callables.

Nothing here is specific to a model: the functions work on an `nn.Module`, a `torch.fx.GraphModule`, and a
model whose parameters changed shape (a pruned one), because they build the optimizer from the model they
are given each time they are called.

    data = fxprune.datasets.digits()
    train_b = fxprune.datasets.batches(data.x_train, data.y_train, 64, shuffle=True)
    test_b = fxprune.datasets.batches(data.x_test, data.y_test, 256)
    train(model, train_b, epochs=5, lr=1e-2)
    evaluate(model, test_b)                                  # accuracy in [0, 1]

    trainer = make_trainer(train_b)          # trainer(model, optimizer, criterion): NNI's data collector
    evaluator = make_evaluator(test_b)       # evaluator(model) -> accuracy
    finetuner = make_finetuner(train_b, epochs=1, lr=1e-3)   # finetuner(model)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .progress import progress

__all__ = ["train", "evaluate", "make_trainer", "make_evaluator", "make_finetuner", "Batch", "split_batch",
           "call_model"]

_log = logging.getLogger("fxprune")

Batch = tuple[torch.Tensor, torch.Tensor]


def split_batch(batch: Any) -> tuple[tuple[Any, ...], Any]:
    """(model inputs, target) of one batch: `x`, `(x, y)`, `(x, y, ...)` or a dict of keyword inputs (its
    "labels", if any, is the target and stays among the inputs, as Hugging Face models take it)."""
    if isinstance(batch, torch.Tensor):
        return (batch,), None
    if isinstance(batch, dict):
        return (batch,), batch.get("labels")
    if isinstance(batch, (tuple, list)) and batch:
        return (batch[0],), (batch[1] if len(batch) > 1 else None)
    raise InputError(f"a batch must be a tensor, an (inputs, target) pair or a dict, got {type(batch).__name__}")


def call_model(model: nn.Module, inputs: tuple[Any, ...]) -> Any:
    """`model` on the inputs `split_batch` gives: keyword inputs for a dict, positional ones otherwise."""
    return model(**inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], dict) else model(*inputs)


def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    if optimizer is None:
        return []
    return list(optimizer) if isinstance(optimizer, Sequence) else [optimizer]


def _run_epochs(model: nn.Module, batches: Iterable[Batch], optimizers: list[torch.optim.Optimizer],
                criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], epochs: int,
                max_steps: int | None, desc: str, schedulers: list[Any] | None = None,
                step_schedulers: list[Any] | None = None) -> float:
    """The one training loop: returns the mean loss of the last epoch. `schedulers` step once per epoch (NNI's
    convention), `step_schedulers` after every optimizer step."""
    model.train()
    step, last = 0, float("nan")
    n_batches = len(batches) if hasattr(batches, "__len__") else None
    total = epochs * n_batches if n_batches is not None else None
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    with progress(total, desc) as bar:
        for _ in range(epochs):
            losses = []
            for batch in batches:
                if max_steps is not None and step >= max_steps:
                    break
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                inputs, y = split_batch(batch)
                loss = criterion(call_model(model, inputs), y)
                loss.backward()
                for opt in optimizers:
                    opt.step()
                for sched in step_schedulers or []:
                    sched.step()
                losses.append(float(loss.detach()))
                step += 1
                bar.update(loss=losses[-1])
            for sched in schedulers or []:
                sched.step()
            if losses:
                last = sum(losses) / len(losses)
            if max_steps is not None and step >= max_steps:
                break
    model.eval()
    return last


def train(model: nn.Module, batches: Iterable[Batch], epochs: int = 1, lr: float = 1e-3, *,
          optimizer: str = "adam", weight_decay: float = 0.0, cosine: bool = False, decay: str | None = None,
          max_steps: int | None = None,
          criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
          desc: str = "training") -> float:
    """Train `model` in place with cross-entropy (or `criterion`); leaves it in eval mode.

    Args:
        model: any module, traced or pruned; its current parameters are optimised.
        batches: re-iterable (x, y) batches, e.g. `fxprune.datasets.batches(...)`.
        epochs: passes over `batches`.
        lr: learning rate.
        optimizer: "adam" or "sgd" (momentum 0.9).
        weight_decay: L2 penalty of the optimizer.
        cosine: the same as `decay="cosine"`.
        decay: "cosine" or "linear": decay the learning rate after every step from `lr` to 0 over the whole run
            (a steadier final accuracy than a constant rate, whose last steps are noise).
        max_steps: stop after this many optimizer steps.
        criterion: loss(output, target).
        desc: the progress bar's label.

    Returns:
        The mean loss of the last epoch.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise InputError(f"train: optimizer={optimizer!r} is not 'adam' or 'sgd'")
    per_step = None
    decay = "cosine" if cosine else decay
    if decay not in (None, "cosine", "linear"):
        raise InputError(f"train: decay={decay!r} is not 'cosine', 'linear' or None")
    if decay is not None:
        total = epochs * len(batches) if hasattr(batches, "__len__") else None
        if max_steps is not None:
            total = max_steps if total is None else min(total, max_steps)
        if total is None:
            raise InputError(f"train: decay={decay!r} needs batches with a len() or max_steps, to know where it ends")
        factor = ((lambda i: 0.5 * (1 + math.cos(math.pi * min(i / total, 1)))) if decay == "cosine"
                  else (lambda i: max(0.0, 1 - i / total)))
        per_step = [torch.optim.lr_scheduler.LambdaLR(opt, factor)]
    loss = _run_epochs(model, batches, [opt], criterion, epochs, max_steps, desc, step_schedulers=per_step)
    _log.debug("%s: %d epoch(s), last epoch loss %.4f", desc, epochs, loss)
    return loss


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Top-1 accuracy of `model` (eval mode, no grad) on (x, y) batches.

    Args:
        model: a classifier returning logits (batch, classes).
        batches: (x, y) batches with int64 labels.

    Returns:
        The fraction of correct predictions, in [0, 1].
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(-1) == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def make_trainer(batches: Iterable[Batch], epochs: int = 1,
                 desc: str = "collecting statistics") -> Callable[..., None]:
    """An NNI-style `trainer(model, optimizer, criterion)` that runs `epochs` passes over `batches`.

    The returned function also takes NNI 2.9's `TorchEvaluator` training_func keywords (`lr_schedulers`,
    `max_steps`, `max_epochs`) and a list of optimizers, so it serves both API generations. It calls
    `optimizer.step()` after every batch, with the criterion it is given (pruners pass a patched one).

    Args:
        batches: re-iterable (x, y) batches.
        epochs: passes per call (overridden by `max_epochs` when given).
        desc: the progress bar's label.

    Returns:
        `trainer(model, optimizer, criterion, lr_schedulers=None, max_steps=None, max_epochs=None) -> None`.
    """

    def trainer(model: nn.Module, optimizer: Any, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                lr_schedulers: Any = None, max_steps: int | None = None, max_epochs: int | None = None,
                **_: Any) -> None:
        n_epochs = max_epochs if max_epochs is not None else (epochs if max_steps is None else 1 << 30)
        _run_epochs(model, batches, _optimizers(optimizer), criterion, n_epochs, max_steps, desc,
                    _optimizers(lr_schedulers))

    return trainer


def make_evaluator(batches: Iterable[Batch]) -> Callable[[nn.Module], float]:
    """An NNI-style `evaluator(model) -> float`: top-1 accuracy on `batches` (higher is better).

    Args:
        batches: (x, y) batches, usually held-out data.

    Returns:
        `evaluator(model) -> accuracy in [0, 1]`.
    """

    def evaluator(model: nn.Module) -> float:
        return evaluate(model, batches)

    return evaluator


def make_finetuner(batches: Iterable[Batch], epochs: int = 1, lr: float = 1e-3,
                   optimizer: str = "adam", cosine: bool = False) -> Callable[[nn.Module], None]:
    """An NNI-style `finetuner(model)`: `epochs` passes of cross-entropy training with a fresh optimizer.

    Args:
        batches: re-iterable (x, y) training batches.
        epochs: passes per call.
        lr: learning rate.
        optimizer: "adam" or "sgd".
        cosine: cosine learning-rate decay over the epochs.

    Returns:
        `finetuner(model) -> None`; the model is trained in place and left in eval mode.
    """

    def finetuner(model: nn.Module) -> None:
        train(model, batches, epochs, lr, optimizer=optimizer, cosine=cosine, desc="fine-tuning")

    return finetuner
