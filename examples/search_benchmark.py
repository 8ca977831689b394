"""Search pruners against uniform L1 at the same MACs budget, with the same fine-tuning after the search.

    PYTHONPATH=. OMP_NUM_THREADS=1 python examples/search_benchmark.py [--budget 0.5] [--seeds 0 1 2] [--out FILE]
    PYTHONPATH=. OMP_NUM_THREADS=1 python examples/search_benchmark.py --latency    # only the latency section

Protocol (the MACs table): Fashion-MNIST (Debian's `dataset-fashion-mnist`, `fxprune.datasets.fashion_mnist`):
a seeded subset of the official training set, split into a training part and a VALIDATION part; the
official 10,000-image test set is used for the final numbers only. Per seed, one dense
`small_cnn(image=28, width=--width)` is trained (paired: every method prunes that same model); uniform L1,
Simulated Annealing, NetAdapt, AMC and AutoCompress each remove `--budget` of its MACs (batch 1, Conv2d
layers, `l1` channels), every search scoring its candidates with accuracy on the validation part (never the
test set). Each pruned model is then fine-tuned the same way (`--epochs` of Adam `--lr` with linear decay,
batch `--batch`, the same seeded order for every method) and its test accuracy recorded. The table gives the
mean over seeds, each seed, and the paired difference to uniform L1; it replaces everything in `--out` above
the latency section.

`--latency`: v1 NetAdapt with `target='latency'` (keep 50% of the dense onnxruntime latency) on a CNN whose
latency is measurable (the 28x28 MNIST CNN, width 32, batch 8: a few ms, where the 8x8 digits CNN takes
~0.05 ms, all overhead); the search counts candidates with the per-layer table, then its final model is
measured end to end against the dense model (paired runs) and calibrated; the section "NetAdapt to a latency
budget" of `--out` is written (replaced), the rest of the file kept.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import fxprune
from fxprune import datasets, models, training
from fxprune.pruners import AMCPruner, AutoCompressPruner, SimulatedAnnealingPruner
from fxprune.pruners.search import NetAdaptPruner, SearchSpace

METHODS = ("uniform L1", "SimulatedAnnealing", "NetAdapt", "AMC", "AutoCompress")


@dataclass
class _Split:
    """Training, validation (the searches' score) and test (the final numbers) tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _split(n_train: int, n_val: int, n_test: int | None) -> _Split:
    """A seeded subset of Fashion-MNIST's training set cut into train / validation; the official test set."""
    data = datasets.fashion_mnist(n_train=n_train + n_val, n_test=n_test, seed=0)  # already a random subset
    return _Split(data.x_train[:n_train], data.y_train[:n_train], data.x_train[n_train:], data.y_train[n_train:],
                  data.x_test, data.y_test)


@dataclass
class _Row:
    """One method's numbers on one seed."""

    macs_removed: float
    params_removed: float
    val_search: float
    test_search: float
    test_final: float
    candidates: int
    seconds: float
    cpu: float
    extra: dict = field(default_factory=dict)


_LATENCY_TITLE = "## NetAdapt to a latency budget"


def latency_section(budget: float = 0.5, batch: int = 8, log: Path | None = None) -> str:
    """v1 NetAdapt with target='latency' keeping `budget` of the dense latency; the section's Markdown."""
    from fxprune.latency import EndToEnd
    from fxprune.pruners.v1 import NetAdaptPruner as NetAdaptV1

    log = Path(tempfile.mkdtemp(prefix="fxprune_search_")) if log is None else log
    torch.manual_seed(0)
    data = datasets.mnist5k()
    train_b = datasets.batches(data.x_train, data.y_train, 64, shuffle=True)
    evaluator = training.make_evaluator(datasets.batches(data.x_test, data.y_test, 500))
    model = models.small_cnn(image=28, width=32)
    training.train(model, train_b, epochs=1, lr=1e-2)
    model.eval()
    dense_acc = evaluator(model)

    def finetune(m: torch.nn.Module) -> None:
        torch.manual_seed(0)
        training.train(m, train_b, epochs=1, lr=1e-3, max_steps=15)

    x = data.x_test[:batch]
    start = time.perf_counter()
    pruner = NetAdaptV1(model, [{"sparsity": 1 - budget, "op_types": ["Conv2d"]}], short_term_fine_tuner=finetune,
                        evaluator=evaluator, sparsity_per_iteration=0.1, experiment_data_dir=log / "netadapt_latency",
                        dummy_input=x, target="latency")
    pruner.compress()
    seconds = time.perf_counter() - start
    summary = pruner.summary()
    steps, chosen = summary["latency"]["steps"], summary["latency"]["chosen_step"]
    result = pruner.result
    # an independent check: a fresh dense export, the finished pruned model's masks, paired again
    check = EndToEnd(pruner.space.session.model, pruner.space.session.graph, (x,), runs=30).measure(result.masks)
    load = os.getloadavg()
    rows = [f"| {i} | {s['table_fraction']:.3f} | {s['table_ratio']:.3f} | {s['wall_ratio']:.3f} | "
            f"{s['kernel_ratio']:.3f} | {s['wall_median_ratio']:.3f} | {s['kernel_median_ratio']:.3f} | "
            f"{s['wall_ms']:.2f} / {s['dense_wall_ms']:.2f} |{' **chosen**' if i == chosen else ''}"
            for i, s in enumerate(steps)]
    final = steps[chosen]
    text = "\n".join([
        _LATENCY_TITLE,
        "",
        f"v1 `NetAdaptPruner(..., target='latency')` keeping {budget:.0%} of the dense onnxruntime latency "
        f"(`sparsity={1 - budget:g}`): MNIST-5k CNN (`small_cnn(image=28, width=32)`, 1 epoch, dense accuracy "
        f"{dense_acc:.4f}), batch {batch}, Conv2d layers searched, steps of 10% of the table's latency, 15 Adam "
        "steps of short-term fine-tuning per proposal. The search counts candidates with the per-layer latency "
        "table (`fxprune.latency.LatencyTable`); its best is then pruned, exported and measured end to end in "
        "onnxruntime (1 intra-op thread: see `fxprune.latency.EndToEnd`) paired with the dense model (dense "
        "and pruned runs alternate, at least 20 pairs and 1 s), and "
        "the table's fraction corrected (`fxprune.latency.calibrate`) until the measured ratio is within 3%. "
        "Ratios are pruned / dense; *wall* and *kernel* compare the fastest paired run (wall clock; the "
        "profiler's summed kernel time), the medians are shown for comparison (under load they move with it). "
        f"Load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min, 2 "
        f"cores shared with other jobs). Regenerate: `PYTHONPATH=. OMP_NUM_THREADS=1 python "
        "examples/search_benchmark.py --latency`.",
        "",
        "| step | table fraction asked | table estimate | wall (fastest) | kernel (fastest) | wall median | "
        "kernel median | fastest ms pruned / dense |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Result: {final['wall_ratio']:.3f} of the dense latency end to end (budget {budget:g}: "
        f"{'within' if abs(final['wall_ratio'] / budget - 1) <= 0.05 else 'NOT within'} 5%), accuracy "
        f"{summary['best_score']:.4f} after the search, {len(pruner.history)} candidates, {seconds:.0f} s. "
        f"Independent re-measurement of the finished model (fresh dense export, 30 pairs): wall "
        f"{check.wall_ratio:.3f}, kernel {check.kernel_ratio:.3f} (medians {check.wall_median_ratio:.3f}, "
        f"{check.kernel_median_ratio:.3f}).",
        "",
    ])
    (log / "netadapt_latency" / "check.json").write_text(json.dumps(check.as_dict(), indent=2))
    return text


def _replace_section(path: Path, title: str, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def _train_batches(split: _Split, args: argparse.Namespace, seed: int) -> datasets.Batches:
    return datasets.batches(split.x_train, split.y_train, args.batch, shuffle=True, seed=seed)


def _dense(split: _Split, args: argparse.Namespace, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = models.small_cnn(image=28, width=args.width)
    training.train(model, _train_batches(split, args, seed), epochs=args.dense_epochs, lr=args.lr, decay="linear",
                   desc=f"dense seed {seed}")
    return model.eval()


def _finetuned_evaluator(val: Callable[[torch.nn.Module], float], split: _Split, args: argparse.Namespace,
                         seed: int) -> Callable[[torch.nn.Module], float]:
    """The evaluator a user would write: a copy of each candidate gets the same short fine-tune, then `val`.

    Accuracy right after pruning is a weak guide to accuracy after fine-tuning; this scores what the candidate
    becomes after `--candidate-ft-steps` Adam steps instead. Every call trains on the same batches in the same
    order (a fresh seeded pass) and leaves the search's own random state untouched.
    """

    def evaluate(m: torch.nn.Module) -> float:
        m = copy.deepcopy(m)  # the search keeps its candidate unchanged
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            training.train(m, datasets.batches(split.x_train, split.y_train, args.batch, shuffle=True,
                                               seed=40_000 + seed), epochs=1, lr=args.short_lr,
                           max_steps=args.candidate_ft_steps, desc="candidate fine-tune")
        return val(m)

    return evaluate


def _searches(model: torch.nn.Module, split: _Split, args: argparse.Namespace, seed: int, log: Path) -> dict:
    """Each method's pruner factory; every one scores candidates with `val` (validation accuracy)."""
    val = training.make_evaluator(datasets.batches(split.x_val, split.y_val, 100))
    x = split.x_val[:1]
    cfg = [{"total_sparsity": args.budget, "op_types": ["Conv2d"]}]
    short_b = _train_batches(split, args, 10_000 + seed)
    score = val if args.candidate_ft_steps == 0 else _finetuned_evaluator(val, split, args, seed)

    def short_term(m: torch.nn.Module) -> None:  # NetAdapt's short-term fine-tuning of every proposal
        torch.manual_seed(seed)
        training.train(m, short_b, epochs=1, lr=args.short_lr, max_steps=args.short_steps, desc="short-term")

    admm_b = _train_batches(split, args, 20_000 + seed)
    return {
        "SimulatedAnnealing": lambda: SimulatedAnnealingPruner(
            model, cfg, evaluator=score, pruning_algorithm="l1", cool_down_rate=args.cool_down_rate, target="flops",
            seed=seed, log_dir=log / "sa"),
        "NetAdapt": lambda: NetAdaptPruner(
            model, [{"sparsity": args.budget, "op_types": ["Conv2d"]}], short_term, val,
            sparsity_per_iteration=args.netadapt_step, experiment_data_dir=log / "netadapt", target="flops",
            seed=seed, dummy_input=x),
        "AMC": lambda: AMCPruner(args.amc_episodes, model, cfg, x, score, log_dir=log / "amc", seed=seed,
                                 ddpg_params={"warmup": args.amc_episodes // 4, "hidden1": 64, "hidden2": 64,
                                              "bsize": 32}),
        "AutoCompress": lambda: AutoCompressPruner(
            model, cfg, 2, {"trainer": training.make_trainer(admm_b, 1), "criterion": torch.nn.CrossEntropyLoss(),
                            "traced_optimizer": torch.optim.Adam(model.parameters(), lr=1e-3), "iterations": 2,
                            "training_epochs": 1},
            {"evaluator": score, "cool_down_rate": args.cool_down_rate, "target": "flops", "seed": seed},
            log_dir=log / "autocompress", speedup=True, dummy_input=x),
    }


def _seed_rows(split: _Split, args: argparse.Namespace, seed: int, log: Path) -> tuple[float, dict[str, _Row]]:
    """Train one dense model, prune it with every method, fine-tune each the same way; test accuracies."""
    # batches of 100: on one CPU thread twice as fast as 1,000 (the activations stay in cache)
    val = training.make_evaluator(datasets.batches(split.x_val, split.y_val, 100))
    test = training.make_evaluator(datasets.batches(split.x_test, split.y_test, 100))
    model = _dense(split, args, seed)
    dense = test(model)
    x = split.x_val[:1]
    found: dict[str, tuple[fxprune.CompileResult, float, float, int, dict]] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    space = SearchSpace(model, [{"total_sparsity": args.budget, "op_types": ["Conv2d"]}], x, "l1", "flops")
    uniform = space.scale_to_budget(np.ones(len(space.units)))
    session = fxprune.prepare(model, {"pruner": "l1", "rules": space.config_list(uniform)}, x)
    session.apply(session.compute_masks())
    found["uniform L1"] = (session.finish(), time.perf_counter() - wall, time.process_time() - cpu, 0, {})
    for name, make in _searches(model, split, args, seed, log / f"seed{seed}").items():
        print(f"seed {seed}: {name} ...", file=sys.stderr, flush=True)
        wall, cpu = time.perf_counter(), time.process_time()
        pruner = make()
        pruner.compress()
        if isinstance(pruner, AutoCompressPruner):
            candidates, extra = sum(r["sa_candidates"] for r in pruner.rounds), {}
        else:
            candidates, extra = len(pruner.history), {}
            if isinstance(pruner, SimulatedAnnealingPruner):
                extra = {"acceptance_rate": pruner.summary()["acceptance_rate"]}
        found[name] = (pruner.result, time.perf_counter() - wall, time.process_time() - cpu, candidates, extra)
    rows = {}
    macs0, params0 = found["uniform L1"][0].report.macs_before, found["uniform L1"][0].report.params_before
    for name, (result, seconds, cpu_s, candidates, extra) in found.items():
        pruned = copy.deepcopy(result.model)
        val_search, test_search = val(pruned), test(pruned)
        torch.manual_seed(seed)
        training.train(pruned, _train_batches(split, args, 30_000 + seed), epochs=args.epochs, lr=args.lr,
                       decay="linear", desc=f"fine-tuning {name}")  # the same order for every method
        # against the dense model (AutoCompress's last round reports against its own input model)
        rows[name] = _Row(1 - result.report.macs_after / macs0, 1 - result.report.params_after / params0,
                          val_search, test_search, test(pruned), candidates, seconds, cpu_s, extra)
        print(f"seed {seed}: {name}: {rows[name]}", file=sys.stderr, flush=True)
    return dense, rows


def _table(args: argparse.Namespace, split: _Split, dense: dict[int, float], rows: dict[int, dict[str, _Row]],
           total_wall: float, total_cpu: float, load: tuple[float, float, float]) -> str:
    seeds = sorted(rows)
    lines = []
    for name in METHODS:
        r = [rows[s][name] for s in seeds]
        final = np.array([x.test_final for x in r])
        delta = final - np.array([rows[s]["uniform L1"].test_final for s in seeds])
        per_seed = " / ".join(f"{v:.4f}" for v in final)
        per_delta = " / ".join(f"{v:+.4f}" for v in delta)
        lines.append(
            f"| {name} | {np.mean([x.macs_removed for x in r]):.1%} | {np.mean([x.params_removed for x in r]):.1%} | "
            f"{np.mean([x.val_search for x in r]):.4f} | {np.mean([x.test_search for x in r]):.4f} | "
            f"**{final.mean():.4f}** | {per_seed} | {delta.mean():+.4f} ({per_delta}) | "
            f"{np.mean([x.candidates for x in r]):.0f} | {np.mean([x.seconds for x in r]):.0f} / "
            f"{np.mean([x.cpu for x in r]):.0f} |")
    sa_rate = np.mean([rows[s]["SimulatedAnnealing"].extra["acceptance_rate"] for s in seeds])
    below = [n for n in METHODS[1:4] if np.mean([rows[s][n].test_final - rows[s]["uniform L1"].test_final
                                                 for s in seeds]) < 0]
    verdict = ("SA, NetAdapt and AMC each reach at least uniform L1's mean test accuracy after fine-tuning."
               if not below else
               f"**Below uniform L1 on the mean:** {', '.join(below)} (reported as measured; the search "
               "hyperparameters are the same for every seed and were not tuned per method).")
    spread = ", ".join(f"{n} {np.std([rows[s][n].test_final - rows[s]['uniform L1'].test_final for s in seeds]):.4f}"
                       for n in METHODS[1:])
    verdict += (f" Standard deviation over seeds of the paired difference to uniform L1: {spread}; "
                f"one test image is {1 / len(split.x_test):.4f}.")
    return "\n".join([
        "# Search pruners against uniform L1",
        "",
        f"Fashion-MNIST (`fxprune.datasets.fashion_mnist`): {len(split.x_train)} training and {len(split.x_val)} "
        f"validation images (a seeded subset of the official training set, disjoint), the official "
        f"{len(split.x_test)}-image test set. Per seed, one dense `small_cnn(image=28, width={args.width})` "
        f"({args.dense_epochs} epochs, Adam {args.lr:g} with linear decay, batch {args.batch}); test accuracy "
        + ", ".join(f"{dense[s]:.4f}" for s in seeds) + f" (seeds {', '.join(map(str, seeds))}). "
        f"Every method prunes that same dense model (paired) to {args.budget:.0%} of its MACs removed (batch 1), "
        "Conv2d layers searched, `l1` channels. **Every search scores its candidates with accuracy on the "
        "validation images; the test set is used only for the columns marked test.** Every pruned model is then "
        f"fine-tuned the same way: {args.epochs} epochs of Adam {args.lr:g} with linear decay, batch {args.batch}, "
        "the same seeded order for every method. "
        + (f"**Candidate scoring:** every SA, AMC and AutoCompress-SA candidate (and the dense model they "
           f"normalise by) is scored after the same short fine-tune of a copy: {args.candidate_ft_steps} Adam "
           f"steps ({args.short_lr:g}) on the same training batches in the same order, then validation accuracy "
           "(an evaluator wrapper, `--candidate-ft-steps`); the columns after search are the pruned model itself, "
           "without that fine-tune. " if args.candidate_ft_steps else
           "SA, AMC and AutoCompress's SA score each candidate right after pruning (no fine-tuning). ")
        + f"SA: cool_down_rate {args.cool_down_rate:g} (other settings NNI's "
        f"defaults; mean acceptance rate {sa_rate:.2f}); NetAdapt: steps of {args.netadapt_step:.0%} of the dense "
        f"MACs, short-term fine-tuning of {args.short_steps} Adam steps ({args.short_lr:g}) per proposal; AMC: "
        f"{args.amc_episodes} episodes ({args.amc_episodes // 4} warm-up), hidden 64; AutoCompress: 2 rounds of SA "
        f"(cool_down_rate {args.cool_down_rate:g}) then ADMM (2 iterations x 1 epoch, Adam 1e-3); its candidates "
        "are SA's over both rounds and its time includes ADMM training. NetAdapt and AutoCompress train inside "
        "the search (that is their method)"
        + ("; SA and AMC train only the candidate copies they score; uniform L1 does not." if args.candidate_ft_steps
           else "; SA, AMC and uniform L1 do not."),
        "",
        f"Whole run: {total_wall / 60:.1f} min wall, {total_cpu / 60:.1f} min CPU (1 thread), load average at the "
        f"end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min, 2 cores shared with other jobs); on a "
        "quiet machine the wall time is about the CPU time. Regenerate: `PYTHONPATH=. OMP_NUM_THREADS=1 python "
        "examples/search_benchmark.py"
        + (f" --candidate-ft-steps {args.candidate_ft_steps}" if args.candidate_ft_steps else "") + "`.",
        "",
        "| method | MACs removed | params removed | val. acc. after search | test acc. after search | "
        "**test acc. after fine-tuning** (mean) | per seed | vs uniform L1 (mean; per seed) | candidates | "
        "search s, wall / CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        verdict,
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.5, help="fraction of MACs to remove")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one dense model per seed (paired)")
    parser.add_argument("--width", type=int, default=16, help="small_cnn width (blocks w, 2w, 4w, 4w)")
    parser.add_argument("--n-train", type=int, default=10_000, help="training images")
    parser.add_argument("--n-val", type=int, default=2_000, help="validation images (the searches' score)")
    parser.add_argument("--n-test", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--dense-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after every search")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (dense and fine-tuning)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cool-down-rate", type=float, default=0.8, help="SA's and AutoCompress's SA")
    parser.add_argument("--netadapt-step", type=float, default=0.1, help="NetAdapt's sparsity_per_iteration")
    parser.add_argument("--short-steps", type=int, default=50, help="NetAdapt's short-term fine-tuning steps")
    parser.add_argument("--short-lr", type=float, default=1e-3)
    parser.add_argument("--candidate-ft-steps", type=int, default=0,
                        help="Adam steps (--short-lr) of fine-tuning of every SA, AMC and AutoCompress-SA candidate "
                             "before its validation score (0: scored right after pruning)")
    parser.add_argument("--amc-episodes", type=int, default=100)
    parser.add_argument("--log-dir", default=None, help="search histories (default: a temporary directory)")
    parser.add_argument("--out", default="docs/search.md")
    parser.add_argument("--latency", action="store_true", help="only the NetAdapt latency-budget section")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.latency:
        text = latency_section()
        _replace_section(Path(args.out), _LATENCY_TITLE, text)
        print(text)
        return
    log = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="fxprune_search_"))
    wall, cpu = time.perf_counter(), time.process_time()
    split = _split(args.n_train, args.n_val, args.n_test)
    dense, rows = {}, {}
    for seed in args.seeds:
        dense[seed], rows[seed] = _seed_rows(split, args, seed, log)
    text = _table(args, split, dense, rows, time.perf_counter() - wall, time.process_time() - cpu, os.getloadavg())
    (log / "results.json").write_text(json.dumps({"args": vars(args), "dense": dense, "rows": {
        s: {n: r.__dict__ for n, r in rs.items()} for s, rs in rows.items()}}, indent=2, default=str))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    kept = re.search(rf"^{re.escape(_LATENCY_TITLE)}\n.*", Path(args.out).read_text(), re.S | re.M) \
        if Path(args.out).exists() else None
    Path(args.out).write_text(text + ("\n" + kept.group(0) if kept else ""))
    print(text)


if __name__ == "__main__":
    main()
