"""Latency-aware budgets against uniform L1 pruning, measured end to end in onnxruntime.

    python examples/latency_budget.py                         # resnet50, mobilenet_v2, vit_b16; Markdown
    python examples/latency_budget.py --models resnet50 --batch 1

Per model (random weights, batch 1, eval mode), five models exported to ONNX and timed together by
`fxprune.benchmark` (interleaved wall-clock medians AND the profiler's summed kernel time):

- dense;
- uniform: L1 with one sparsity for every group, chosen (bisection) so that the MACs are 50% of dense;
- latency-aware at equal MACs: `{"budget": {"latency": f}}` with f chosen (bisection) so that the MACs are
  50% of dense too: the same MACs, spent where the measured per-layer latency falls most;
- the same with `"budget_worth": "macs"`: a channel's score weighed by the MACs it carries, so the budget keeps
  the most MACs per unit of latency (the fastest model at a MAC count; the criterion still orders each group);
- `{"budget": {"latency": 0.5}}` as asked: does it land on half the dense latency? The compile calibrates it
  end to end (`fxprune.latency.calibrate`: the table's masks pruned, exported and run paired with the dense
  model at 1 intra-op thread, the table's fraction corrected until the fastest paired run is within 3% of the
  budget); its last step (table estimate next to the measured ratios) comes from the report's note, and an
  independent paired re-measurement (`fxprune.latency.EndToEnd`, fresh dense export, 30 pairs, 1 thread;
  and again at 2 threads, noisy on a loaded machine) checks it.

The latency-aware bisection uses the table only (`options={"latency_calibration": False}`): it aims at equal
MACs, not at a latency. The per-layer table (`fxprune.latency.LatencyTable`) is measured on first use and cached
on disk. `--models resnet50,mobilenet_v2 --half-only` runs only the `{"latency": 0.5}` check (no benchmark).
"""

from __future__ import annotations

import argparse
import logging
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
from fxprune.latency import EndToEnd  # noqa: E402
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


def _latency_aware(model: torch.nn.Module, x: torch.Tensor, macs: float, **extra: Any) -> fxprune.CompileResult:
    """`{"budget": {"latency": f}}` (the table's choice, uncalibrated) with f bisected to `macs` of the MACs."""
    return _bisect(lambda f: _compile(model, {"pruner": "l1", "budget": {"latency": f}, **extra,
                                              "options": {"latency_calibration": False}}, x), 0.05, 1.0, macs, True)


def half(name: str, batch: int = 1) -> dict[str, Any]:
    """`{"latency": 0.5}` compiled (calibrated end to end) and re-measured paired against the dense model."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(batch, 3, 224, 224)
    start = time.perf_counter()
    result = _compile(model, {"pruner": "l1", "budget": {"latency": 0.5}}, x)
    seconds = time.perf_counter() - start
    check = EndToEnd(result.masked_model, result.masks.graph, (x,), runs=30).measure(result.masks)
    two = EndToEnd(result.masked_model, result.masks.graph, (x,), threads=2, runs=30).measure(result.masks)
    note = next(n for n in result.report.notes if n.startswith("latency budget"))
    return {"name": name, "result": result, "note": note, "check": check, "two": two, "compile_s": seconds,
            "macs": _macs(result), "load": os.getloadavg()}


def run(name: str, batch: int = 1, macs: float = 0.5) -> dict[str, Any]:
    """Build the four models of `name` and benchmark them; returns the rows and the MACs fractions."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(batch, 3, 224, 224)
    start = time.perf_counter()
    uniform = _bisect(lambda s: _compile(model, {"pruner": "l1", "sparsity": s}, x), 0.0, 0.9, macs, False)
    aware, by_macs = _latency_aware(model, x, macs), _latency_aware(model, x, macs, budget_worth="macs")
    landed = half(name, batch)
    half_ = landed["result"]
    dense = _compile(model, {"pruner": "l1", "sparsity": 0.0}, x)
    built = time.perf_counter() - start
    tmp = Path(tempfile.mkdtemp(prefix="fxprune_latency_"))
    paths = {}
    models = {"dense": dense, "uniform L1": uniform, "latency-aware": aware, "latency-aware, MAC worth": by_macs,
              "latency 0.5": half_}
    for label, result in models.items():
        paths[label] = tmp / f"{label.replace(' ', '_').replace(',', '')}.onnx"
        result.export_onnx(str(paths[label]))
    bench = benchmark(paths, batch_sizes=(batch,), threads=2, warmup=3, min_runs=15, min_time_s=2.0)
    return {"name": name, "rows": bench.rows, "machine": bench.machine, "built_s": built,
            "macs": {label: _macs(result) for label, result in models.items()}, "load": os.getloadavg()[0],
            "half": landed}


def half_markdown(halves: list[dict[str, Any]]) -> str:
    """The `{"latency": 0.5}` rows: the compile's calibrated ratio (its report note) and the re-measurement."""
    lines = ["| model | MACs kept | compile's calibration (report note) | re-measured wall (fastest) | "
             "re-measured kernel (fastest) | medians wall / kernel | fastest ms pruned / dense | within 5%? | "
             "2 threads: wall / kernel (fastest), medians | compile s | load 1/5/15 min |",
             "|---|---:|---|---:|---:|---:|---:|---|---|---:|---|"]
    for h in halves:
        c, t = h["check"], h["two"]
        lines.append(f"| {h['name']} | {h['macs']:.3f} | {h['note'].split(': ', 1)[1]} | {c.wall_ratio:.3f} | "
                     f"{c.kernel_ratio:.3f} | {c.wall_median_ratio:.3f} / {c.kernel_median_ratio:.3f} | "
                     f"{c.wall_ms:.2f} / {c.dense_wall_ms:.2f} | "
                     f"{'yes' if abs(c.wall_ratio / 0.5 - 1) <= 0.05 else 'no'} | {t.wall_ratio:.3f} / "
                     f"{t.kernel_ratio:.3f}, {t.wall_median_ratio:.3f} / {t.kernel_median_ratio:.3f} | "
                     f"{h['compile_s']:.0f} | "
                     f"{' / '.join(f'{v:.1f}' for v in h['load'])} |")
    return "\n".join(lines)


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
    parser.add_argument("--half-only", action="store_true", help='only {"latency": 0.5} and its re-measurement')
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("fxprune.latency").setLevel(logging.INFO)  # the calibration steps, on stderr
    if args.half_only:
        print(half_markdown([half(name, args.batch) for name in args.models.split(",")]))
        return
    results = [run(name, args.batch) for name in args.models.split(",")]
    print(to_markdown(results))
    print(half_markdown([r["half"] for r in results]))


if __name__ == "__main__":
    main()
