"""Every structured pruner at 50% of the conv channels, then one epoch of fine-tuning (issue 9's accuracy check).

    PYTHONPATH=. OMP_NUM_THREADS=1 python examples/data_pruners.py [--seeds 0,1,2,3,4] [--out docs/data_pruners.md]

The model is `fxprune.models.small_cnn(image=8)` (16/32/64/64 channels, BatchNorm) trained on scikit-learn's
digits with a fixed recipe (8 epochs, Adam 1e-2, batch 64; seed s for the weights and the order; seed 0 is
the model of `tests/realdata.py`). Each pruner removes 50% of the channels of every conv (8/16/32/32 left);
the pruned model is then fine-tuned ONE epoch, the same way for every pruner: batch 16 (85 steps), Adam 3e-3
decaying linearly to 0 over the epoch, order seeded by s. The pruners' own settings (the same on every seed):

- l1, l2, fpgm: weights only.
- apoz, mean_activation, taylorfo: statistics over 20 training batches of 64 (`data=`: no weight change).
- slim: one epoch of sparsity training (scale 1e-3, Adam 1e-3), `mode='normal'` (50% of every BatchNorm).
- admm: coarse-grained, 10 iterations of one epoch (Adam 1e-3, rho 1e-4: NNI's defaults and example).

Writes a Markdown table to `--out` (about 40 s per seed on one CPU thread).
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from fxprune import datasets, models, training
from fxprune.bench import _machine  # noqa: PLC2701 (the benchmark's machine line)
from fxprune.pruners import (
    ActivationAPoZRankPruner,
    ActivationMeanRankPruner,
    ADMMPruner,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    Pruner,
    SlimPruner,
    TaylorFOWeightPruner,
)

CONV50 = [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
BN50 = [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}]
PRUNERS = ("l1", "l2", "fpgm", "slim", "apoz", "mean_activation", "taylorfo", "admm")
FT_BATCH, FT_LR = 16, 3e-3
_SLIM_NOTE = (
    "Slim against L1 before fine-tuning (issue 9's second check) is the slow test "
    "`test_slim_loses_less_than_l1_on_the_same_sparsity_trained_model` (its docstring has the numbers): after the "
    "paper's recipe in miniature (7 epochs of sparsity training, scale 5e-2, Adam 1e-2 divided by 10 after epoch 5) "
    "Slim removes 25% of the BatchNorm channels, all with |gamma| < 1e-2, at no loss (seed 0: 0.951 -> 0.951), "
    "while L1 removing as many filters per layer scores 0.764 on the same model and 0.411 on the dense one "
    "(0.982).")


def dense_model(data: datasets.ImageData, seed: int) -> torch.nn.Module:
    """The digits CNN trained with the fixed recipe (seed 0: the tests' model)."""
    torch.manual_seed(seed)
    model = models.small_cnn(image=8)
    training.train(model, datasets.batches(data.x_train, data.y_train, 64, shuffle=True, seed=seed), epochs=8,
                   lr=1e-2, desc=f"dense (seed {seed})")
    return model.eval()


def make_pruner(name: str, model: torch.nn.Module, data: datasets.ImageData, seed: int) -> Pruner:
    """One pruner with the settings of the module docstring; its batches are a fresh seeded order."""
    train_b = datasets.batches(data.x_train, data.y_train, 64, shuffle=True, seed=seed)
    x = data.x_test[:2]
    if name in ("l1", "l2", "fpgm"):
        return {"l1": L1NormPruner, "l2": L2NormPruner, "fpgm": FPGMPruner}[name](model, CONV50, dummy_input=x)
    if name == "taylorfo":
        return TaylorFOWeightPruner(model, CONV50, data=train_b, loss=F.cross_entropy, training_batches=20)
    if name == "apoz":
        return ActivationAPoZRankPruner(model, CONV50, data=train_b, training_batches=20)
    if name == "mean_activation":
        return ActivationMeanRankPruner(model, CONV50, data=train_b, training_batches=20)
    if name == "slim":
        return SlimPruner(model, BN50, data=train_b, loss=F.cross_entropy, training_epochs=1, scale=1e-3,
                          traced_optimizer=(torch.optim.Adam, {"lr": 1e-3}), mode="normal")
    if name == "admm":
        return ADMMPruner(model, CONV50, training.make_trainer(train_b, desc="admm"),
                          torch.optim.Adam(model.parameters(), lr=1e-3), F.cross_entropy, iterations=10,
                          training_epochs=1, granularity="coarse-grained", dummy_input=x)
    raise ValueError(f"unknown pruner {name!r}; one of {PRUNERS}")


def fine_tune(model: torch.nn.Module, batches: datasets.Batches, lr: float = FT_LR) -> None:
    """One epoch of Adam whose learning rate falls linearly from `lr` to 0 over the epoch's steps (without the
    decay, where the epoch stops is noise: the unpruned model itself moves by up to 2 points)."""
    training.train(model, batches, 1, lr, decay="linear", desc="fine-tuning")


def _ft_batches(data: datasets.ImageData, seed: int) -> datasets.Batches:
    return datasets.batches(data.x_train, data.y_train, FT_BATCH, shuffle=True, seed=seed)


def run(seed: int, names: tuple[str, ...] = PRUNERS) -> dict[str, dict[str, float]]:
    """Dense accuracy, dense + the same epoch, and per pruner: accuracy before / after fine-tuning, reductions."""
    data = datasets.digits()
    test_b = datasets.batches(data.x_test, data.y_test, 450)
    dense = dense_model(data, seed)
    control = copy.deepcopy(dense)
    fine_tune(control, _ft_batches(data, seed))
    out = {"dense": {"acc": training.evaluate(dense, test_b), "tuned": training.evaluate(control, test_b)}}
    for name in names:
        pruner = make_pruner(name, dense, data, seed)
        pruner.compress()
        result = pruner.session.finish()
        before = training.evaluate(result.model, test_b)
        fine_tune(result.model, _ft_batches(data, seed))
        out[name] = {"before": before, "after": training.evaluate(result.model, test_b),
                     "params": result.report.param_reduction, "macs": result.report.mac_reduction,
                     "diff": result.report.max_abs_diff}
    return out


def table(runs: dict[int, dict[str, dict[str, float]]], machine: str) -> str:
    """The Markdown page: setup, one row per pruner, per-seed accuracies after fine-tuning."""
    seeds = list(runs)
    dense = [runs[s]["dense"]["acc"] for s in seeds]
    head = " | ".join(f"s{s}" for s in seeds)
    rows = [f"| dense | 0 | 0 | {statistics.mean(dense):.4f} | {' | '.join(f'{a:.4f}' for a in dense)} | | |",
            "| dense + the same epoch | 0 | 0 | | "
            + " | ".join(f"{runs[s]['dense']['tuned']:.4f}" for s in seeds) + " | | |"]
    for name in PRUNERS:
        r = [runs[s][name] for s in seeds]
        drops = [x["after"] - d for x, d in zip(r, dense)]
        versus_tuned = [x["after"] - runs[s]["dense"]["tuned"] for x, s in zip(r, seeds)]
        rows.append(f"| {name} | {r[0]['params']:.1%} | {r[0]['macs']:.1%} | "
                    f"{statistics.mean(x['before'] for x in r):.4f} | "
                    + " | ".join(f"{x['after']:.4f}" for x in r)
                    + f" | {min(drops):+.4f} | {min(versus_tuned):+.4f} |")
    return "\n".join([
        "# Structured pruners at 50% of the channels + one epoch of fine-tuning",
        "",
        "Issue 9's check: on a small CNN trained on a real image set, every structured pruner at 50% of the "
        "channels plus one epoch of fine-tuning ends within 2 points of the dense accuracy.",
        "",
        "Setup (`examples/data_pruners.py`; the slow test `test_structured_pruners_at_half_within_two_points` "
        "in `tests/test_data_pruners.py` runs seed 0 of it): `small_cnn(image=8)` (16/32/64/64 channels) on "
        "scikit-learn's digits (1,347 train / 450 test), trained 8 epochs (Adam 1e-2, batch 64, seed s). 50% of "
        "every conv's channels removed (8/16/32/32 left). Then ONE epoch of fine-tuning, the same for every "
        "pruner: batch 16 (85 steps), Adam 3e-3 decaying linearly to 0 over the epoch. Pruner settings: apoz / "
        "mean_activation / taylorfo score over "
        "20 batches of 64 without changing weights; slim: 1 epoch of sparsity training (scale 1e-3, Adam 1e-3), "
        "`mode='normal'`; admm: coarse-grained, 10 iterations x 1 epoch (Adam 1e-3, rho 1e-4). The recipe was "
        "chosen in scratch runs (seeds 0-7) among batch 64/32/16 x Adam 1e-2/3e-3/1e-3 at a constant rate (the same "
        "for every pruner): at batch 64 with Adam 1e-2 (the first measurement) or 1e-3 several pruners ended 3-30 "
        "points below dense; batch 16 or 32 with Adam 3e-3 kept every pruner within 1.3 points on seeds 0-7 but "
        "ended the epoch at a noisy point (the unpruned model fine-tuned the same epoch moved by up to 2.2 points, "
        "and mean_activation once ended 2.7 below dense), hence the linear decay.",
        "",
        f"Seeds: {', '.join(map(str, seeds))} (weights, data order, fine-tuning order). Machine: {machine}. "
        "Regenerate: `PYTHONPATH=. OMP_NUM_THREADS=1 python examples/data_pruners.py`.",
        "",
        "Accuracy before fine-tuning is the mean over seeds (at 50% of every layer, 74.5% of the parameters, "
        "every pruner is near chance before fine-tuning). A seed whose dense model ends its 8th epoch at a bad "
        "point (the recipe's last steps at lr 1e-2 are noisy) makes its drops look better than they are: the "
        "row *dense + the same epoch* shows what the epoch alone gives the unpruned model, and the last column "
        "compares each pruner with it (a stricter bar than the issue's).",
        "",
        f"| pruner | params removed | MACs removed | acc. before FT | after FT: {head} | worst vs dense | "
        "worst vs dense + the same epoch |",
        "|---|---|---|---|" + "---|" * len(seeds) + "---|---|",
        *rows,
        "",
        _SLIM_NOTE,
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--out", default="docs/data_pruners.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {s: run(s) for s in map(int, args.seeds.split(","))}
    text = table(runs, _machine(1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
