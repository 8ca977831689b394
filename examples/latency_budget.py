"""Latency-aware budgets against uniform L1 pruning, measured end to end in onnxruntime.

    python examples/latency_budget.py                         # resnet50, mobilenet_v2, vit_b16; Markdown
    python examples/latency_budget.py --models resnet50 --batch 1

Per model (random weights, batch 1, eval mode), four models exported to ONNX and timed together by
`fxprune.benchmark` (interleaved wall-clock medians AND the profiler's summed kernel time):

- dense;
- uniform: L1 with one sparsity for every group, chosen (bisection) so that the MACs are 50% of dense;
- latency-aware at equal MACs: `{"budget": {"latency": f}}` with f chosen (bisection) so that the MACs are
  50% of dense too: the same MACs, spent where the measured per-layer latency falls most;
- `{"budget": {"latency": 0.5}}` as asked: does it land on half the dense latency?

The per-layer table (`fxprune.latency.LatencyTable`) is measured on first use and cached on disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from vit import vit_b16  # noqa: E402

import fxprune  # noqa: E402
from fxprune.bench import benchmark  # noqa: E402
from fxprune.errors import ConfigError  # noqa: E402
from fxprune.models import resnet50  # noqa: E402
from tests.fixtures import mobilenet_v2  # noqa: E402

__all__ = ["MODELS", "run"]

MODELS: dict[str, Any] = {"resnet50": resnet50, "mobilenet_v2": mobilenet_v2, "vit_b16": vit_b16}


def _compile(model: torch.nn.Module, config: dict[str, Any], x: torch.Tensor) -> fxprune.CompileResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxprune.compile(model, config, x)


def _macs(result: fxprune.CompileResult) -> float:
    return result.report.macs_after / result.report.macs_before


def _bisect(make: Any, lo: float, hi: float, target: float, increasing: bool, steps: int = 7) -> Any:
    """The result of make(v) whose MACs fraction is closest to target, v bisected in [lo, hi]."""
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        try:
            result = make(mid)
        except ConfigError:  # below what the model can reach: go up
            lo = mid
            continue
        if best is None or abs(_macs(result) - target) < abs(_macs(best) - target):
            best = result
        if (_macs(result) > target) == increasing:
            hi = mid
        else:
            lo = mid
    return best


def run(name: str, batch: int = 1, macs: float = 0.5) -> dict[str, Any]:
    """Build the four models of `name` and benchmark them; returns the rows and the MACs fractions."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(batch, 3, 224, 224)
    start = time.perf_counter()
    uniform = _bisect(lambda s: _compile(model, {"pruner": "l1", "sparsity": s}, x), 0.0, 0.9, macs, False)
    aware = _bisect(lambda f: _compile(model, {"pruner": "l1", "budget": {"latency": f}}, x), 0.05, 1.0, macs, True)
    half = _compile(model, {"pruner": "l1", "budget": {"latency": 0.5}}, x)
    dense = _compile(model, {"pruner": "l1", "sparsity": 0.0}, x)
    built = time.perf_counter() - start
    tmp = Path(tempfile.mkdtemp(prefix="fxprune_latency_"))
    paths = {}
    for label, result in (("dense", dense), ("uniform L1", uniform), ("latency-aware", aware),
                          ("latency 0.5", half)):
        paths[label] = tmp / f"{label.replace(' ', '_')}.onnx"
        result.export_onnx(str(paths[label]))
    bench = benchmark(paths, batch_sizes=(batch,), threads=2, warmup=3, min_runs=15, min_time_s=2.0)
    return {"name": name, "rows": bench.rows, "machine": bench.machine, "built_s": built,
            "macs": {"dense": 1.0, "uniform L1": _macs(uniform), "latency-aware": _macs(aware),
                     "latency 0.5": _macs(half)}, "load": os.getloadavg()[0]}


def to_markdown(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines += [f"**{r['name']}** (batch {r['rows'][0]['batch']}; load average {r['load']:.1f} at the end)", "",
                  "| model | MACs kept | wall median ms | wall speedup | kernel ms | kernel speedup | "
                  "kernel speedup / MAC ideal |", "|---|---:|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            m = r["macs"][row["model"]]
            lines.append(f"| {row['model']} | {m:.3f} | {row['median_ms']:.2f} | {row['speedup']:.2f}x | "
                         f"{row['kernel_ms']:.2f} | {row['kernel_speedup']:.2f}x | {row['kernel_speedup'] * m:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    print(to_markdown([run(name, args.batch) for name in args.models.split(",")]))


if __name__ == "__main__":
    main()
