"""Latency benchmark of ONNX files in onnxruntime on CPU, e.g. a dense model against its pruned twin.

`benchmark` times `InferenceSession.run` for every model at every batch size with identical
random inputs, interleaving the models so that machine noise hits them alike, and reports
median/p90/mean/min latency plus each model's speedup over the first (baseline) model. With
`kernel=True` (the default) it also reports onnxruntime's profiler view: the summed kernel time of
each run (median over runs; the models' profiled runs interleaved too) and the speedup from it. Kernel
time leaves out the scheduling gaps in which another process ran, so on a loaded machine it measures the
model, where wall clock measures the model plus the load; the wall-clock medians are still reported next
to it.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from fxprune.errors import InputError
from fxprune.latency import kernel_per_run, session_options

__all__ = ["BenchResult", "benchmark", "kernel_time", "kernel_times"]

_MAX_RUNS = 2000

_FLOAT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}
_INT_DTYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}

_COLUMNS = ("model", "batch", "median_ms", "p90_ms", "mean_ms", "min_ms", "runs", "speedup")


@dataclass
class BenchResult:
    """Timings of `benchmark`.

    Attributes:
        rows: One dict per (batch size, model), batch-major in the order of the arguments, with keys
            model, batch, median_ms, p90_ms, mean_ms, min_ms, runs, speedup (baseline median divided
            by this model's median at the same batch size; 1.0 for the baseline), and with `kernel=True`
            kernel_ms (median over profiled runs of the summed kernel time) and kernel_speedup.
        machine: CPU model, core count, onnxruntime and torch versions, and threads used.
        config: The benchmark settings (batch sizes, threads, warmup, min_runs, min_time_s, seed).
    """

    rows: list[dict[str, Any]]
    machine: str
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise the result.

        Returns:
            A JSON object with keys "machine", "config" and "rows".
        """
        return json.dumps({"machine": self.machine, "config": self.config, "rows": self.rows}, indent=2)

    def to_markdown(self, ideal: Mapping[str, float] | None = None) -> str:
        """Render the rows as a Markdown table.

        Args:
            ideal: Optional ideal speedup per model label (e.g. the MAC reduction ratio); adds the
                columns "ideal" and "measured/ideal". Labels missing from it show "-".

        Returns:
            The table, one line per row, without a trailing newline.
        """
        header = ["model", "batch", "median ms", "p90 ms", "mean ms", "min ms", "runs", "speedup"]
        kernel = bool(self.rows) and "kernel_ms" in self.rows[0]
        if kernel:
            header += ["kernel ms", "kernel speedup"]
        if ideal is not None:
            header += ["ideal", "measured/ideal"] + (["kernel/ideal"] if kernel else [])
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
        ]
        for row in self.rows:
            cells = [
                str(row["model"]),
                str(row["batch"]),
                f"{row['median_ms']:.3f}",
                f"{row['p90_ms']:.3f}",
                f"{row['mean_ms']:.3f}",
                f"{row['min_ms']:.3f}",
                str(row["runs"]),
                f"{row['speedup']:.2f}x",
            ]
            if kernel:
                cells += [f"{row['kernel_ms']:.3f}", f"{row['kernel_speedup']:.2f}x"]
            if ideal is not None:
                target = ideal.get(row["model"])
                if target is None or target <= 0:
                    cells += ["-", "-"] + (["-"] if kernel else [])
                else:
                    cells += [f"{target:.2f}x", f"{row['speedup'] / target:.2f}"]
                    if kernel:
                        cells.append(f"{row['kernel_speedup'] / target:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def benchmark(
    models: Mapping[str, str | os.PathLike],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    threads: int = 2,
    warmup: int = 10,
    min_runs: int = 30,
    min_time_s: float = 1.0,
    input_shapes: Mapping[str, tuple] | None = None,
    seed: int = 0,
    kernel: bool = True,
    kernel_runs: int = 20,
) -> BenchResult:
    """Time ONNX models in onnxruntime (CPUExecutionProvider) at several batch sizes.

    Every model gets a session with `threads` intra-op threads, one inter-op thread, all graph
    optimisations and sequential execution. Inputs are random: float inputs standard normal in the
    input's float type, integer inputs uniform in [0, 100) (valid token ids for any vocabulary of
    at least 100), bool inputs random. Axis 0 of every input is the batch axis.

    Args:
        models: Label -> ONNX file; the first entry is the baseline for the speedups.
        batch_sizes: Batch sizes to time, in order.
        threads: onnxruntime intra-op threads.
        warmup: Untimed runs per model and batch size before timing.
        min_runs: Least number of timed runs per model and batch size.
        min_time_s: Least total timed seconds per model and batch size (runs stop at 2000 anyway).
        input_shapes: Input name -> full shape, needed for inputs whose non-batch axes are symbolic
            (e.g. {"input_ids": (1, 128)}); the value given for axis 0 is replaced by each batch size.
        seed: Seed of the random inputs; all models see the same arrays.
        kernel: Also profile every model (`kernel_time`) and report kernel_ms and kernel_speedup.
        kernel_runs: Profiled runs per model and batch size.

    Returns:
        A `BenchResult`.

    Raises:
        InputError: No models, a missing or unloadable file, bad settings, an input with a static
            batch axis that differs from a requested batch size, a symbolic axis without an entry
            in `input_shapes`, an `input_shapes` name no model has, or an unsupported input type.
    """
    _validate_settings(models, batch_sizes, threads, warmup, min_runs, min_time_s)
    shapes = {name: tuple(shape) for name, shape in (input_shapes or {}).items()}
    sessions = {label: _session(label, path, threads) for label, path in models.items()}
    _check_shape_names(sessions, shapes)

    labels = list(sessions)
    rows: list[dict[str, Any]] = []
    for batch in batch_sizes:
        feeds = {
            label: _feeds(label, models[label], sess, batch, shapes, seed) for label, sess in sessions.items()
        }
        times = _time_interleaved(sessions, feeds, batch, warmup, min_runs, min_time_s)
        ms = {label: np.asarray(times[label]) * 1e3 for label in labels}
        base_median = float(np.median(ms[labels[0]]))
        kernels = {label: seconds * 1e3 for label, seconds in
                   kernel_times({label: (models[label], feeds[label]) for label in labels}, threads,
                                kernel_runs).items()} if kernel else {}
        for label in labels:
            median = float(np.median(ms[label]))
            rows.append(
                {
                    "model": label,
                    "batch": int(batch),
                    "median_ms": median,
                    "p90_ms": float(np.percentile(ms[label], 90)),
                    "mean_ms": float(ms[label].mean()),
                    "min_ms": float(ms[label].min()),
                    "runs": int(ms[label].size),
                    "speedup": 1.0 if label == labels[0] else base_median / median,
                }
            )
            if kernel:
                rows[-1]["kernel_ms"] = kernels[label]
                rows[-1]["kernel_speedup"] = kernels[labels[0]] / kernels[label] if kernels[label] else 0.0
    config = {
        "batch_sizes": [int(b) for b in batch_sizes],
        "threads": threads,
        "warmup": warmup,
        "min_runs": min_runs,
        "min_time_s": min_time_s,
        "seed": seed,
        "kernel_runs": kernel_runs if kernel else 0,
        "models": {label: str(path) for label, path in models.items()},
    }
    return BenchResult(rows=rows, machine=_machine(threads), config=config)


def kernel_time(path: str | os.PathLike, feeds: Mapping[str, np.ndarray], threads: int = 2, runs: int = 20,
                warmup: int = 3) -> float:
    """onnxruntime's profiler: seconds of kernel time per run (the sum over the run's nodes; median over runs).

    Args:
        path: the ONNX file.
        feeds: input name -> array.
        threads: intra-op threads (the session is set up like `benchmark`'s).
        runs: profiled runs.
        warmup: runs before the profiled ones (left out of the median).

    Returns:
        Seconds.
    """
    return kernel_times({"model": (path, feeds)}, threads, runs, warmup)["model"]


def kernel_times(models: Mapping[str, tuple[str | os.PathLike, Mapping[str, np.ndarray]]], threads: int = 2,
                 runs: int = 20, warmup: int = 3) -> dict[str, float]:
    """`kernel_time` of several models, their profiled runs interleaved (A, B, C, A, B, C, ...): a slow spell of the
    machine then lands on every model alike instead of on whichever was being profiled.

    Args:
        models: label -> (ONNX file, feeds).
        threads, runs, warmup: as for `kernel_time`.

    Returns:
        Label -> seconds of kernel time per run (median over its runs).
    """

    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for i, (label, (path, feeds)) in enumerate(models.items()):
            sessions[label] = sess = _session(label, path, threads, os.path.join(tmp, f"profile{i}"))
            for _ in range(warmup):
                sess.run(None, dict(feeds))
        for _ in range(runs):
            for label, sess in sessions.items():
                sess.run(None, dict(models[label][1]))
        out = {}
        for label, sess in sessions.items():
            per_run = kernel_per_run(json.loads(Path(sess.end_profiling()).read_text()))[warmup:]
            out[label] = float(np.median(per_run)) if per_run.size else 0.0
    return out


def _validate_settings(
    models: Mapping[str, str | os.PathLike],
    batch_sizes: Sequence[int],
    threads: int,
    warmup: int,
    min_runs: int,
    min_time_s: float,
) -> None:
    if not models:
        raise InputError(
            'benchmark got no models; pass e.g. {"dense": "dense.onnx", "pruned": "pruned.onnx"}.'
        )
    for label, path in models.items():
        if not Path(os.fspath(path)).is_file():
            raise InputError(
                f"ONNX file {os.fspath(path)!r} for model {label!r} does not exist; export it first "
                "(fxprune.passes.export.export_onnx) or fix the path."
            )
    if not batch_sizes or any(not isinstance(b, (int, np.integer)) or b < 1 for b in batch_sizes):
        raise InputError(
            f"batch_sizes must be positive integers, got {list(batch_sizes)!r}; pass e.g. (1, 8)."
        )
    for name, value, least in (("threads", threads, 1), ("warmup", warmup, 0), ("min_runs", min_runs, 1)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise InputError(f"{name} must be an integer >= {least}, got {value!r}.")
    if not min_time_s >= 0:
        raise InputError(f"min_time_s must be >= 0 seconds, got {min_time_s!r}.")


def _session(label: str, path: str | os.PathLike, threads: int,
             profile: str | None = None):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    try:
        return ort.InferenceSession(os.fspath(path), session_options(threads, profile),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(
            f"onnxruntime cannot load {os.fspath(path)!r} (model {label!r}): {_first_line(exc)}; "
            "re-export it with export_onnx."
        ) from exc


def _check_shape_names(sessions: Mapping[str, Any], shapes: Mapping[str, tuple]) -> None:
    known = {i.name for sess in sessions.values() for i in sess.get_inputs()}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise InputError(
            f"input_shapes names {unknown} are not inputs of any model; the inputs are {sorted(known)}."
        )


def _feeds(
    label: str,
    path: str | os.PathLike,
    session: Any,
    batch: int,
    shapes: Mapping[str, tuple],
    seed: int,
) -> dict[str, np.ndarray]:
    feeds = {}
    for inp in session.get_inputs():
        shape = _resolve_shape(label, path, inp.name, list(inp.shape), batch, shapes)
        # Seeded by input name, batch and type only, so models with the same inputs get the same arrays.
        rng = np.random.default_rng([seed, zlib.crc32(f"{inp.name}|{shape}|{inp.type}".encode())])
        if inp.type in _FLOAT_DTYPES:
            feeds[inp.name] = rng.standard_normal(shape).astype(_FLOAT_DTYPES[inp.type])
        elif inp.type in _INT_DTYPES:
            feeds[inp.name] = rng.integers(0, 100, size=shape).astype(_INT_DTYPES[inp.type])
        elif inp.type == "tensor(bool)":
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise InputError(
                f"input {inp.name!r} of model {label!r} ({os.fspath(path)!r}) has type {inp.type}, which "
                "benchmark cannot generate; use float, integer or bool inputs."
            )
    return feeds


def _resolve_shape(
    label: str,
    path: str | os.PathLike,
    name: str,
    onnx_shape: list,
    batch: int,
    shapes: Mapping[str, tuple],
) -> tuple[int, ...]:
    where = f"input {name!r} of model {label!r} ({os.fspath(path)!r})"
    if name in shapes:
        given = list(shapes[name])
        if len(given) != len(onnx_shape):
            raise InputError(
                f"input_shapes[{name!r}] = {tuple(given)} has {len(given)} axes but {where} has "
                f"{len(onnx_shape)} ({onnx_shape}); give the full shape including the batch axis."
            )
        dims = given
    else:
        dims = list(onnx_shape)
    if not dims:
        return ()
    static_batch = onnx_shape[0]
    if isinstance(static_batch, int) and static_batch != batch:
        raise InputError(
            f"{where} has a static batch size of {static_batch}, so it cannot run at batch {batch}; "
            "export it with a dynamic batch (export_onnx(..., dynamic_batch=True)) or pass "
            f"batch_sizes=({static_batch},)."
        )
    dims[0] = batch
    for axis, (dim, declared) in enumerate(zip(dims[1:], onnx_shape[1:], strict=True), start=1):
        if isinstance(declared, int) and dim != declared:
            raise InputError(
                f"input_shapes[{name!r}] sets axis {axis} to {dim!r} but {where} fixes it at {declared}; "
                "drop that entry or use the declared size."
            )
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            example = tuple(d if isinstance(d, (int, np.integer)) else 1 for d in dims)
            raise InputError(
                f"axis {axis} of {where} is symbolic ({dim!r}); pass its size in input_shapes, "
                f"e.g. input_shapes={{{name!r}: {example}}}."
            )
    return tuple(int(d) for d in dims)


def _time_interleaved(
    sessions: Mapping[str, Any],
    feeds: Mapping[str, dict[str, np.ndarray]],
    batch: int,
    warmup: int,
    min_runs: int,
    min_time_s: float,
) -> dict[str, list[float]]:
    """Run every model round-robin; return each model's run times in seconds."""
    # Interleaving: each round runs every model once (A, B, A, B, ...), rotating which goes first.
    # CPU frequency, thermal state and background load drift over seconds; timing all of A and
    # then all of B would put that drift on one model and bias the speedup. Round-robin spreads it
    # evenly, and rotating the start cancels an order effect (e.g. caches left cold or warm by the
    # previous model). Every model therefore gets the same number of runs.
    labels = list(sessions)
    for label in labels:  # One checked run each, so a bad feed fails with a clear message.
        try:
            sessions[label].run(None, feeds[label])
        except Exception as exc:
            shapes = {name: array.shape for name, array in feeds[label].items()}
            raise InputError(
                f"model {label!r} fails at batch {batch} on inputs of shapes {shapes}: {_first_line(exc)}; "
                "check input_shapes and batch_sizes."
            ) from exc
    for _ in range(warmup):
        for label in labels:
            sessions[label].run(None, feeds[label])
    times: dict[str, list[float]] = {label: [] for label in labels}
    spent = dict.fromkeys(labels, 0.0)
    rounds = 0
    while rounds < _MAX_RUNS and (rounds < min_runs or min(spent.values()) < min_time_s):
        order = labels[rounds % len(labels) :] + labels[: rounds % len(labels)]
        for label in order:
            session, feed = sessions[label], feeds[label]
            start = time.perf_counter()
            session.run(None, feed)
            elapsed = time.perf_counter() - start
            times[label].append(elapsed)
            spent[label] += elapsed
        rounds += 1
    return times


def _machine(threads: int) -> str:
    cpu = _cpu_model() or platform.processor() or platform.machine() or "unknown CPU"
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    cores = f"{logical} logical cores" + (f" ({usable} usable)" if usable != logical else "")
    return (
        f"{cpu}; {cores}; onnxruntime {_version('onnxruntime')}; torch {_version('torch')}; "
        f"{threads} intra-op threads"
    )


def _cpu_model() -> str | None:
    from fxprune.latency import cpu_model

    return cpu_model()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
