"""Per-layer latency measured in onnxruntime on this machine, for latency budgets and the search pruners.

    table = LatencyTable.for_graph(session.graph)       # measures what the disk cache lacks
    table.estimate(masks)                                # seconds of the layers, at the widths masks leave
    table.block                                          # the channel multiple the conv kernels run best at

Each layer with MACs (Conv1d/2d, grouped and depthwise included; Linear; matmuls between activations) is a
*signature*: its op, batch, spatial size, kernel, stride, padding, groups, and its dense channel counts. For
each signature, single-op ONNX graphs at a grid of kept input x output channel counts (1/4, 1/2, 3/4, all of
each, multiples of 8 where the layer is that wide) run in onnxruntime (CPU, `threads` intra-op threads, all
graph optimisations: the NCHWc convs the full model runs), and the profiler's kernel time of the layer's node
(not wall clock: it survives a loaded machine far better) is the median over runs. Between grid points the
time is interpolated bilinearly; below the smallest one, proportionally to the channels. Matmuls between
activations (attention scores) are measured dense and scaled with their MACs.

The table is cached on disk per machine (CPU model, core count), onnxruntime version and thread count, in
`$FXPRUNE_CACHE_DIR` (default `~/.cache/fxprune`). A cache file that does not parse, or that was written for
another machine, runtime or format, is rebuilt with a warning, never used silently.

The table alone does not land a latency budget: it sums the conv/gemm kernels only (activations, pooling,
adds, layout reorders and the session's own overhead do not shrink with it) and it interpolates. So a budget
is *calibrated end to end* (`calibrate`): the masks the table chooses are pruned, exported to ONNX and run
in onnxruntime paired with the dense model (`EndToEnd`: dense and pruned runs alternate, so machine load
hits both alike); the fraction handed to the table is corrected (secant inside a bracket, proportional until
there is one) until the measured ratio is within `tolerance` of the budget. `config["budget"]["latency"]`
(`latency_budget_masks`, called by `Session.compute_masks`) and the search pruners' `target='latency'`
(their final model) both go through it. The measured ratio is the wall clock of the whole
model's fastest paired run (pruned / dense; see `Measurement` for why the fastest), with the profiler's summed
kernel time and both medians recorded next to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .budget import CostModel, Term, budget_masks, macs_terms, params_terms
from .config import Config
from .errors import ConfigError, FxPruneError, UnsupportedError, node_context
from .graph import DependencyGraph, op_name, rule_nodes, spelling
from .layers import Layer
from .masks import Masks, Scorer

__all__ = ["LatencyTable", "Signature", "signature_of", "cpu_model", "FORMAT", "cost_model", "EndToEnd",
           "Measurement", "Step", "calibrate", "latency_budget_masks", "kernel_per_run", "TOLERANCE"]

_log = logging.getLogger(__name__)

#: the calibration stops when the measured ratio is within this relative distance of the budget (tighter than the
#: 5% promised, so that a re-measurement's noise stays inside it)
TOLERANCE = 0.03

FORMAT = "fxprune-latency/2"  # 2: grids checked for load spikes (`_measure`); tables of 1 are re-measured
_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
_RUNS, _WARMUP = 15, 3
_CONVS = {"Conv1d", "Conv2d", "conv1d", "conv2d"}
_LINEARS = {"Linear", "linear"}
_MATMULS = {"matmul", "bmm", "__matmul__"}


@dataclass(frozen=True)
class Signature:
    """A layer's shape: `kind` ("conv", "gemm", "matmul") and its dense sizes; `key` names it in the table."""

    kind: str
    dims: tuple[tuple[str, int], ...]

    @property
    def key(self) -> str:
        return self.kind + "|" + ",".join(f"{k}={v}" for k, v in self.dims)

    def get(self, name: str) -> int:
        return dict(self.dims)[name]


def _weight_key(dg: DependencyGraph, node: torch.fx.Node) -> str | None:
    if node.op == "call_module":
        key = f"@{node.target}.weight"
        return key if key in dg.shapes else None
    w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    return w.name if isinstance(w, torch.fx.Node) and w.name in dg.shapes else None


def _conv_attrs(dg: DependencyGraph, node: torch.fx.Node) -> tuple[Any, Any, Any, int] | None:
    if node.op == "call_module":
        m = dg.gm.get_submodule(node.target)
        if getattr(m, "transposed", False) or isinstance(m.padding, str) or m.padding_mode != "zeros":
            return None
        return m.stride, m.padding, m.dilation, m.groups
    args = list(node.args) + [None] * 7
    stride, padding, dilation, groups = (args[3] or 1, args[4] or 0, args[5] or 1, args[6] or 1)
    if isinstance(padding, str) or any(isinstance(v, torch.fx.Node) for v in (stride, padding, dilation, groups)):
        return None
    return stride, padding, dilation, groups


def _first(value: Any) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def signature_of(dg: DependencyGraph, node: torch.fx.Node) -> tuple[Signature, str, str] | None:
    """The signature of a node with MACs, and the keys of its input and output tensors; None when the table
    does not know the op (or a conv uses what the table does not measure: transposed, string padding)."""
    name = op_name(spelling(node, dg.gm))
    inputs = [n for n in node.all_input_nodes if n.name in dg.shapes or n.meta.get("fxprune_mask")]
    if not inputs:
        return None
    x = inputs[0]
    while x.meta.get("fxprune_mask") and x.args and isinstance(x.args[0], torch.fx.Node):
        x = x.args[0]
    out = node.name
    if x.name not in dg.shapes or out not in dg.shapes:
        return None
    xs, ys = dg.shapes[x.name], dg.shapes[out]
    if name in _CONVS:
        w = _weight_key(dg, node)
        attrs = _conv_attrs(dg, node)
        if w is None or attrs is None or len(xs) not in (3, 4) or len(ys) != len(xs):
            return None
        stride, padding, dilation, groups = attrs
        ws = dg.shapes[w]
        spatial = xs[2:] if len(xs) == 4 else (1, xs[2])
        kernel = ws[2:] if len(ws) == 4 else (1, ws[2])
        depthwise = groups > 1 and groups == xs[1] == ys[1]
        if groups > 1 and not depthwise:
            return None  # grouped (not depthwise) convs: kept counts change the group layout
        sig = Signature("conv", (("n", xs[0]), ("h", spatial[0]), ("w", spatial[1]), ("kh", kernel[0]),
                                 ("kw", kernel[1]), ("stride", _first(stride)), ("pad", _first(padding)),
                                 ("dil", _first(dilation)), ("dw", int(depthwise)), ("cin", xs[1]), ("cout", ys[1])))
        return sig, x.name, out
    if name in _LINEARS:
        sig = Signature("gemm", (("m", math.prod(xs[:-1])), ("cin", xs[-1]), ("cout", ys[-1])))
        return sig, x.name, out
    if name in _MATMULS and len(inputs) == 2:
        b = inputs[1]
        while b.meta.get("fxprune_mask") and b.args and isinstance(b.args[0], torch.fx.Node):
            b = b.args[0]
        if b.name not in dg.shapes or len(xs) < 2 or len(dg.shapes[b.name]) != len(xs):
            return None
        bs = dg.shapes[b.name]
        sig = Signature("matmul", (("batch", math.prod(xs[:-2])), ("m", xs[-2]), ("k", xs[-1]), ("n", bs[-1])))
        return sig, x.name, out
    return None


def _grid(size: int) -> list[int]:
    step = 8 if size >= 32 else 1
    return sorted({max(step, int(round(f * size / step)) * step) if f < 1 else size for f in _FRACTIONS})


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, or None."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return None


def _machine(threads: int) -> dict[str, Any]:
    import onnxruntime

    return {"cpu": cpu_model() or "unknown", "cores": os.cpu_count() or 0,
            "onnxruntime": onnxruntime.__version__, "threads": threads}


def _cache_dir() -> Path:
    return Path(os.environ.get("FXPRUNE_CACHE_DIR") or Path.home() / ".cache" / "fxprune")


class LatencyTable:
    """Measured seconds per layer signature at kept (input, output) channel counts.

    Attributes:
        entries: signature key -> {"cin": grid, "cout": grid, "seconds": [[...]]} (rows: cin, columns: cout).
        block: the output-channel multiple whose counts the conv kernels run best at (1: no staircase measured).
        machine: what the table was measured on.
        path: the cache file.
    """

    def __init__(self, entries: dict[str, dict[str, Any]], block: int, machine: dict[str, Any],
                 path: Path | None = None, dg: DependencyGraph | None = None) -> None:
        self.entries, self.block, self.machine, self.path, self.dg = entries, block, machine, path, dg

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def for_graph(cls, dg: DependencyGraph, threads: int = 2, cache_dir: str | os.PathLike | None = None,
                  argument: str = "config['budget'] = {'latency': ...}") -> LatencyTable:
        """The table for every layer of `dg`: read from the cache, what is missing measured and saved.

        Args:
            argument: how the caller's user asked for latency (named in the error).

        Raises:
            UnsupportedError: a layer with MACs that the table cannot measure (names it); use a MACs budget.
        """
        cls.check(dg, argument)
        machine = _machine(threads)
        slug = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:12]
        path = Path(cache_dir) if cache_dir is not None else _cache_dir()
        path = path / f"latency-{slug}.json"
        table = cls._load(path, machine) or cls({}, 0, machine, path)
        table.dg = dg
        sigs = {s.key: s for s, _, _ in filter(None, (signature_of(dg, n) for n, _ in rule_nodes(dg.gm, "macs")))}
        todo = [s for k, s in sigs.items() if k not in table.entries]
        for sig in todo:
            table.entries[sig.key] = _measure(sig, threads)
        if not table.block:
            table.block = _measure_block(threads)
        if todo or not path.exists():
            table._save()
        return table

    @staticmethod
    def check(dg: DependencyGraph, argument: str = "config['budget'] = {'latency': ...}") -> None:
        """Refuse (before measuring anything) a graph with a layer the table cannot measure.

        Raises:
            UnsupportedError: names the layer, `argument` and the fix (a MACs budget).
        """
        missing = [n for n, _ in rule_nodes(dg.gm, "macs") if signature_of(dg, n) is None]
        if missing:
            raise UnsupportedError(
                f"{argument} needs a per-layer onnxruntime latency, but fxprune cannot "
                f"measure {node_context(missing[0])}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + ": the table measures Conv1d/Conv2d (plain or depthwise, zero padding), Linear and matmul as "
                "single ONNX ops. Use a MACs budget ({'macs': fraction}, target='flops') for this model instead.")

    @classmethod
    def _load(cls, path: Path, machine: dict[str, Any]) -> LatencyTable | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            ok = (isinstance(data, dict) and data.get("format") == FORMAT and data.get("machine") == machine
                  and isinstance(data.get("entries"), dict) and isinstance(data.get("block"), int)
                  and all(_valid_entry(e) for e in data["entries"].values()))
        except (OSError, ValueError, TypeError):
            ok, data = False, None
        if not ok:
            warnings.warn(f"fxprune latency cache {path} is corrupted or was written for another machine, "
                          f"onnxruntime or format (expected {FORMAT} for {machine}): rebuilding it", stacklevel=4)
            return None
        return cls(data["entries"], data["block"], machine, path)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"format": FORMAT, "machine": self.machine, "block": self.block, "entries": self.entries}, f)
        os.replace(tmp, self.path)  # atomic: a concurrent reader sees the old file or the new one

    # -- reading ----------------------------------------------------------------------------------
    def seconds(self, sig: Signature, cin: int, cout: int) -> float:
        """Interpolated kernel seconds of a layer at `cin` input and `cout` output channels kept."""
        e = self.entries[sig.key]
        if sig.kind == "matmul":  # measured dense, scaled with the MACs (heads or head size shrink linearly):
            # here `cin` is the size of the left operand and `cout` the output's last dim
            dense = sig.get("batch") * sig.get("m") * sig.get("k") * sig.get("n")
            return e["seconds"][0][0] * cin * cout / max(dense, 1)
        return _interp2(np.asarray(e["cin"], float), np.asarray(e["cout"], float),
                        np.asarray(e["seconds"], float), cin, cout)

    def terms(self, dg: DependencyGraph | None = None) -> list[Term]:
        """The table as `fxprune.budget.Term`s (one per layer) over the tensors whose widths change its time."""
        dg = dg or self.dg
        out = []
        for node, _ in rule_nodes(dg.gm, "macs"):
            found = signature_of(dg, node)
            if found is None:
                continue
            sig, x, y = found
            if sig.kind == "matmul":  # the other operand's last dim: what the output's last dim is
                out.append(Term([x, y], lambda s, sig=sig, x=x, y=y: self.seconds(
                    sig, math.prod(s[x]), math.prod(s[y]) // max(math.prod(s[y][:-1]), 1))))
                continue
            axis = 1 if sig.kind == "conv" else -1
            out.append(Term([x, y], lambda s, sig=sig, x=x, y=y, a=axis: self.seconds(sig, s[x][a], s[y][a])))
        return out

    def estimate(self, masks: Any) -> float:
        """Seconds of every measured layer at the widths `masks` (a `fxprune.Masks`) leave."""
        return CostModel(masks.graph, self.terms(masks.graph)).total(masks.keep)


def _valid_entry(e: Any) -> bool:
    return (isinstance(e, dict) and isinstance(e.get("cin"), list) and isinstance(e.get("cout"), list)
            and isinstance(e.get("seconds"), list) and len(e["seconds"]) == len(e["cin"])
            and all(isinstance(r, list) and len(r) == len(e["cout"]) for r in e["seconds"])
            and all(isinstance(v, (int, float)) and v >= 0 for r in e["seconds"] for v in r))


def _interp1(xs: np.ndarray, ys: np.ndarray, x: float) -> float:
    """Piecewise linear through the measured points. Below the first: the line through the first two, never below
    proportional to x nor above the first point. A kernel's fixed cost does not fall with its channels (ResNet-50's
    1x1 convs at a quarter of their output channels take 0.27-0.28 of their full time, not 0.25), so a straight
    line to zero would make a layer cut below the grid look nearly free."""
    if x <= xs[0]:
        proportional = float(ys[0] * x / xs[0]) if xs[0] > 0 else float(ys[0])
        if len(xs) < 2 or xs[1] <= xs[0]:
            return proportional
        line = ys[0] + (ys[1] - ys[0]) * (x - xs[0]) / (xs[1] - xs[0])
        return float(min(ys[0], max(proportional, line)))
    return float(np.interp(x, xs, ys))


def _interp2(cins: np.ndarray, couts: np.ndarray, table: np.ndarray, cin: float, cout: float) -> float:
    column = np.array([_interp1(couts, row, cout) for row in table])
    return _interp1(cins, column, cin)


def _onnx_variants(sig: Signature, variants: list[tuple[int, int]]) -> tuple[Any, dict[str, np.ndarray]]:
    """One ONNX graph holding one independent node per (cin, cout) variant, and its feeds."""
    import onnx.helper as h
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inputs, outputs, inits, feeds = [], [], [], [], {}
    for i, (cin, cout) in enumerate(variants):
        x, y = f"x{i}", f"y{i}"
        if sig.kind == "conv":
            dw = sig.get("dw")
            shape = [sig.get("n"), cin, sig.get("h"), sig.get("w")]
            w = rng.standard_normal((cout, 1 if dw else cin, sig.get("kh"), sig.get("kw"))).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"w{i}"),
                      numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"b{i}")]
            pad = sig.get("pad")
            nodes.append(h.make_node("Conv", [x, f"w{i}", f"b{i}"], [y], name=y, group=cout if dw else 1,
                                     kernel_shape=[sig.get("kh"), sig.get("kw")], strides=[sig.get("stride")] * 2,
                                     pads=[0, pad, 0, pad] if sig.get("h") == 1 else [pad] * 4,
                                     dilations=[sig.get("dil")] * 2))
        elif sig.kind == "gemm":
            shape = [sig.get("m"), cin]
            inits += [numpy_helper.from_array(rng.standard_normal((cout, cin)).astype(np.float32), f"w{i}"),
                      numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"b{i}")]
            nodes.append(h.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y], name=y, transB=1))
        else:
            shape = [sig.get("batch"), sig.get("m"), sig.get("k")]
            inits.append(numpy_helper.from_array(
                rng.standard_normal((sig.get("batch"), sig.get("k"), sig.get("n"))).astype(np.float32), f"w{i}"))
            nodes.append(h.make_node("MatMul", [x, f"w{i}"], [y], name=y))
        inputs.append(h.make_tensor_value_info(x, TensorProto.FLOAT, shape))
        outputs.append(h.make_tensor_value_info(y, TensorProto.FLOAT, None))
        feeds[x] = rng.standard_normal(shape).astype(np.float32)
    model = h.make_model(h.make_graph(nodes, "fxprune_latency", inputs, outputs, inits),
                         opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime of the last years loads
    return model, feeds


def _kernel_seconds(model: Any, feeds: dict[str, np.ndarray], names: list[str], threads: int,
                    runs: int = _RUNS) -> list[float]:
    """Median profiler kernel seconds of the nodes producing `names` (and of any node fused from them)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.onnx")
        onnx.save(model, path)
        sess = _ort_session(path, threads, os.path.join(tmp, "profile"))
        for _ in range(_WARMUP + runs):  # the warm-up runs on the profiled session too, and is left out below
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, list[float]] = {n: [] for n in names}
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        for n in names:
            if node == n or node.startswith(n + "_"):
                per[n].append(e["dur"] * 1e-6)
    per = {n: v[len(v) * _WARMUP // (_WARMUP + runs):] for n, v in per.items()}  # every run logs alike
    # one value per run: a layer split into several kernels (ORT fusions) sums them
    return [float(np.median(np.asarray(v).reshape(runs, -1).sum(1))) if v and len(v) % runs == 0
            else float(np.median(v)) if v else 0.0 for v in per.values()]


def _plausible(e: dict[str, Any], drop: float = 0.1, rise: float = 0.5) -> bool:
    """Whether a grid reads like one layer's times: along each axis, more channels never cost more than `drop`
    less, nor more than `rise` above in proportion (a load spike during one variant's runs does either: a table
    measured on a loaded machine had a 1x1 conv at 7.6 times its in-model time, and another variant at 5.8 times
    its larger neighbour)."""
    grid = np.asarray(e["seconds"], float)
    for axis, sizes in ((0, e["cin"]), (1, e["cout"])):
        sizes = np.asarray(sizes, float)
        if len(sizes) < 2:
            continue
        a, b = (grid[:-1], grid[1:]) if axis == 0 else (grid[:, :-1], grid[:, 1:])
        grows = (sizes[1:] / sizes[:-1]).reshape((-1, 1) if axis == 0 else (1, -1))
        if np.any(b < a * (1 - drop)) or np.any(b > a * grows * (1 + rise)):
            return False
    return True


def _measure(sig: Signature, threads: int, tries: int = 3) -> dict[str, Any]:
    """A signature's grid; one that is not `_plausible` is measured again (up to `tries` times in all) and the
    attempts' elementwise minimum kept (load only ever adds time). What every attempt shows is kept as measured: a
    kernel that really is slower at some width (the staircase `round_to` snaps to) shows there each time."""
    entry = _measure_once(sig, threads)
    for _ in range(tries - 1):
        if _plausible(entry):
            break
        again = _measure_once(sig, threads)
        entry["seconds"] = np.minimum(entry["seconds"], again["seconds"]).tolist()
    return entry


def _measure_once(sig: Signature, threads: int) -> dict[str, Any]:
    if sig.kind == "matmul":
        model, feeds = _onnx_variants(sig, [(sig.get("k"), sig.get("n"))])
        return {"cin": [sig.get("k")], "cout": [sig.get("n")],
                "seconds": [[_kernel_seconds(model, feeds, ["y0"], threads)[0]]]}
    if sig.kind == "conv" and sig.get("dw"):  # a depthwise conv keeps as many inputs as outputs
        grid = _grid(sig.get("cout"))
        model, feeds = _onnx_variants(sig, [(c, c) for c in grid])
        secs = _kernel_seconds(model, feeds, [f"y{i}" for i in range(len(grid))], threads)
        # as a table over (cin, cout), with time following the output count (the input count is the same)
        return {"cin": [sig.get("cin")], "cout": grid, "seconds": [secs]}
    cins, couts = _grid(sig.get("cin")), _grid(sig.get("cout"))
    variants = [(a, b) for a in cins for b in couts]
    model, feeds = _onnx_variants(sig, variants)
    secs = _kernel_seconds(model, feeds, [f"y{i}" for i in range(len(variants))], threads)
    return {"cin": cins, "cout": couts, "seconds": [secs[i * len(couts):(i + 1) * len(couts)]
                                                    for i in range(len(cins))]}


def _measure_block(threads: int) -> int:
    """The output-channel multiple the conv kernels like: a 3x3 conv (64 in, 28x28) timed at 33..64 outputs;
    the largest block in 16, 8, 4, 2 whose counts inside a block all take about the time of the block's top
    count (a staircase), else 1."""
    sig = Signature("conv", (("n", 1), ("h", 28), ("w", 28), ("kh", 3), ("kw", 3), ("stride", 1), ("pad", 1),
                             ("dil", 1), ("dw", 0), ("cin", 64), ("cout", 64)))
    counts = list(range(33, 65))
    model, feeds = _onnx_variants(sig, [(64, c) for c in counts])
    secs = dict(zip(counts, _kernel_seconds(model, feeds, [f"y{i}" for i in range(len(counts))], threads, 25)))
    for block in (16, 8, 4, 2):
        tops = [c for c in counts if c % block == 0 and c - block + 1 >= counts[0]]
        flat = [abs(secs[c - j] - secs[c]) / secs[c] for c in tops for j in range(1, block) if secs[c] > 0]
        steps = [(secs[c] - secs[c - block]) / secs[c] for c in tops if c - block in secs and secs[c] > 0]
        if flat and steps and float(np.median(flat)) < 0.03 and float(np.median(steps)) > 0.06:
            return block
    return 1


def cost_model(resource: str, dg: DependencyGraph, example_inputs: tuple | None = None,
               argument: str = "config['budget'] = {'latency': ...}") -> CostModel:
    """The cost model of a budget's resource: "macs", "params" or "latency" (a `LatencyTable` measured for
    the example inputs' batch on this machine, from the disk cache when there is one; `argument` is how the
    user asked for it, named in errors)."""
    if resource == "macs":
        return CostModel(dg, macs_terms(dg))
    if resource == "params":
        return CostModel(dg, params_terms(dg))
    table = LatencyTable.for_graph(dg, argument=argument)
    return CostModel(dg, table.terms(), round_to=table.block, max_cut=1 - min(_FRACTIONS))


# -- end to end -------------------------------------------------------------------------------------------


def kernel_per_run(events: list[dict[str, Any]]) -> np.ndarray:
    """Summed kernel seconds of every run in an onnxruntime profile (its `model_run` spans, in order)."""
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    per_run = np.zeros(len(spans))
    starts = np.asarray([a for a, _ in spans])
    for e in events:
        if spans and e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
            if 0 <= i < len(spans) and e["ts"] <= spans[i][1]:
                per_run[i] += e["dur"]
    return per_run * 1e-6


@dataclass
class Measurement:
    """A pruned model against the dense one, end to end in onnxruntime, over paired runs (ratios: pruned / dense).

    The fastest of the paired runs is what the ratios compare first: on a shared machine a run is slowed by
    whatever else runs, so medians move with the load (with 2 intra-op threads on 2 busy cores, ratios from 0.05
    to 3 for one pair of models at load 4), while the run that was not disturbed repeats best.

    Attributes:
        wall_ratio: fastest wall-clock run, pruned / dense (`ratio`: what calibration follows).
        kernel_ratio: the same with the profiler's summed kernel time per run.
        wall_median_ratio, kernel_median_ratio: the medians' ratios (reported; noisy under load).
        dense_wall_ms, wall_ms, dense_kernel_ms, kernel_ms: the fastest runs.
        runs: paired runs of each kind.
    """

    wall_ratio: float
    kernel_ratio: float
    wall_median_ratio: float
    kernel_median_ratio: float
    dense_wall_ms: float
    wall_ms: float
    dense_kernel_ms: float
    kernel_ms: float
    runs: int

    @property
    def ratio(self) -> float:
        return self.wall_ratio

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 5) for k, v in dataclasses.asdict(self).items()}


def session_options(threads: int, profile: str | None = None) -> Any:
    """onnxruntime settings of every fxprune timing (the per-layer table, the end-to-end check, `fxprune.benchmark`):
    `threads` intra-op threads, one inter-op thread, sequential execution, all graph optimisations, and **no
    spinning**. Where several models are timed against each other their runs alternate
    (A, B, A, B...), and by default a session's worker threads spin for a while after each of its runs, on the
    cores the next session's run needs: on ResNet-50 at 2 threads on 2 cores that doubled every alternated time
    (dense 39 -> 74 ms, wall clock and profiler kernel time alike) and flattened the speedups (1.51x -> 1.32x).
    Without spinning, alternated and back-to-back runs agree (40 ms; a back-to-back run with spinning: 38 ms).

    Args:
        threads: intra-op threads.
        profile: a file prefix to turn the profiler on, or None.

    Returns:
        An `onnxruntime.SessionOptions`.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile is not None:
        opts.enable_profiling, opts.profile_file_prefix = True, profile
    return opts


def _ort_session(path: str, threads: int, profile: str | None = None) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(path, session_options(threads, profile), providers=["CPUExecutionProvider"])


class EndToEnd:
    """The dense model exported to ONNX once; `measure(masks)` prunes, exports and times a candidate paired
    with it (dense and pruned runs alternate, the order rotating, so that load and frequency drift hit both).

    Args:
        gm: the session's masked model (its speedup pass gives the pruned models; with no mask, the dense one).
        dg: its dependency graph.
        example_inputs: the inputs to export and run with (their batch is the batch measured).
        argument: how the user asked for latency (named when the model does not export).
        threads: onnxruntime intra-op threads. 1 by default: on a shared machine a run with more threads waits
            at every parallel op for whichever of its threads was descheduled, which makes its times bimodal (a
            2 ms CNN measured 1.2 or 2.0 ms by turns at load 7 on 2 cores, its pruned/dense ratio 0.32 to 0.56),
            while one thread repeats within a few percent (0.32-0.36). Those runs had onnxruntime's thread spinning
            on (see `session_options`); without it, 2-thread ratios repeat too (ResNet-50: fastest 0.506, median
            0.506), but they differ from 1-thread ones on small models (the 1.7 ms MobileNetV2: 0.62 against 0.48),
            so the budget is judged at one setting. The table is measured at its own thread count; the calibration
            corrects for the difference as for any other.
        runs: least paired runs per measurement (each pair: a plain run for wall clock and a profiled one for
            kernel time, of each model).
        min_time_s: least seconds of dense wall clock per measurement: a small model gets more runs, so that
            its fastest run is as settled as a large model's.

    Raises:
        UnsupportedError: the model does not export to ONNX (names `argument`, the export's reason, the fix).
    """

    def __init__(self, gm: torch.fx.GraphModule, dg: DependencyGraph, example_inputs: tuple[Any, ...],
                 argument: str = "config['budget'] = {'latency': ...}", threads: int = 1, runs: int = 20,
                 min_time_s: float = 1.0) -> None:
        self.gm, self.dg, self.inputs, self.argument = gm, dg, tuple(example_inputs), argument
        self.threads, self.runs, self.min_time_s = threads, runs, min_time_s
        LatencyTable.check(dg, argument)  # a layer the table cannot measure is refused before the export
        self.dir = tempfile.mkdtemp(prefix="fxprune_e2e_")
        self.dense = self._export(Masks(dg), "dense")

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "dir", ""), ignore_errors=True)

    def _export(self, masks: Masks, name: str) -> str:
        from .passes.export import export_onnx
        from .passes.speedup import speedup_pass

        path = os.path.join(self.dir, f"{name}.onnx")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(speedup_pass(self.gm, masks), self.inputs, path)
        except FxPruneError as exc:
            raise UnsupportedError(
                f"{self.argument}: a latency budget is checked end to end in onnxruntime, but this model does not "
                f"export to ONNX ({exc}). Make it export (fxprune.export_onnx(model, x, 'm.onnx') names the failing "
                "node), or use a MACs budget ({'macs': fraction}, target='flops') instead") from exc
        return path

    def measure(self, masks: Masks) -> Measurement:
        """The pruned model of `masks` against the dense one (see the class)."""
        pruned = self._export(masks, "pruned")
        feeds = _feeds(self.dense, self.inputs)
        paths = (self.dense, pruned)
        plain = [_ort_session(p, self.threads) for p in paths]
        profiled = [_ort_session(p, self.threads, os.path.join(self.dir, f"profile{j}")) for j, p in enumerate(paths)]
        for _ in range(3):
            for sess in plain + profiled:
                sess.run(None, feeds)
        # one loop for both kinds, so that wall clock and kernel time see the same moments of the machine's load
        wall: list[list[float]] = [[], []]
        i = 0
        while i < self.runs or (sum(wall[0]) < self.min_time_s and i < 2000):
            for j in ((0, 1) if i % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                plain[j].run(None, feeds)
                wall[j].append(time.perf_counter() - start)
                profiled[j].run(None, feeds)
            i += 1
        kernel = [kernel_per_run(json.loads(Path(s.end_profiling()).read_text()))[-i:] for s in profiled]
        for f in Path(self.dir).glob("profile*"):
            f.unlink()
        (dense_w, w), (dense_k, k) = ([np.asarray(v, float) for v in pair] for pair in (wall, kernel))
        return Measurement(w.min() / dense_w.min(), _ratio(k.min(), dense_k.min()),
                           float(np.median(w) / np.median(dense_w)), _ratio(np.median(k), np.median(dense_k)),
                           dense_w.min() * 1e3, w.min() * 1e3, dense_k.min() * 1e3, k.min() * 1e3, i)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else 1.0


def _feeds(path: str, inputs: tuple[Any, ...]) -> dict[str, np.ndarray]:
    import onnx

    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
    return {n: t.detach().cpu().numpy() for n, t in zip(names, tensors)}


@dataclass
class Step:
    """One calibration step: the fraction handed to the table, the table's estimate of the candidate it gave
    (fraction of the dense latency), and the end-to-end measurement."""

    table_fraction: float
    table_ratio: float
    measured: Measurement

    def as_dict(self) -> dict[str, Any]:
        return {"table_fraction": round(self.table_fraction, 5), "table_ratio": round(self.table_ratio, 5),
                **self.measured.as_dict()}


def calibrate(target: float, solve: Callable[[float], tuple[Any, float]], measure: Callable[[Any], Measurement],
              *, first: tuple[float, Any, float] | None = None, tolerance: float = TOLERANCE, steps: int = 5
              ) -> tuple[Any, list[Step], int]:
    """Correct the fraction handed to the latency table until the measured end-to-end ratio lands on `target`.

    Each step hands a fraction t to `solve(t) -> (candidate, table ratio)` and measures the candidate
    (`measure(candidate).ratio`, pruned / dense). The next t comes from the points so far, as (table ratio ->
    measured ratio): linear between the closest points on either side of the target once there are both
    (regula falsi), else the secant of the two latest points (proportional, t * target / measured, from one
    point or when the secant's slope is not positive). It stops within `tolerance` (relative), after `steps`
    measurements, when t repeats, or when the table cannot go lower (`solve` raising ConfigError after the
    first step).

    Args:
        target: the budget, fraction of the dense latency to keep.
        solve: the table's candidate for a fraction (raises ConfigError below what it can reach).
        measure: end to end.
        first: (t, candidate, table ratio) already chosen for the first step (a search's best).
        tolerance: relative distance to `target` that ends the calibration.
        steps: most measurements.

    Returns:
        (the candidate measured closest to `target`, every step, the index of that step).
    """
    history: list[Step] = []
    candidates: list[Any] = []
    t = target if first is None else first[0]
    for k in range(steps):
        if k == 0 and first is not None:
            candidate, estimate = first[1], first[2]
        else:
            try:
                candidate, estimate = solve(t)
            except ConfigError:
                if k == 0:
                    raise
                _log.warning("latency calibration: the table cannot go below %.3f; keeping the closest step", t)
                break
        history.append(Step(t, estimate, measure(candidate)))
        candidates.append(candidate)
        _log.info("latency calibration step %d: table %.3f -> estimate %.3f, measured %.3f (wall), %.3f (kernel)",
                  k, t, estimate, history[-1].measured.wall_ratio, history[-1].measured.kernel_ratio)
        if abs(history[-1].measured.ratio / target - 1) <= tolerance:
            break
        nxt = _next_fraction(target, history)
        if any(abs(nxt - s.table_fraction) < 1e-4 for s in history):
            break
        t = nxt
    best = min(range(len(history)), key=lambda i: abs(history[i].measured.ratio / target - 1))
    return candidates[best], history, best


def _next_fraction(target: float, history: list[Step]) -> float:
    points = [(s.table_ratio, s.measured.ratio) for s in history]
    below = [p for p in points if p[1] < target]
    above = [p for p in points if p[1] > target]
    if below and above:
        (x0, y0), (x1, y1) = max(below, key=lambda p: p[1]), min(above, key=lambda p: p[1])
        x = x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    elif len(points) >= 2 and (points[-1][1] - points[-2][1]) * (points[-1][0] - points[-2][0]) > 0:
        (x0, y0), (x1, y1) = points[-2], points[-1]
        x = x1 + (target - y1) * (x1 - x0) / (y1 - y0)
        x = min(max(x, x1 * 0.5), x1 * 2)  # a secant through two noisy points may shoot far: at most x2 a step
    else:
        x, y = points[-1]
        x = x * target / y if y > 0 else x
    return float(min(max(x, 1e-3), 1.0))


def latency_budget_masks(dg: DependencyGraph, cfg: Config, layers: list[Layer], score: Scorer,
                         previous: Masks | None = None, end_to_end: EndToEnd | None = None,
                         tolerance: float = TOLERANCE) -> Masks:
    """`config["budget"] = {"latency": f}`: the table's masks (`fxprune.budget.budget_masks`), calibrated end to
    end when `end_to_end` is given; the masks' notes record the table's estimate and the measured ratios.

    Raises:
        ConfigError: f is below what the table can reach (see `budget_masks`).
    """
    model = cost_model("latency", dg)
    dense = model.total()
    target = cfg.budget["latency"]

    def solve(t: float) -> tuple[Masks, float]:
        masks = budget_masks(dg, dataclasses.replace(cfg, budget={"latency": t}), layers, score, model, previous)
        return masks, model.total(masks.keep) / dense

    if end_to_end is None:
        masks, estimate = solve(target)
        masks.notes.append(f"latency budget {target:g}: the table estimates {estimate:.3f} of the dense latency "
                           "(not calibrated end to end)")
        return masks
    masks, history, best = calibrate(target, solve, end_to_end.measure, tolerance=tolerance)
    s = history[best]
    m = s.measured
    masks.notes.append(
        f"latency budget {target:g}: measured end to end {m.wall_ratio:.3f} of the dense latency (fastest of "
        f"{m.runs} paired onnxruntime runs, {end_to_end.threads} thread(s): {m.wall_ms:.2f} / "
        f"{m.dense_wall_ms:.2f} ms; kernel time "
        f"{m.kernel_ratio:.3f}; medians {m.wall_median_ratio:.3f} wall, {m.kernel_median_ratio:.3f} kernel); the "
        f"table estimates {s.table_ratio:.3f} (asked for {s.table_fraction:.3f}; {len(history)} calibration "
        "step(s))")
    return masks
