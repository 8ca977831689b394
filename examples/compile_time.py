"""How long fxprune.compile takes, pass by pass, on a full-width ResNet-50 (1x3x224x224, 50% channels).

    python examples/compile_time.py            # prints a Markdown table
    python examples/compile_time.py --runs 5

Median over `--runs` runs after one warm-up run. When torch-pruning is installed, its graph build
(`MetaPruner(...)`, which traces the model) plus `step()` is timed on the same model for comparison.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fxprune  # noqa: E402
from fxprune.models import resnet50  # noqa: E402

__all__ = ["measure", "to_markdown"]


def _fxprune_once(model: torch.nn.Module, x: torch.Tensor, sparsity: float) -> dict[str, float]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fxprune.compile(model, {"pruner": "l1", "sparsity": sparsity}, x)
    timings = dict(result.report.timings)
    timings["total"] = time.perf_counter() - start
    return timings


def _torch_pruning_once(model: torch.nn.Module, x: torch.Tensor, sparsity: float) -> dict[str, float]:
    import torch_pruning as tp

    model = copy.deepcopy(model)
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=sparsity, ignored_layers=[model.fc])
    built = time.perf_counter()
    pruner.step()
    done = time.perf_counter()
    return {"graph build": built - start, "prune": done - built, "total": done - start}


def measure(runs: int = 3, sparsity: float = 0.5, size: int = 224) -> dict[str, Any]:
    """Median seconds per pass of fxprune.compile (and Torch-Pruning's build + step) on ResNet-50.

    Args:
        runs: timed runs after one warm-up.
        sparsity: fraction of channels removed.
        size: input height and width.

    Returns:
        {"fxprune": {pass: seconds}, "torch_pruning": {...} or None, "runs": runs, "model": description}.
    """
    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.randn(1, 3, size, size)
    out: dict[str, Any] = {"runs": runs, "model": f"ResNet-50 (width 64, 1000 classes), 1x3x{size}x{size}, "
                           f"L1, {sparsity:.0%} of channels", "torch_pruning": None}
    samples = [_fxprune_once(model, x, sparsity) for _ in range(runs + 1)][1:]
    out["fxprune"] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        return out
    samples = [_torch_pruning_once(model, x, sparsity) for _ in range(runs + 1)][1:]
    out["torch_pruning"] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    return out


def to_markdown(m: dict[str, Any]) -> str:
    """The result of `measure` as Markdown."""
    lines = [f"{m['model']}; median of {m['runs']} runs after a warm-up.", "",
             "| tool | step | ms |", "|---|---|---:|"]
    lines += [f"| fxprune | {k} | {v * 1e3:.0f} |" for k, v in m["fxprune"].items()]
    if m["torch_pruning"]:
        lines += [f"| Torch-Pruning | {k} | {v * 1e3:.0f} |" for k, v in m["torch_pruning"].items()]
    else:
        lines.append("| Torch-Pruning | not installed | - |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    print(to_markdown(measure(args.runs, args.sparsity, args.size)))


if __name__ == "__main__":
    main()
