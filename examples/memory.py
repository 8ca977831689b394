"""Peak memory (RSS) of fxprune.compile on a large model, per pass, in units of the model's weight size.

    PYTHONPATH=. python examples/memory.py                       # ResNet-152, l1 50%, 1x3x224x224
    PYTHONPATH=. python examples/memory.py --model transformer24 --pruner level --sparsity 0.7

Run one measurement per process (peak RSS is a per-process number). On Linux the peak is reset before
every pass by writing 5 to /proc/self/clear_refs, so each pass's own peak is measured; torch's tracemalloc
is blind to tensor storage, hence RSS. "extra" is (RSS - RSS before compile) / weight bytes: the promise
is that compile never holds more than one extra copy of the weights (plus activations for one forward).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import fxprune  # noqa: E402
import fxprune.session as session  # noqa: E402  (the passes compile runs, as the session imports them)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class Block(nn.Module):
    """Pre-norm transformer block: q/k/v/out projections, heads via view, GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.ln1(x)
        q = self.q(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, n, self.heads * self.head_dim))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))


class Transformer(nn.Module):
    """A 24-layer, 1024-wide encoder (BERT-large shaped, ~302M parameters without embeddings)."""

    def __init__(self, layers: int = 24, dim: int = 1024, heads: int = 16) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(layers)))
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x)[:, 0])


def build(name: str, size: int) -> tuple[nn.Module, torch.Tensor]:
    if name.startswith("resnet"):
        from tests.fixtures import resnet

        return resnet(int(name[len("resnet"):])).eval(), torch.randn(1, 3, size, size)
    if name == "transformer24":
        return Transformer().eval(), torch.randn(1, 128, 1024)
    raise SystemExit(f"unknown model {name}")


def measure(model: nn.Module, x: torch.Tensor, config: dict[str, Any]) -> dict[str, Any]:
    """Compile with every pass wrapped to record its peak RSS and the RSS after it."""
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    phases: list[dict[str, Any]] = []
    base = _status("VmRSS")

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            _reset_peak()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            phases.append({"pass": name, "seconds": round(time.perf_counter() - start, 2),
                           "peak_extra": round((_status("VmHWM") - base) / weights, 2),
                           "after_extra": round((_status("VmRSS") - base) / weights, 2)})
            return out
        return run

    names = ["trace", "compute_masks", "insert_masks", "speedup_pass", "verify", "build_report", "detach_shared"]
    saved = {n: getattr(session, n) for n in names}
    for n in names:
        setattr(session, n, wrap(n, saved[n]))
    _reset_peak()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fxprune.compile(model, config, x)
    finally:
        for n in names:
            setattr(session, n, saved[n])
    peak = max(_status("VmHWM"), *(base + p["peak_extra"] * weights for p in phases))
    pruned = sum(t.numel() * t.element_size() for t in list(result.model.parameters()) + list(result.model.buffers()))
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "weights_mb": round(weights / 2**20, 1),
        "pruned_weights_mb": round(pruned / 2**20, 1),
        "rss_before_mb": round(base / 2**20, 1),
        "peak_extra": round((peak - base) / weights, 2),
        "held_after_extra": round((_status("VmRSS") - base) / weights, 2),
        "phases": phases,
        "param_reduction": round(result.report.param_reduction, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet152", help="resnet18/34/50/101/152 or transformer24")
    parser.add_argument("--pruner", default="l1")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=224, help="input height/width for ResNets")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, x = build(args.model, args.size)
    with torch.no_grad():  # one-time runtime set-up (kernels, thread pools) is not compile's memory
        model(x)
    out = measure(model, x, {"pruner": args.pruner, "sparsity": args.sparsity})
    print(json.dumps({"model": args.model, "pruner": args.pruner, "sparsity": args.sparsity, **out}, indent=1))


if __name__ == "__main__":
    main()
