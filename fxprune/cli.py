"""The `fxprune` command line: `demo`, `prune` and `bench`.

    fxprune demo                                   # built-in ResNet-18, 50% channels, report + benchmark
    fxprune prune mymodels:build --config prune.yaml --input-shape 1,3,224,224 --out pruned/
    fxprune bench dense.onnx pruned.onnx --batch-sizes 1,8 --threads 2

Every mistake (a bad flag, a missing module or factory, a bad config key, an input shape the model
rejects, an unwritable output directory, a model the exporter cannot handle) is one line
`fxprune: error: ...` on stderr and exit code 2; an unexpected failure is exit code 1. `--debug`
shows the traceback instead. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .catalog import ALGORITHMS
from .errors import FxPruneError

__all__ = ["main"]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
_PROG = "fxprune"
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32}
_SHAPE_RE = re.compile(r"^\s*(\d+(?:\s*[,x]\s*\d+)*)\s*(?::\s*(\w+))?\s*$")

_EPILOG_MAIN = """\
examples:
  fxprune demo                       prune the built-in ResNet-18 by 50%, print report and benchmark
  fxprune demo --quick               the same on a small, fast ResNet-18 (a smoke test)
  fxprune prune mymodels:build --config prune.yaml --input-shape 1,3,224,224 --out pruned/
  fxprune bench dense.onnx pruned.onnx --batch-sizes 1,8 --threads 2

exit codes: 0 success, 2 bad input (one line on stderr), 1 internal error (rerun with --debug).
"""

_EPILOG_PRUNE = """\
MODULE is an importable module name (searched from the current directory first) or a path to a
.py file; FACTORY is a callable in it that takes no arguments and returns the nn.Module.

CONFIG is YAML or JSON with the keys of fxprune.compile's config, e.g.
  pruner: l1                 # l1 | l2 | fpgm | level
  sparsity: 0.5              # or rules: [NNI config_list entries]
  rules:
    - {sparsity: 0.5, op_types: [Conv2d]}
    - {exclude: true, op_names: [fc]}

DIR receives (atomically: all of it or nothing):
  model.fxp     the pruned model, masks and report: fxprune.load("model.fxp").model
  model.onnx    the pruned model, checked in onnxruntime, dynamic batch axis
  dense.onnx    the unpruned model, the baseline of the benchmark
  report.txt    the pruning report;  report.json  the same as JSON, with ONNX parity
  bench.md      onnxruntime latency dense vs pruned;  bench.json  the same as JSON
  layers.png    channels before/after per layer, frozen groups marked (needs matplotlib)

examples:
  fxprune prune mymodels:build --config prune.yaml --input-shape 1,3,224,224 --out pruned/
  fxprune prune ./net.py:make_net --config cfg.json --input-shape 1,3,32,32 --out out/ --no-bench
  fxprune prune tok:model --config c.yaml --input-shape 1,128:int64 --out out/ --force
"""

_EPILOG_BENCH = """\
The first file is the baseline: every other file's speedup is baseline median / its median.

examples:
  fxprune bench dense.onnx pruned.onnx
  fxprune bench dense.onnx pruned.onnx --batch-sizes 1,8,32 --threads 4 --ideal 2.1 --json bench.json
  fxprune bench dense.onnx pruned.onnx --chart bench.png     (a latency bar chart; needs matplotlib)
  fxprune bench bert.onnx bert_pruned.onnx --input-shape input_ids=1,128
"""

_EPILOG_DEMO = """\
The built-in model is fxprune.models.resnet18 (torchvision's ResNet-18 layout, random weights):
it is traced, pruned with the L1 criterion, verified, exported to ONNX (checked in onnxruntime),
and dense vs pruned are timed in onnxruntime. Nothing is written unless --out is given.

examples:
  fxprune demo
  fxprune demo --quick
  fxprune demo --sparsity 0.3 --pruner fpgm --batch-sizes 1 --out demo_out/
"""


#: What the demo can run without data: the structured weight criteria of the catalogue.
_DEMO_PRUNERS = [a.name for a in ALGORITHMS.values()
                 if a.implemented and a.family == "weights" and a.unit == "channels"]


class CLIError(FxPruneError):
    """A mistake in the command line or in what it points at; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and an exception instead of usage text + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------- output


def _out(text: str = "") -> None:
    """Results: stdout."""
    print(text, flush=True)


def _err(text: str) -> None:
    """Progress, warnings and errors: stderr."""
    print(text, file=sys.stderr, flush=True)


class _Progress:
    """One stderr line per long step, with its duration; silent with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        if not self.quiet:
            print(f"{_PROG}: {what} ...", end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            if not self.quiet:
                print(" failed", file=sys.stderr, flush=True)
            raise
        if not self.quiet:
            print(f" done ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


# Warnings the exporter and torch print about themselves, not about the user's model.
_NOISE = ("legacy TorchScript-based ONNX export", "The feature will be removed", "TracerWarning")


@contextlib.contextmanager
def _show_warnings() -> Iterator[None]:
    """Print the library's warnings as `fxprune: warning: ...` after the step, without source lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield
    seen: set[str] = set()
    for w in caught:
        text = str(w.message).strip()
        if issubclass(w.category, torch.jit.TracerWarning) or any(n in text for n in _NOISE) or text in seen:
            continue
        seen.add(text)
        _err(f"{_PROG}: warning: {text}")


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


# --------------------------------------------------------------------------------------------- parsing


def _parse_shape(spec: str, flag: str = "--input-shape") -> tuple[tuple[int, ...], torch.dtype]:
    """'1,3,224,224' or '1x3x224x224', optionally ':int64' -> (shape, dtype)."""
    match = _SHAPE_RE.match(spec)
    if not match:
        raise CLIError(f"{flag} {spec!r} is not a shape: write it as comma-separated sizes, e.g. 1,3,224,224 "
                       f"(optionally :int64 for token ids)")
    shape = tuple(int(d) for d in re.split(r"\s*[,x]\s*", match.group(1)))
    if any(d < 1 for d in shape):
        raise CLIError(f"{flag} {spec!r} has a size below 1; every size must be a positive integer")
    dtype_name = match.group(2) or "float32"
    if dtype_name not in _DTYPES:
        raise CLIError(f"{flag} {spec!r}: unknown dtype {dtype_name!r}; use one of {', '.join(_DTYPES)}")
    return shape, _DTYPES[dtype_name]


def _parse_ints(spec: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in spec.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise CLIError(f"{flag} {spec!r} must be comma-separated positive integers, e.g. 1,8")
    return values


def _example_inputs(specs: Sequence[str]) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for spec in specs:
        shape, dtype = _parse_shape(spec)
        if dtype.is_floating_point:
            inputs.append(torch.randn(shape, generator=gen, dtype=dtype))
        else:  # token ids valid for any vocabulary of at least 100, as in fxprune.bench
            inputs.append(torch.randint(0, 100, shape, generator=gen, dtype=dtype))
    return tuple(inputs)


def _load_config(path: str) -> Any:
    """Read a YAML or JSON config file (JSON by extension, YAML otherwise: YAML reads JSON too)."""
    file = Path(path)
    if not file.is_file():
        raise CLIError(f"config file {path!r} does not exist")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError) as exc:  # json.JSONDecodeError is a ValueError
        raise CLIError(f"config file {path!r} is not valid JSON: {_one_line(exc)}") from exc
    except Exception as exc:  # yaml.YAMLError
        raise CLIError(f"config file {path!r} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if data is None:
        raise CLIError(f"config file {path!r} is empty; write e.g. 'pruner: l1' and 'sparsity: 0.5'")
    return data


def _load_factory(spec: str) -> tuple[Callable[[], Any], str]:
    """'pkg.module:factory' or 'path/to/file.py:factory' -> (callable, its display name)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"model {spec!r} must be MODULE:FACTORY, e.g. mymodels:build or ./net.py:make_net")
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        file = Path(module_name)
        if not file.is_file():
            raise CLIError(f"module file {module_name!r} does not exist")
        import_spec = importlib.util.spec_from_file_location(file.stem, file)
        if import_spec is None or import_spec.loader is None:
            raise CLIError(f"cannot load {module_name!r} as a Python module")
        module = importlib.util.module_from_spec(import_spec)
        sys.modules[file.stem] = module  # lets pickle and fx find the classes it defines
        try:
            import_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(file.stem, None)
            raise CLIError(f"importing module file {module_name!r} failed: {type(exc).__name__}: "
                           f"{_one_line(exc)}") from exc
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` does: the user's module is usually right here
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise CLIError(f"cannot import module {module_name!r}: no module named {exc.name!r} "
                               "(run from the directory that holds it, or set PYTHONPATH)") from exc
            raise CLIError(f"importing module {module_name!r} failed: {_one_line(exc)}") from exc
        except Exception as exc:
            raise CLIError(f"importing module {module_name!r} failed: {type(exc).__name__}: "
                           f"{_one_line(exc)}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                        and getattr(v, "__module__", None) == module.__name__)
        raise CLIError(f"module {module_name!r} has no factory {attr!r}"
                       + (f"; it defines {', '.join(public[:8])}" if public else ""))
    if not callable(factory):
        raise CLIError(f"{spec!r} is a {type(factory).__name__}, not a callable returning an nn.Module")
    return factory, spec


def _build_model(factory: Callable[[], Any], name: str) -> torch.nn.Module:
    try:
        model = factory()
    except Exception as exc:
        raise CLIError(f"factory {name}() failed: {type(exc).__name__}: {_one_line(exc)}") from exc
    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"factory {name}() returned a {type(model).__name__}, not a torch.nn.Module")
    # Pruning for deployment: BatchNorm must use its running statistics, Dropout must be off.
    return model.eval()


def _check_runs(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], name: str, shapes: Sequence[str]) -> None:
    """Run the model once so a wrong --input-shape is reported in the model's words, before any work."""
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as exc:
        raise CLIError(f"the model from {name} fails on --input-shape {' '.join(shapes)}: "
                       f"{type(exc).__name__}: {_one_line(exc)}") from exc


# --------------------------------------------------------------------------------------------- files


def _save_model(result: Any, path: Path) -> None:
    """Write the pruned model with `fxprune.save` (no pickled code; `fxprune.load(path).model` reads it)."""
    from .serialize import save

    save(result, path)


def _prepare_out_dir(out: str, force: bool) -> tuple[Path, Path]:
    """Check --out and create the temporary directory next to it. Returns (target, temp dir)."""
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise CLIError(f"--out {out!r} is a file; pass a directory path")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise CLIError(f"--out directory {out!r} is not empty; pass --force to replace it or choose another")
    parent = target.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise CLIError(f"the parent {str(parent)!r} of --out {out!r} is a file, not a directory; choose another path")
    if not parent.is_dir():
        raise CLIError(f"the parent directory {str(parent)!r} of --out {out!r} does not exist; create it first")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise CLIError(f"cannot write in {str(parent)!r} for --out {out!r} ({exc.strerror}); "
                       "fix its permissions or choose another directory") from exc
    return target, tmp


def _publish_dir(tmp: Path, target: Path) -> None:
    """Replace `target` by the finished `tmp` (one rename; an old directory is moved aside first)."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=tmp.parent))
        os.replace(target, old / "dir")
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old / "dir", target)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


# --------------------------------------------------------------------------------------------- pipeline


def _bench_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"batch_sizes": _parse_ints(args.batch_sizes, "--batch-sizes"), "threads": args.threads,
            "warmup": args.warmup, "min_runs": args.min_runs, "min_time_s": args.min_time}


def _pipeline(model: torch.nn.Module, config: Any, inputs: tuple[torch.Tensor, ...], workdir: Path,
              progress: _Progress, bench: dict[str, Any] | None) -> dict[str, Any]:
    """compile -> export dense and pruned -> benchmark. Files go to `workdir`; returns what was made."""
    from .bench import benchmark
    from .compiler import compile as fx_compile
    from .passes.export import export_onnx

    with progress.step("tracing, pruning and verifying (fxprune.compile)"), _show_warnings():
        result = fx_compile(model, config, inputs)
    # The baseline is the user's model itself, not the masked model: its mask multiplications would
    # make the dense model slower than it really is and flatter the speedup.
    with progress.step("exporting the dense model to ONNX and checking it in onnxruntime"), _show_warnings():
        dense = export_onnx(model, inputs, workdir / "dense.onnx")
    with progress.step("exporting the pruned model to ONNX and checking it in onnxruntime"), _show_warnings():
        pruned = export_onnx(result.model, result.example_inputs, workdir / "model.onnx")
    timing = None
    if bench is not None:
        what = f"benchmarking dense vs pruned in onnxruntime (batch {','.join(map(str, bench['batch_sizes']))}, " \
               f"{bench['threads']} threads)"
        with progress.step(what):
            timing = benchmark({"dense": dense.path, "pruned": pruned.path}, **bench)
    return {"result": result, "dense": dense, "pruned": pruned, "bench": timing}


def _parity(made: dict[str, Any]) -> str:
    d, p = made["dense"], made["pruned"]
    report = made["result"].report
    return "\n".join([
        f"ONNX: dense  {d.num_params:>12,} params, onnxruntime vs torch max |err| {d.max_abs_err:.2e} "
        f"(rel {d.max_rel_err:.2e}), opset {d.opset}, dynamic batch {d.dynamic_batch}",
        f"ONNX: pruned {p.num_params:>12,} params, onnxruntime vs torch max |err| {p.max_abs_err:.2e} "
        f"(rel {p.max_rel_err:.2e}), opset {p.opset}, dynamic batch {p.dynamic_batch}",
        f"ONNX params removed: {d.num_params - p.num_params:,} (torch: {report.params_before - report.params_after:,}; "
        "the ONNX files fold BatchNorm into the convs)",
    ])


def _bench_text(made: dict[str, Any]) -> str:
    bench, report = made["bench"], made["result"].report
    if bench is None:
        return ""
    return "\n".join([
        f"onnxruntime CPU latency, {bench.machine}",
        f"ideal speedup = MACs before / after = {report.ideal_speedup:.2f}x",
        "",
        bench.to_markdown(ideal={"pruned": report.ideal_speedup}),
    ])


def _report_json(made: dict[str, Any]) -> str:
    data = made["result"].report.to_dict()
    data["ideal_speedup"] = made["result"].report.ideal_speedup
    data["onnx"] = {k: {f: getattr(made[k], f) for f in ("path", "opset", "num_params", "max_abs_err", "max_rel_err",
                                                           "dynamic_batch")} for k in ("dense", "pruned")}
    for k in ("dense", "pruned"):
        data["onnx"][k]["path"] = Path(data["onnx"][k]["path"]).name
    return json.dumps(data, indent=2, default=str)


# --------------------------------------------------------------------------------------------- commands


def _cmd_demo(args: argparse.Namespace, progress: _Progress) -> int:
    from .models import resnet18

    if args.quick:
        width, size, batches = args.width or 16, args.image_size or 64, args.batch_sizes or "1"
        bench = {"warmup": 2, "min_runs": 5, "min_time_s": 0.0}
    else:
        width, size, batches = args.width or 64, args.image_size or 224, args.batch_sizes or "1,8"
        bench = {"warmup": 3, "min_runs": 8, "min_time_s": 0.5}
    bench.update(batch_sizes=_parse_ints(batches, "--batch-sizes"), threads=args.threads)
    config = {"pruner": args.pruner, "sparsity": args.sparsity}
    from .config import parse_config

    parse_config(config)
    torch.manual_seed(0)
    model = resnet18(num_classes=1000, width=width).eval()
    inputs = (torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)),)
    _out(f"fxprune demo: ResNet-18 (width {width}, 1000 classes) on 1x3x{size}x{size}, "
         f"pruner {args.pruner}, {args.sparsity:.0%} of channels")
    with tempfile.TemporaryDirectory(prefix="fxprune-demo-") as tmp:
        made = _pipeline(model, config, inputs, Path(tmp), progress, None if args.no_bench else bench)
        _out("")
        _print_results(made)
        if args.out:
            target, work = _prepare_out_dir(args.out, args.force)
            try:
                _write_outputs(made, work)
                _publish_dir(work, target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            _err(f"{_PROG}: wrote {target}/")
    return EXIT_OK


def _print_results(made: dict[str, Any]) -> None:
    """The report, the ONNX parity and (if run) the benchmark table, to stdout."""
    _out(str(made["result"].report))
    _out("")
    _out(_parity(made))
    if made["bench"] is not None:
        _out("")
        _out(_bench_text(made))


def _write_outputs(made: dict[str, Any], work: Path) -> None:
    """Everything `prune` promises in --out, written into `work` (the temp dir)."""
    for name in ("dense", "pruned"):
        src = Path(made[name].path)
        dst = work / ("dense.onnx" if name == "dense" else "model.onnx")
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
    _save_model(made["result"], work / "model.fxp")
    (work / "report.txt").write_text(str(made["result"].report) + "\n\n" + _parity(made) + "\n", encoding="utf-8")
    (work / "report.json").write_text(_report_json(made) + "\n", encoding="utf-8")
    _draw_layers(made["result"].report, work / "layers.png")
    if made["bench"] is not None:
        data = json.loads(made["bench"].to_json())
        data["ideal_speedup"] = {"pruned": made["result"].report.ideal_speedup}
        for row in data["rows"]:
            row["ideal_speedup"] = 1.0 if row["model"] == "dense" else made["result"].report.ideal_speedup
        data["config"]["models"] = {"dense": "dense.onnx", "pruned": "model.onnx"}
        (work / "bench.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (work / "bench.md").write_text(_bench_text(made) + "\n", encoding="utf-8")


def _draw_layers(report: Any, path: Path) -> None:
    """layers.png, or a warning with the pip line when matplotlib is missing (everything else is still written)."""
    from .figures import PlotUnavailable, plot_layers

    try:
        plot_layers(report, path)
    except PlotUnavailable as exc:
        _err(f"{_PROG}: warning: {path.name} not written: {_one_line(exc)}")


def _cmd_prune(args: argparse.Namespace, progress: _Progress) -> int:
    from .config import parse_config

    # Cheap checks first, so a typo costs no tracing time and leaves nothing behind.
    if not args.input_shape:
        raise CLIError("--input-shape is required, e.g. --input-shape 1,3,224,224 (repeat it for several inputs)")
    inputs = _example_inputs(args.input_shape)
    config = _load_config(args.config)
    try:
        parse_config(config)
    except FxPruneError as exc:
        raise CLIError(f"config file {args.config!r}: {_one_line(exc)}") from exc
    bench = None if args.no_bench else _bench_kwargs(args)
    factory, name = _load_factory(args.model)
    with progress.step(f"building the model ({name})"):
        model = _build_model(factory, name)
        _check_runs(model, inputs, name, args.input_shape)
    target, work = _prepare_out_dir(args.out, args.force)
    try:
        made = _pipeline(model, config, inputs, work, progress, bench)
        with progress.step(f"writing {target}/"):
            _write_outputs(made, work)
            _publish_dir(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print_results(made)
    _out("")
    _out(f"wrote {', '.join(sorted(p.name for p in target.iterdir()))} to {target}/")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace, progress: _Progress) -> int:
    from .bench import benchmark

    if len(args.onnx) < 2:
        raise CLIError("bench needs at least two ONNX files: the baseline first, e.g. dense.onnx pruned.onnx")
    labels = [Path(p).stem for p in args.onnx]
    if args.labels:
        labels = [s.strip() for s in args.labels.split(",")]
        if len(labels) != len(args.onnx):
            raise CLIError(f"--labels gives {len(labels)} names for {len(args.onnx)} ONNX files")
    if len(set(labels)) != len(labels):
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    shapes = {}
    for spec in args.input_shape or []:
        name, sep, shape = spec.partition("=")
        if not sep or not name:
            raise CLIError(f"--input-shape {spec!r} must be NAME=SIZES, e.g. input_ids=1,128")
        shapes[name] = _parse_shape(shape)[0]
    kwargs = _bench_kwargs(args)
    if args.chart and not Path(args.chart).resolve().parent.is_dir():
        raise CLIError(f"the directory of --chart {args.chart!r} does not exist; create it first")
    with progress.step(f"timing {len(args.onnx)} models in onnxruntime (batch {args.batch_sizes}, "
                       f"{args.threads} threads)"):
        result = benchmark(dict(zip(labels, args.onnx)), input_shapes=shapes or None, **kwargs)
    ideal = None if args.ideal is None else {label: args.ideal for label in labels[1:]}
    _out(f"onnxruntime CPU latency, {result.machine}")
    _out("")
    _out(result.to_markdown(ideal=ideal))
    if args.json:
        data = json.loads(result.to_json())
        if ideal:
            data["ideal_speedup"] = ideal
        _write_atomic(Path(args.json), json.dumps(data, indent=2) + "\n")
    if args.chart:
        _write_chart(result, Path(args.chart), progress.quiet)
    return EXIT_OK


def _write_chart(result: Any, path: Path, quiet: bool) -> None:
    """--chart: the latency bar chart, after everything else is written (a missing matplotlib is one error line)."""
    from .figures import PlotUnavailable, plot_bench

    try:
        plot_bench(result, path)
    except PlotUnavailable as exc:
        raise CLIError(f"--chart {str(path)!r} not written: {_one_line(exc)}") from exc
    except OSError as exc:
        raise CLIError(f"cannot write --chart {str(path)!r} ({exc.strerror or exc}); choose another path") from exc
    if not quiet:
        _err(f"{_PROG}: wrote {path}")


def _write_atomic(path: Path, text: str) -> None:
    parent = path.resolve().parent
    if not parent.is_dir():
        raise CLIError(f"directory {str(parent)!r} for {str(path)!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    except OSError as exc:
        raise CLIError(f"cannot write {str(path)!r} ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------------- parser


def _add_bench_flags(p: argparse.ArgumentParser, *, batch_default: str | None = "1,8", warmup: int = 10,
                     min_runs: int = 30, min_time: float = 1.0) -> None:
    g = p.add_argument_group("benchmark (onnxruntime, CPU)")
    g.add_argument("--batch-sizes", default=batch_default, metavar="B1,B2",
                   help=f"batch sizes to time (default: {batch_default or 'see above'})")
    g.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default: 2)")
    if warmup >= 0:
        g.add_argument("--warmup", type=int, default=warmup, help=f"untimed runs first (default: {warmup})")
        g.add_argument("--min-runs", type=int, default=min_runs,
                       help=f"least timed runs per model and batch size (default: {min_runs})")
        g.add_argument("--min-time", type=float, default=min_time, metavar="SECONDS",
                       help=f"least timed seconds per model and batch size (default: {min_time})")


def _wrap(text: str) -> str:
    return textwrap.fill(text, 96)


def _build_parser() -> _Parser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress lines on stderr")

    parser = _Parser(prog=_PROG, description=_wrap("fxprune: a pruning compiler for PyTorch. Prune a model, export it "
                     "to ONNX, check it in onnxruntime and measure the speedup."), epilog=_EPILOG_MAIN,
                     formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
    from .version import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,prune,bench}", parser_class=_Parser)

    demo = sub.add_parser("demo", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                          help="prune the built-in ResNet-18 and show the report and the benchmark",
                          description=_wrap("Run the whole pipeline on the built-in ResNet-18: compile (trace, "
                          "group, score, mask, remove channels, verify), export dense and pruned to ONNX, "
                          "check them in onnxruntime, and time both."), epilog=_EPILOG_DEMO)
    demo.add_argument("--sparsity", type=float, default=0.5, help="fraction of channels removed (default: 0.5)")
    demo.add_argument("--pruner", default="l1", choices=_DEMO_PRUNERS, help="criterion (default: l1)")
    demo.add_argument("--quick", action="store_true",
                      help="small and fast: width 16, 64x64 input, batch 1, few timed runs (a smoke test)")
    demo.add_argument("--width", type=int, default=None, help="first-stage channels (default: 64, --quick: 16)")
    demo.add_argument("--image-size", type=int, default=None, help="input height and width (default: 224)")
    demo.add_argument("--no-bench", action="store_true", help="skip the onnxruntime timing")
    demo.add_argument("--out", metavar="DIR", help="also write what `prune` writes into DIR")
    demo.add_argument("--force", action="store_true", help="replace a non-empty --out DIR")
    g = demo.add_argument_group("benchmark (onnxruntime, CPU)")
    g.add_argument("--batch-sizes", default=None, metavar="B1,B2", help="batch sizes (default: 1,8; --quick: 1)")
    g.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default: 2)")

    prune = sub.add_parser("prune", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                           help="prune your model from a Python factory and a YAML/JSON config",
                           description=_wrap("Prune the model that MODULE:FACTORY builds as CONFIG says; write the "
                           "pruned model, its ONNX file, the report and the benchmark into DIR."),
                           epilog=_EPILOG_PRUNE)
    prune.add_argument("model", metavar="MODULE:FACTORY", help="e.g. mymodels:build or ./net.py:make_net")
    prune.add_argument("--config", "-c", required=True, metavar="CONFIG", help="YAML or JSON pruning config")
    prune.add_argument("--input-shape", "-i", action="append", metavar="SHAPE",
                       help="example input shape, e.g. 1,3,224,224; repeat for several inputs; add :int64 "
                       "for integer inputs (token ids)")
    prune.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory (created)")
    prune.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    prune.add_argument("--no-bench", action="store_true", help="skip the onnxruntime timing")
    _add_bench_flags(prune)

    bench = sub.add_parser("bench", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                           help="time ONNX files in onnxruntime (the first is the baseline)",
                           description=_wrap("Time ONNX models in onnxruntime on CPU: warm-up, interleaved runs, "
                           "median and p90 per batch size, speedup against the first file."),
                           epilog=_EPILOG_BENCH)
    bench.add_argument("onnx", nargs="+", metavar="FILE.onnx", help="ONNX files; the first is the baseline")
    bench.add_argument("--labels", metavar="A,B", help="names for the files (default: file stems)")
    bench.add_argument("--ideal", type=float, help="ideal speedup (e.g. the MAC reduction) to compare against")
    bench.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    bench.add_argument("--chart", metavar="PATH.png", help="also draw a latency bar chart (PNG; needs matplotlib)")
    bench.add_argument("--input-shape", action="append", metavar="NAME=SIZES",
                       help="size of an input with symbolic axes, e.g. input_ids=1,128 (axis 0 is replaced "
                       "by each batch size)")
    _add_bench_flags(bench)
    return parser


_COMMANDS = {"demo": _cmd_demo, "prune": _cmd_prune, "bench": _cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `fxprune` command line.

    Args:
        argv: the arguments after the program name (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0 success, 2 a user mistake (one line on stderr), 1 an internal error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = _build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0)
        if args.command is None:
            parser.print_help(sys.stderr)
            raise CLIError("a command is required: demo, prune or bench")
        return _COMMANDS[args.command](args, _Progress(getattr(args, "quiet", False)))
    except FxPruneError as exc:
        if debug:
            traceback.print_exc()
        _err(f"{_PROG}: error: {_one_line(exc)}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err(f"{_PROG}: interrupted")
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _err(f"{_PROG}: internal error: {type(exc).__name__}: {_one_line(exc)}"
             + ("" if debug else " (rerun with --debug for the traceback)"))
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
