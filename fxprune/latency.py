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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .budget import CostModel, Term, macs_terms, params_terms
from .errors import UnsupportedError, node_context
from .graph import DependencyGraph, op_name, rule_nodes, spelling

__all__ = ["LatencyTable", "Signature", "signature_of", "cpu_model", "FORMAT", "cost_model"]

FORMAT = "fxprune-latency/1"
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
    def for_graph(cls, dg: DependencyGraph, threads: int = 2, cache_dir: str | os.PathLike | None = None
                  ) -> LatencyTable:
        """The table for every layer of `dg`: read from the cache, what is missing measured and saved.

        Raises:
            UnsupportedError: a layer with MACs that the table cannot measure (names it); use a MACs budget.
        """
        missing = [n for n, _ in rule_nodes(dg.gm, "macs") if signature_of(dg, n) is None]
        if missing:
            raise UnsupportedError(
                "config['budget'] = {'latency': ...} needs a per-layer onnxruntime latency, but fxprune cannot "
                f"measure {node_context(missing[0])}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + ": the table measures Conv1d/Conv2d (plain or depthwise, zero padding), Linear and matmul as "
                "single ONNX ops. Use {'macs': fraction} for this model instead.")
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
    if x <= xs[0]:
        return float(ys[0] * x / xs[0]) if xs[0] > 0 else float(ys[0])
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
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.onnx")
        onnx.save(model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for _ in range(_WARMUP):
            sess.run(None, feeds)
        sess.end_profiling()
        opts.enable_profiling, opts.profile_file_prefix = True, os.path.join(tmp, "profile")
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, list[float]] = {n: [] for n in names}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        for n in names:
            if node == n or node.startswith(n + "_"):
                per[n].append(e["dur"] * 1e-6)
    # one value per run: a layer split into several kernels (ORT fusions) sums them
    return [float(np.median(np.asarray(v).reshape(runs, -1).sum(1))) if v and len(v) % runs == 0
            else float(np.median(v)) if v else 0.0 for v in per.values()]


def _measure(sig: Signature, threads: int) -> dict[str, Any]:
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


def cost_model(resource: str, dg: DependencyGraph, example_inputs: tuple | None = None) -> CostModel:
    """The cost model of a budget's resource: "macs", "params" or "latency" (a `LatencyTable` measured for
    the example inputs' batch on this machine, from the disk cache when there is one)."""
    if resource == "macs":
        return CostModel(dg, macs_terms(dg))
    if resource == "params":
        return CostModel(dg, params_terms(dg))
    table = LatencyTable.for_graph(dg)
    return CostModel(dg, table.terms(), round_to=table.block)
