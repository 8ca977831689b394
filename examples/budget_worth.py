"""Which channels a latency budget should keep, on real data: `"budget_worth": "score"` against `"macs"`.

    PYTHONPATH=. python examples/budget_worth.py                 # 2 seeds, about 4 minutes on 2 cores
    PYTHONPATH=. python examples/budget_worth.py --seeds 0,1,2 --latency 0.5

Per seed: the CNN of examples/accuracy.py trained on Fashion-MNIST (Debian's dataset-fashion-mnist) with that
script's recipe, read from `accuracy.Settings` (its width, training images, epochs, learning rate and batch), then
`{"pruner": "l1", "budget": {"latency": f}}` compiled twice, with the channels' worth their L1 score normalised
within the group (`"score"`, the default) and that score times the MACs the channel carries (`"macs"`), both
calibrated end to end to the same latency; each pruned model is fine-tuned for one epoch with the dense recipe
and scored on the whole 10,000-image test set (a standard error of about 0.3 points). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import Settings  # noqa: E402

import fxprune  # noqa: E402
from fxprune import datasets, models, training  # noqa: E402

WORTHS = ("score", "macs")


def run(seed: int, latency: float, data: datasets.ImageData) -> list[dict[str, float | str]]:
    """Train the dense CNN with `seed`, prune it to `latency` both ways and fine-tune; one row per worth."""
    s = Settings(quick=False, seed=seed, threads=torch.get_num_threads())
    train_b = datasets.batches(data.x_train, data.y_train, s.batch, shuffle=True, seed=seed)
    test_b = datasets.batches(data.x_test, data.y_test, 1000)
    torch.manual_seed(seed)
    dense = models.small_cnn(data.shape[0], len(data.classes), data.shape[-1], s.cnn_width)
    training.train(dense, train_b, s.epochs, s.lr, decay="linear", desc=f"seed {seed}: training the dense CNN")
    rows: list[dict[str, float | str]] = [{"seed": seed, "worth": "dense", "acc": training.evaluate(dense, test_b)}]
    for worth in WORTHS:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fxprune.compile(dense, {"pruner": "l1", "budget": {"latency": latency}, "budget_worth": worth},
                                     data.x_test[:1])
        seconds = time.perf_counter() - start
        model, report = result.model, result.report
        one_shot = training.evaluate(model, test_b)
        training.train(model, train_b, 1, s.lr, decay="linear", desc=f"seed {seed}: fine-tuning ({worth})")
        note = next(n for n in report.notes if n.startswith("latency budget"))
        rows.append({"seed": seed, "worth": worth, "acc": training.evaluate(model, test_b), "one_shot": one_shot,
                     "macs": report.macs_after / report.macs_before,
                     "params": report.params_after / report.params_before,
                     "latency": float(note.split("measured end to end ")[1].split(" ")[0]), "compile_s": seconds})
    return rows


def to_markdown(rows: list[dict[str, float | str]]) -> str:
    lines = ["| seed | worth | MACs kept | params kept | measured latency | one-shot acc | acc after 1 epoch | "
             "compile s |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["worth"] == "dense":
            lines.append(f"| {r['seed']} | dense | 1.000 | 1.000 | 1.000 | | {100 * r['acc']:.1f}% | |")
        else:
            lines.append(f"| {r['seed']} | {r['worth']} | {r['macs']:.3f} | {r['params']:.3f} | {r['latency']:.3f} | "
                         f"{100 * r['one_shot']:.1f}% | {100 * r['acc']:.1f}% | {r['compile_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()
    try:
        defaults = Settings(quick=False, seed=0, threads=torch.get_num_threads())
        data = datasets.fashion_mnist(n_train=defaults.n_train, n_test=defaults.n_test, seed=0)
    except datasets.DataUnavailable as exc:
        sys.exit(f"{exc.what} is not installed: {exc.install}")
    rows = [row for seed in args.seeds.split(",") for row in run(int(seed), args.latency, data)]
    print(to_markdown(rows))


if __name__ == "__main__":
    main()
