"""How fxprune.compile scales with the graph: synthetic models of about 1k, 5k and 10k graph nodes.

    python examples/scale.py                      # residual conv blocks and transformer blocks, Markdown
    python examples/scale.py --nodes 1000,5000 --kinds conv

Two families, made deep enough to reach the node count: residual conv blocks (conv-BN-ReLU-conv-BN + add +
ReLU, 16 channels, 8x8 input) and pre-norm transformer blocks (LayerNorm, qkv Linear split into 4 heads,
softmax attention, projection, GELU MLP; width 32, 8 tokens). Narrow layers on small inputs keep the forward
cheap, so the time measured is fxprune's own work per node. Per model: graph nodes, compile seconds
(L1, 50%, verification included) by pass, seconds per 1000 nodes, and how much the process's peak resident
memory grows during the compile, at one intra-op thread (see `main`). Each model compiles in its own process
(after a small warm-up compile that pays torch's lazy imports), so one row's peak memory and garbage do not
carry into the next.

Memory is read from the process's peak RSS (`resource.getrusage`), not from `tracemalloc`: tracing every
allocation slows the forwards of a graph this large by an order of magnitude (verify went from 0.3 s to 78 s
on a 6k-node graph), so it would measure the tracer, not fxprune.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fxprune  # noqa: E402

__all__ = ["ConvNet", "Transformer", "measure"]


class _ConvBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


class ConvNet(nn.Module):
    """Stem, `depth` residual blocks, pooled classifier (about 8 graph nodes per block)."""

    def __init__(self, depth: int, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(*[_ConvBlock(c) for _ in range(depth)])
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.d = heads, d
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).reshape(b, n, 3, self.heads, self.d // self.heads).permute(2, 0, 3, 1, 4)
        y = ((q @ k.transpose(-2, -1)) * (self.d // self.heads) ** -0.5).softmax(-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, self.d))
        return x + self.fc2(F.gelu(self.fc1(self.n2(x))))


class Transformer(nn.Module):
    """Token embedding (Linear), `depth` blocks, classifier (about 25 graph nodes per block)."""

    def __init__(self, depth: int, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(16, d)
        self.blocks = nn.Sequential(*[_Block(d, heads) for _ in range(depth)])
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)).mean(1))


_KINDS = {"conv": (ConvNet, (1, 3, 8, 8)), "transformer": (Transformer, (1, 8, 16))}


def _nodes(kind: str, depth: int) -> int:
    factory, _ = _KINDS[kind]
    return len(torch.fx.symbolic_trace(factory(depth)).graph.nodes)


def _depth_for(kind: str, nodes: int) -> int:
    per = (_nodes(kind, 4) - _nodes(kind, 2)) / 2
    base = _nodes(kind, 2) - 2 * per
    return max(1, round((nodes - base) / per))


def measure(kind: str, nodes: int) -> dict[str, Any]:
    """Compile a `kind` model of about `nodes` graph nodes in this process; seconds by pass and the growth of
    the peak resident memory (MB) during the compile."""
    factory, shape = _KINDS[kind]
    depth = _depth_for(kind, nodes)
    torch.manual_seed(0)
    model, x = factory(depth).eval(), torch.randn(*shape)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fxprune.compile(model, {"pruner": "l1", "sparsity": 0.5}, x)
    total = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # Linux reports KB
    n = len(result.model.graph.nodes)  # the traced graph's nodes (the masked one adds two per mask)
    return {"kind": kind, "depth": depth, "nodes": n, "total": total, "timings": dict(result.report.timings),
            "peak_mb": peak_kb / 1024}


def _measure_in_child(kind: str, nodes: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--one", f"{kind}:{nodes}"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def to_markdown(rows: list[dict[str, Any]]) -> str:
    passes = list(rows[0]["timings"])
    lines = [f"Load average {os.getloadavg()[0]:.1f} at the end. L1, 50%, verification included; one process per "
             "row.", "",
             "| model | blocks | nodes | total s | s per 1k nodes | " + " | ".join(passes) + " | peak RSS growth MB |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(passes) + "---:|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['depth']} | {r['nodes']} | {r['total']:.1f} | "
                     f"{r['total'] / r['nodes'] * 1e3:.2f} | " + " | ".join(f"{r['timings'][p]:.2f}" for p in passes)
                     + f" | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1000,5000,10000")
    parser.add_argument("--kinds", default="conv,transformer")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # KIND:NODES, one row as JSON (the child process)
    args = parser.parse_args()
    if args.one:
        # One intra-op thread: the forwards of these narrow layers are microseconds of work each, and a thread
        # pool on a shared 2-core machine spends milliseconds per op waiting for a descheduled sibling (verify
        # of the 1k-node conv graph took 37 s at 2 threads under load, 0.3 s at one), which is not fxprune's.
        torch.set_num_threads(1)
        kind, nodes = args.one.split(":")
        measure(kind, 50)  # the first compile in a process pays torch's lazy imports: not per node
        print(json.dumps(measure(kind, int(nodes))))
        return
    rows = []
    for kind in args.kinds.split(","):
        for n in args.nodes.split(","):
            rows.append(_measure_in_child(kind, int(n)))
            print(f"{kind} {rows[-1]['nodes']} nodes: {rows[-1]['total']:.1f} s", file=sys.stderr)
    print(to_markdown(rows))


if __name__ == "__main__":
    main()
