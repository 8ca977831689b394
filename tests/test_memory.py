"""Memory bound of compile, measured as process RSS by examples/memory.py in a fresh subprocess.

compile holds, besides the user's model: the traced model, which becomes the masked model it returns (a copy
of the weights, or none where its tensors are copy-on-write clones of the user's: CPU, torch >= 2.13), the
pruned model it returns, and bookkeeping (graphs, one forward's activations). There is no third copy: no
separate traced and masked models, no float copies of masks.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the traced copy's share of the weights: none where its tensors are copy-on-write clones
COPY = 0.0 if importlib.import_module("fxprune.passes.trace")._LAZY_CLONE is not None else 1.0


def _measure(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "memory.py"), "--threads", "1", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize(("pruner", "sparsity"), [("l1", 0.5), ("level", 0.7)])
def test_compile_holds_at_most_one_extra_copy_plus_the_result(pruner: str, sparsity: float) -> None:
    d = _measure("--model", "resnet50", "--size", "64", "--pruner", pruner, "--sparsity", str(sparsity))
    pruned = d["pruned_weights_mb"] / d["weights_mb"]
    masks = 0.25 if pruner == "level" else 0.0  # one bool per weight
    fixed = 64 / d["weights_mb"]  # graphs, dependency graph, code: ~constant, not a copy of the weights
    assert d["peak_extra"] <= COPY + pruned + masks + 0.35 + fixed, d
    trace = next(p for p in d["phases"] if p["pass"] == "trace")
    assert trace["after_extra"] <= COPY + 0.2 + fixed, d
