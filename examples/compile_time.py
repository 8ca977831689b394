"""fxprune.compile against Torch-Pruning, side by side in one process, on ResNet-50 and a ViT-B/16-sized ViT.

    python examples/compile_time.py                 # 5 alternating pairs per model, Markdown on stdout
    python examples/compile_time.py --runs 9 --models resnet50

fxprune: `fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, x)`, everything included (trace, analysis,
scoring, mask pass, speedup, verification of masked == pruned, report), timed pass by pass from
`result.report.timings`. Torch-Pruning: `MetaPruner(...)` (its graph build, which runs the model once) plus
`step()` on a deep copy made outside the timed region (it prunes in place), with L1 magnitude importance and
the same ratio; on the ViT it prunes the same units as fxprune's default (half the attention heads and half the
MLP channels, the hidden size kept: `num_heads`, `prune_num_heads=True`, fc2/proj/head ignored). That deep copy
is timed too and shown apart, with a second ratio that adds it to Torch-Pruning's total (what a user who keeps
the original model pays; fxprune's total includes its own copy). The target is judged on the first ratio.

After each run, the model forwards inside the totals are timed once more on their own: fxprune's verification
runs the masked and the pruned model (no_grad), Torch-Pruning's graph build runs the dense model with autograd
recording. The last row subtracts them: what each tool spends besides running the model.

Runs alternate (fxprune, Torch-Pruning, then the other order) after one warm-up of each, so load on a shared
machine hits both alike; the ratio is the median of the per-pair ratios fxprune / Torch-Pruning. Each run
starts after `gc.collect()` (outside the timed region, for both tools), so that neither pays for a full
garbage collection of the other's leftovers (one costs about 0.2 s in this process; `timeit` disables the
collector for the same reason).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from vit import Attention, vit_b16  # noqa: E402

import fxprune  # noqa: E402
from fxprune.models import resnet50  # noqa: E402

__all__ = ["MODELS", "measure", "to_markdown"]

#: name -> (factory, input shape, description)
MODELS: dict[str, tuple[Any, tuple[int, ...], str]] = {
    "resnet50": (lambda: resnet50(), (1, 3, 224, 224), "ResNet-50 (width 64, 1000 classes), 1x3x224x224"),
    "vit_b16": (lambda: vit_b16(), (1, 3, 224, 224), "ViT-B/16-sized ViT (12 blocks, width 768, 12 heads), "
                                                      "1x3x224x224"),
}


COPY = "deep copy (not in total)"
#: forwards timed on their own after each run (already inside the totals, in verify and in the graph build)
MASKED, PRUNED = "of which: masked forward (no_grad)", "of which: pruned forward (no_grad)"
DENSE = "of which: dense forward with autograd"


def _forward_time(model: torch.nn.Module, x: torch.Tensor, grad: bool) -> float:
    with torch.set_grad_enabled(grad):
        start = time.perf_counter()
        model(x)
        return time.perf_counter() - start


def _fxprune_once(model: torch.nn.Module, x: torch.Tensor, sparsity: float) -> dict[str, float]:
    gc.collect()  # each run starts with no garbage of the previous one (a full collection costs ~0.2 s here)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fxprune.compile(model, {"pruner": "l1", "sparsity": sparsity}, x)
    timings = dict(result.report.timings)
    timings["total"] = time.perf_counter() - start
    timings[MASKED] = _forward_time(result.masked_model, x, grad=False)
    timings[PRUNED] = _forward_time(result.model, x, grad=False)
    return timings


def _torch_pruning_once(model: torch.nn.Module, x: torch.Tensor, sparsity: float) -> dict[str, float]:
    import torch_pruning as tp

    original = model
    start = time.perf_counter()
    model = copy.deepcopy(model)  # Torch-Pruning prunes in place: a user who keeps the original copies it first
    copied = time.perf_counter() - start
    gc.collect()
    ignored: list[torch.nn.Module] = [m for m in (getattr(model, "fc", None), getattr(model, "head", None)) if m]
    heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}
    if heads:  # prune what fxprune prunes by default: heads and MLP channels, not the hidden size
        ignored += [m for b in model.blocks for m in (b.fc2, b.attn.proj)]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=sparsity, ignored_layers=ignored, num_heads=heads,
                                      prune_num_heads=bool(heads), head_pruning_ratio=sparsity)
        built = time.perf_counter()
        pruner.step()
    done = time.perf_counter()
    return {"graph build": built - start, "prune": done - built, "total": done - start, COPY: copied,
            DENSE: _forward_time(original, x, grad=True)}


def _median(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def measure(name: str, runs: int = 5, sparsity: float = 0.5) -> dict[str, Any]:
    """Median seconds per pass of fxprune.compile and of Torch-Pruning's build + step, alternating.

    Args:
        name: a key of `MODELS`.
        runs: timed pairs after one warm-up of each tool.
        sparsity: fraction of channels (and heads) removed.

    Returns:
        {"model", "runs", "fxprune": {pass: s}, "torch_pruning": {step: s} or None, "ratio": median of
        per-pair fxprune / Torch-Pruning totals or None, "ratio_with_copy": the same with Torch-Pruning's deep
        copy of the model added (fxprune's total includes its own copy), "load": 1-minute load average at the end}.
    """
    factory, shape, description = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(*shape)
    try:
        import torch_pruning  # noqa: F401
        have_tp = True
    except ImportError:
        have_tp = False
    _fxprune_once(model, x, sparsity)
    if have_tp:
        _torch_pruning_once(model, x, sparsity)
    ours, theirs = [], []
    for i in range(runs):
        if i % 2 == 0 or not have_tp:
            ours.append(_fxprune_once(model, x, sparsity))
            if have_tp:
                theirs.append(_torch_pruning_once(model, x, sparsity))
        else:
            theirs.append(_torch_pruning_once(model, x, sparsity))
            ours.append(_fxprune_once(model, x, sparsity))
    return {"model": f"{description}, L1, {sparsity:.0%}", "runs": runs, "fxprune": _median(ours),
            "torch_pruning": _median(theirs) if have_tp else None,
            "ratio": statistics.median(a["total"] / b["total"] for a, b in zip(ours, theirs)) if have_tp else None,
            "ratio_with_copy": statistics.median(a["total"] / (b["total"] + b[COPY]) for a, b in zip(ours, theirs))
            if have_tp else None,
            "load": os.getloadavg()[0]}


def to_markdown(results: list[dict[str, Any]]) -> str:
    """The results of `measure` as one Markdown table per model."""
    lines: list[str] = []
    for m in results:
        lines += [f"**{m['model']}**: median of {m['runs']} alternating pairs after a warm-up; load average "
                  f"{m['load']:.1f} at the end.", "", "| tool | step | ms |", "|---|---|---:|"]
        lines += [f"| fxprune | {k} | {v * 1e3:.0f} |" for k, v in m["fxprune"].items()]
        if m["torch_pruning"]:
            lines += [f"| Torch-Pruning | {k} | {v * 1e3:.0f} |" for k, v in m["torch_pruning"].items()]
            lines += [f"| **fxprune / Torch-Pruning** | total, median of pair ratios | **{m['ratio']:.2f}** |",
                      f"| fxprune / (Torch-Pruning + its deep copy) | for a user who keeps the original model | "
                      f"{m['ratio_with_copy']:.2f} |"]
            ours, theirs = m["fxprune"], m["torch_pruning"]
            lines.append(f"| both | total less the model forwards | fxprune "
                         f"{(ours['total'] - ours[MASKED] - ours[PRUNED]) * 1e3:.0f}, Torch-Pruning "
                         f"{(theirs['total'] - theirs[DENSE]) * 1e3:.0f} |")
        else:
            lines.append("| Torch-Pruning | not installed | - |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    print(to_markdown([measure(name, args.runs, args.sparsity) for name in args.models.split(",")]))


if __name__ == "__main__":
    main()
