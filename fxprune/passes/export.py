"""Export a (pruned) model to ONNX and prove the file computes what the torch model computes.

`export_onnx` writes the file atomically (temporary directory next to the target, rename on
success), runs `onnx.checker`, then runs the file in onnxruntime on the example inputs and on a
second "probe" batch (fresh values, and twice the batch size when the batch axis is dynamic) and
compares every output with torch. Any failure raises `ExportError` and leaves no file behind.

What the exporter does to the graph, and therefore to `ExportResult.num_params`:

* BatchNorm directly after a Conv1d/2d/3d whose output has no other user is folded into
  that conv (new weight and a bias, created even if the conv had ``bias=False``); the BN's
  weight/bias/running stats disappear. BN anywhere else (after ConvTranspose, Linear, ReLU, or
  after a conv whose output is used twice) stays a ``BatchNormalization`` node with four
  initializers: weight, bias, running_mean, running_var (``num_batches_tracked`` is dropped).
* Initializers with byte-identical contents are stored once (e.g. a freshly initialised BN's
  weight and running_var, all ones). Trained weights are practically never identical.
* A weight tied to a transposed use (e.g. an LM head sharing the embedding) is stored twice.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from fxprune.errors import ExportError, InputError, node_context
from fxprune.passes.trace import LIB_DIRS, set_training

__all__ = ["ExportResult", "export_onnx", "onnx_param_count", "EXPORTERS"]

#: Accepted values of export_onnx's `exporter`.
EXPORTERS = ("auto", "legacy", "dynamo")

_BATCH_AXIS_NAME = "batch"

# ONNX element types that hold parameters. Integer initializers (shape constants, gather indices,
# which some exporters store as initializers) are not parameters and are not counted.
_FLOAT_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
    }
)

# TracerWarnings that mean a tensor-dependent Python value was frozen into the graph.
_FROZEN_VALUE_MARKERS = ("might cause the trace to be incorrect", "might not generalize")

# Warnings of the legacy exporter about itself; they say nothing about the model.
_EXPORTER_NOISE = (
    "legacy TorchScript-based ONNX export",
    "The feature will be removed",
)


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote and how closely onnxruntime matches torch.

    Attributes:
        path: The ONNX file.
        opset: The default-domain opset the file declares.
        num_params: Elements in the file's floating-point initializers (see the module docstring
            for what BN folding and deduplication do to this number).
        max_abs_err: Largest |onnxruntime - torch| over all outputs and both checked batches.
        max_rel_err: Largest |onnxruntime - torch| / max(|torch|, atol), same scope.
        dynamic_batch: Whether axis 0 of the inputs and outputs is symbolic ("batch").
        input_names: ONNX graph input names, in the order of the example inputs.
        output_names: ONNX graph output names, in the order of the flattened torch outputs.
        tracer_warnings: TracerWarnings raised while tracing (a frozen Python value, a loop over a
            tensor); empty for a clean export.
    """

    path: str
    opset: int
    num_params: int
    max_abs_err: float
    max_rel_err: float
    dynamic_batch: bool
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    tracer_warnings: tuple[str, ...] = ()


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[Tensor, ...],
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    exporter: str = "auto",
) -> ExportResult:
    """Export `model` to ONNX at `path` and check it against torch in onnxruntime.

    The model is put in eval mode for the export and each submodule's mode is restored afterwards;
    its weights and buffers are not modified. An existing file at `path` is replaced only when the
    new file passed every check.

    Args:
        model: An `nn.Module` or fx `GraphModule` taking the example inputs positionally.
        example_inputs: Tensors to trace with; axis 0 of each (non-scalar) one is the batch axis.
        path: Where to write the `.onnx` file; its directory must exist and be writable.
        dynamic_batch: Make axis 0 of every input and output symbolic and prove it by running
            onnxruntime at twice the example batch size.
        opset: ONNX opset to target; None uses the exporter's default.
        rtol: Relative tolerance of the parity check (as in `numpy.allclose`).
        atol: Absolute tolerance of the parity check.
        exporter: "legacy" (TorchScript, `dynamo=False`), "dynamo" (`dynamo=True`, needs onnxscript), or "auto":
            dynamo for graphs from fxprune's torch.export front end, legacy otherwise.

    Returns:
        An `ExportResult` describing the file and the parity errors.

    Raises:
        InputError: The example inputs are not a tuple of tensors, or the model fails on them.
        ExportError: The path is unusable, the exporter failed (the message names the exporter, the node it
            failed at, and whether the other exporter works), the checker rejected the file, onnxruntime
            could not run it, or an output differs beyond tolerance.
    """
    if exporter not in EXPORTERS:
        raise InputError(f"exporter={exporter!r} is not one of {', '.join(map(repr, EXPORTERS))}; pass one of them")
    inputs = _validate_inputs(model, example_inputs)
    target = Path(os.fspath(path))
    model_name = type(model).__name__
    tmp_dir = _make_temp_dir(target)  # Raises ExportError before anything is exported.
    tmp_file = tmp_dir / target.name
    try:
        with _eval_mode(model), torch.no_grad():
            reference = _torch_outputs(model, inputs, model_name)
            input_names = _input_names(model, len(inputs))
            output_names = (
                ["output"] if len(reference) == 1 else [f"output_{i}" for i in range(len(reference))]
            )
            tracer_warnings = _run_exporter(
                model, inputs, tmp_file, input_names, output_names, reference, dynamic_batch, opset, exporter
            )
            _check_model(tmp_file, model_name)
            session = _ort_session(tmp_file, model_name)
            check = functools.partial(
                _compare,
                session,
                input_names=input_names,
                output_names=output_names,
                rtol=rtol,
                atol=atol,
                model_name=model_name,
                tracer_warnings=tracer_warnings,
            )
            errs = [check(inputs, reference, probe=None)]
            probe_inputs = _probe_inputs(inputs, double_batch=dynamic_batch)
            probe_reference = _torch_outputs(model, probe_inputs, model_name, probe=True)
            errs.append(check(probe_inputs, probe_reference, probe="dynamic" if dynamic_batch else "fresh"))
            del check, session  # Release the file before it is renamed (matters on Windows).
        opset_used = _default_opset(tmp_file)
        _publish(tmp_dir, tmp_file, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    risky = [w for w in tracer_warnings if any(marker in w for marker in _FROZEN_VALUE_MARKERS)]
    if risky:
        # Parity held on the checked inputs, so this is not an error, but e.g. `if x.sum() > 0`
        # froze one branch and other inputs may take the other one.
        warnings.warn(
            f"the ONNX export of {model_name} at {str(target)!r} matched torch on the checked inputs, "
            f"but the tracer froze a value computed from a tensor ({risky[0]!r}); other inputs may disagree. "
            "Rewrite forward() with torch ops to be sure.",
            stacklevel=2,
        )
    return ExportResult(
        path=str(target),
        opset=opset_used,
        num_params=onnx_param_count(target),
        max_abs_err=max(e[0] for e in errs),
        max_rel_err=max(e[1] for e in errs),
        dynamic_batch=dynamic_batch,
        input_names=tuple(input_names),
        output_names=tuple(output_names),
        tracer_warnings=tuple(tracer_warnings),
    )


def onnx_param_count(path: str | os.PathLike) -> int:
    """Count the elements of the floating-point initializers of an ONNX file.

    Integer initializers (shape constants, indices) are not parameters and are skipped. External
    data is not loaded: only the tensor dimensions are read.

    Args:
        path: An `.onnx` file.

    Returns:
        The number of parameter elements stored in the file.

    Raises:
        InputError: The file does not exist or is not an ONNX model.
    """
    file = Path(os.fspath(path))
    if not file.is_file():
        raise InputError(f"ONNX file {str(file)!r} does not exist; pass the path export_onnx returned.")
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise InputError(
            f"{str(file)!r} is not a readable ONNX model ({_first_line(exc)}); re-export it with export_onnx."
        ) from exc
    return sum(
        int(np.prod(init.dims, dtype=np.int64))
        for init in proto.graph.initializer
        if init.data_type in _FLOAT_TYPES
    )


def _validate_inputs(model: nn.Module, example_inputs: object) -> tuple[Tensor, ...]:
    if not isinstance(model, nn.Module):
        raise InputError(
            f"export_onnx needs an nn.Module, got {type(model).__name__}; pass the model object."
        )
    if isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise InputError(
            f"example_inputs for {type(model).__name__} must be a non-empty tuple of tensors, "
            f"got {type(example_inputs).__name__}; pass e.g. (torch.randn(1, 3, 224, 224),)."
        )
    for i, x in enumerate(example_inputs):
        if not isinstance(x, Tensor):
            raise InputError(
                f"example_inputs[{i}] for {type(model).__name__} is a {type(x).__name__}, not a tensor; "
                "export_onnx only traces tensor inputs, so bind other arguments with functools.partial "
                "or a wrapper module."
            )
    return tuple(example_inputs)


def _make_temp_dir(target: Path) -> Path:
    parent = target.parent
    if target.is_dir():
        raise ExportError(
            f"ONNX path {str(target)!r} is a directory; pass a file path "
            f"such as {str(target / 'model.onnx')!r}."
        )
    if not parent.exists():
        raise ExportError(
            f"directory {str(parent)!r} of ONNX path {str(target)!r} does not exist; create it first "
            "(os.makedirs / mkdir -p) or choose another path."
        )
    if not parent.is_dir():
        raise ExportError(
            f"{str(parent)!r}, the parent of ONNX path {str(target)!r}, is not a directory; "
            "choose another path."
        )
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise ExportError(
            f"cannot write in directory {str(parent)!r} for ONNX path {str(target)!r} ({exc.strerror}); "
            "fix its permissions or choose a writable path."
        ) from exc


def _publish(tmp_dir: Path, tmp_file: Path, target: Path) -> None:
    # Large models come with external-data files next to the .onnx, referenced by relative name:
    # move them first, then atomically replace the target with the checked file.
    for extra in tmp_dir.iterdir():
        if extra != tmp_file:
            os.replace(extra, target.parent / extra.name)
    os.replace(tmp_file, target)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Remember every submodule's flag: a model may mix train and eval submodules on purpose.
    before = set_training(model, False)
    # Graphs from torch.export guard .train()/.eval() with instance methods that raise (they are eval-only);
    # the ONNX exporter calls .train(False), which is what they are: lift the guard while exporting.
    guards = {k: model.__dict__.pop(k) for k in ("train", "eval") if k in model.__dict__}
    try:
        yield
    finally:
        model.__dict__.update(guards)
        set_training(model, before)


def _torch_outputs(
    model: nn.Module, inputs: tuple[Tensor, ...], model_name: str, *, probe: bool = False
) -> list[Tensor]:
    try:
        out = model(*inputs)
    except Exception as exc:
        if probe:
            raise ExportError(
                f"{model_name} itself fails in torch on the probe inputs (fresh values, batch "
                f"{inputs[0].shape[0] if inputs[0].dim() else 1}): {_first_line(exc)}; if it only supports "
                "the example batch size, pass dynamic_batch=False."
            ) from exc
        raise InputError(
            f"{model_name} fails on the example inputs before export ({_first_line(exc)}); "
            "pass inputs the model accepts."
        ) from exc
    leaves = [x for x in pytree.tree_leaves(out) if isinstance(x, Tensor)]
    if not leaves:
        raise ExportError(f"{model_name} returned no tensors; ONNX export needs at least one tensor output.")
    return [x.detach() for x in leaves]


def _input_names(model: nn.Module, count: int) -> list[str]:
    # Use forward()'s parameter names (an fx GraphModule's are its placeholder names), so the ONNX
    # inputs read "x" or "input_ids" rather than "input.1".
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= count and len(set(positional[:count])) == count:
        return positional[:count]
    return [f"input_{i}" for i in range(count)]


class _ExporterFailed(Exception):
    """torch.onnx.export raised: `exporter` names which one; the cause is the exporter's exception."""

    def __init__(self, exporter: str) -> None:
        super().__init__(exporter)
        self.exporter = exporter


_CALLS = {"legacy": "torch.onnx.export(..., dynamo=False)", "dynamo": "torch.onnx.export(..., dynamo=True)"}


def _run_exporter(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    file: Path,
    input_names: list[str],
    output_names: list[str],
    reference: list[Tensor],
    dynamic_batch: bool,
    opset: int | None,
    exporter: str = "auto",
) -> list[str]:
    """Run torch.onnx.export with the chosen exporter; return the TracerWarnings it raised.

    Where it fails, the other exporter is tried on a scratch file so the error can say whether it works."""
    if exporter == "auto":
        exporter = "dynamo" if getattr(model, "meta", {}).get("frontend") == "export" else "legacy"
    args = (model, inputs, file, input_names, output_names, reference, dynamic_batch, opset)
    try:
        return _EXPORTER_RUNS[exporter](*args)
    except _ExporterFailed as failed:
        exc = failed.__cause__ or failed
        other = "dynamo" if exporter == "legacy" else "legacy"
        scratch = file.with_name(f"other-exporter-{file.name}")
        try:
            _EXPORTER_RUNS[other](model, inputs, scratch, *args[3:])
            works = (f"The {other} exporter exports it: pass exporter={other!r} to export_onnx, or call "
                     f"{_CALLS[other]}.")
        except Exception:
            works = ("Neither exporter works: replace or wrap the unsupported operation in forward() (or register "
                     "a custom ONNX symbolic) and retry.")
        finally:
            scratch.unlink(missing_ok=True)
        raise ExportError(
            f"{_CALLS[exporter]} ({exporter} exporter) failed for model {type(model).__name__}"
            f"{_failing_node(model, exc)}: {_first_line(exc)}. {works}") from exc


def _failing_node(model: nn.Module, exc: BaseException) -> str:
    """' at <node>' for the node of an fx GraphModule whose generated line raised (or, for another module,
    ' at file:line' of the innermost frame outside torch and fxprune), else ''."""
    lines: list[str] = []
    frames: list[traceback.FrameSummary] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # the exporters wrap the op's own error
        seen.add(id(exc))
        tb = traceback.extract_tb(exc.__traceback__)
        lines += [f.line or "" for f in tb if f.filename.startswith("<eval_with_key>")]
        frames = [f for f in tb if not f.filename.startswith((*LIB_DIRS, "<"))] or frames
        exc = exc.__cause__ or exc.__context__
    if isinstance(model, torch.fx.GraphModule):
        nodes = {n.name: n for n in model.graph.nodes}
        for line in reversed(lines):
            name = line.split(" = ", 1)[0].strip()
            if " = " in line and name in nodes:
                return f" at {node_context(nodes[name])}"
        return ""
    return f" at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else ""


def _run_legacy_exporter(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    file: Path,
    input_names: list[str],
    output_names: list[str],
    reference: list[Tensor],
    dynamic_batch: bool,
    opset: int | None,
) -> list[str]:
    """The TorchScript exporter (`dynamo=False`); returns the TracerWarnings it raised."""
    # Exporter choice: the TorchScript ("legacy", dynamo=False) exporter. Checked on torch 2.13
    # against eager modules and fx GraphModules with call_module nodes, flatten, view(x.size(0), -1),
    # cat, split, chunk, interpolate, grouped/depthwise convs and ConvTranspose, at example batch 1
    # and 4: both exporters give correct files with a working symbolic batch axis, but
    #  * the dynamo exporter (the default since 2.9) needs onnxscript, which is not a dependency of
    #    fxprune, and it is ~50x slower (3.5 s vs 0.07 s for a small CNN) and prints progress;
    #  * the legacy exporter jit-traces the module as it runs, so an fx GraphModule exports exactly
    #    as its eager twin, x.size(0) becomes Shape/Gather, and dynamic_axes gives the batch axis
    #    without torch.export's guards and 0/1 specialisation.
    # It is deprecated (a DeprecationWarning, silenced here) but present in 2.13. Its weak spot,
    # freezing Python values computed from a tensor (x.numpy(), int(t), if t.sum() > 0) into
    # constants, is caught below by the parity check on fresh inputs.
    # input/output names are always passed: without them the legacy exporter mistakes an fx
    # GraphModule's `.graph` for a TorchScript graph when validating dynamic_axes and crashes.
    kwargs: dict[str, object] = {
        "input_names": input_names,
        "output_names": output_names,
        "opset_version": opset,
        "do_constant_folding": True,
        "export_params": True,
    }
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    if dynamic_batch:
        axes: dict[str, dict[int, str]] = {}
        for name, x in zip(input_names, inputs, strict=True):
            if x.dim() > 0:
                axes[name] = {0: _BATCH_AXIS_NAME}
        for name, y in zip(output_names, reference, strict=True):
            if y.dim() > 0:
                axes[name] = {0: _BATCH_AXIS_NAME}
        kwargs["dynamic_axes"] = axes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(model, inputs, str(file), **kwargs)
        except Exception as exc:
            raise _ExporterFailed("legacy") from exc
    tracer: list[str] = []
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, torch.jit.TracerWarning):
            tracer.append(_first_line(text))
        elif not any(noise in text for noise in _EXPORTER_NOISE):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not file.is_file():
        raise ExportError(
            f"torch.onnx.export wrote no file for model {type(model).__name__}; report this as a bug."
        )
    return tracer


def _run_dynamo_exporter(model: nn.Module, inputs: tuple[Tensor, ...], file: Path, input_names: list[str],
                         output_names: list[str], reference: list[Tensor], dynamic_batch: bool,
                         opset: int | None) -> list[str]:
    """The torch.export-based exporter (`dynamo=True`). Graphs from fxprune's torch.export front end (transformers)
    hold SymInt size nodes, which the legacy exporter cannot trace: they are exported again with torch.export."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError as exc:
        raise ExportError(
            f"exporting {type(model).__name__} with the dynamo exporter needs onnxscript: "
            "pip install onnxscript (or fxprune[hf]), or pass exporter='legacy'") from exc
    dims = tuple({0: torch.export.Dim.AUTO} if dynamic_batch and x.dim() > 0 else None for x in inputs)
    try:
        with warnings.catch_warnings(), _quiet_stdout():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, inputs, strict=False, dynamic_shapes=dims)
            onnx_program = torch.onnx.export(program, input_names=input_names, output_names=output_names,
                                             opset_version=opset, dynamo=True, verbose=False)
            onnx_program.save(str(file))
    except Exception as exc:
        raise _ExporterFailed("dynamo") from exc
    return []


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """The dynamo exporter prints its progress on stdout; a library must not."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


_EXPORTER_RUNS = {"legacy": _run_legacy_exporter, "dynamo": _run_dynamo_exporter}


def _check_model(file: Path, model_name: str) -> None:
    try:
        onnx.checker.check_model(str(file))
    except Exception as exc:
        raise ExportError(
            f"onnx.checker rejects the export of {model_name}: {_first_line(exc)}; try another opset= "
            "or simplify the offending operation."
        ) from exc


def _ort_session(file: Path, model_name: str):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # Failures are raised as ExportError; keep ORT's own log quiet.
    try:
        return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(
            f"onnxruntime cannot load the export of {model_name}: {_first_line(exc)}; try another opset= "
            "or replace the operation it names."
        ) from exc


def _probe_inputs(inputs: tuple[Tensor, ...], *, double_batch: bool) -> tuple[Tensor, ...]:
    """Inputs the trace has not seen: fresh float values, and twice the batch when asked.

    Fresh values expose Python values the tracer froze into constants; the doubled batch proves the
    symbolic batch axis. Integer and bool inputs (token ids, masks) are repeated, not invented, so
    they stay valid for the model.
    """
    gen = torch.Generator().manual_seed(0)
    probe = []
    for x in inputs:
        if x.is_floating_point():
            std = float(x.float().std()) if x.numel() > 1 else 0.0
            scale = std if np.isfinite(std) and std > 0 else 1.0
            shift = float(x.float().mean()) if x.numel() else 0.0
            fresh = (torch.randn(x.shape, generator=gen) * scale + shift).to(dtype=x.dtype, device=x.device)
        else:
            fresh = x
        if double_batch and x.dim() > 0:
            fresh = torch.cat([x, fresh], dim=0)
        probe.append(fresh)
    return tuple(probe)


def _compare(
    session,
    inputs: tuple[Tensor, ...],
    reference: list[Tensor],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    rtol: float,
    atol: float,
    model_name: str,
    tracer_warnings: list[str],
    probe: str | None,
) -> tuple[float, float]:
    """Run onnxruntime on `inputs`; return (max abs err, max rel err) or raise ExportError."""
    import onnxruntime as ort

    batch = inputs[0].shape[0] if inputs[0].dim() > 0 else 1
    if probe is None:
        which = f"example inputs (batch {batch})"
    elif probe == "dynamic":
        which = f"fresh inputs at twice the example batch (batch {batch})"
    else:
        which = f"fresh inputs (batch {batch})"
    feeds = {name: x.detach().cpu().numpy() for name, x in zip(input_names, inputs, strict=True)}
    try:
        run_options = ort.RunOptions()
        run_options.log_severity_level = 4
        outputs = session.run(None, feeds, run_options)
    except Exception as exc:
        raise ExportError(
            f"onnxruntime fails on the export of {model_name} with {which}: {_first_line(exc)}. "
            + _hint(probe, tracer_warnings, batch)
        ) from exc
    if len(outputs) != len(reference):
        raise ExportError(
            f"the export of {model_name} has {len(outputs)} outputs but torch returns {len(reference)} "
            "tensors; return a flat tuple of tensors from forward()."
        )
    worst_abs = worst_rel = 0.0
    for i, (got, want) in enumerate(zip(outputs, reference, strict=True)):
        want_np = want.cpu().to(torch.float64).numpy() if want.is_floating_point() else want.cpu().numpy()
        if tuple(got.shape) != tuple(want_np.shape):
            raise ExportError(
                f"ONNX output {i} ({output_names[i]!r}) of {model_name} has shape {tuple(got.shape)} "
                f"but torch gives {tuple(want_np.shape)} on the {which}. "
                + _hint(probe, tracer_warnings, batch)
            )
        abs_err, rel_err, ok = _errors(np.asarray(got), want_np, rtol, atol)
        if not ok:
            raise ExportError(
                f"ONNX output {i} ({output_names[i]!r}) of {model_name} differs from torch on the {which}: "
                f"max abs err {abs_err:.3g}, max rel err {rel_err:.3g} (rtol={rtol:g}, atol={atol:g}). "
                + _hint(probe, tracer_warnings, batch)
            )
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    return worst_abs, worst_rel


def _errors(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> tuple[float, float, bool]:
    if got.size == 0:
        return 0.0, 0.0, True
    a = got.astype(np.float64)
    b = want.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
        diff = np.where(a == b, 0.0, diff)  # inf == inf
        diff = np.where(np.isnan(a) & np.isnan(b), 0.0, diff)  # NaN where torch has NaN too
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
        # The denominator is floored at atol so exact zeros (ReLU) do not make the ratio explode.
        rel = diff / np.maximum(np.abs(np.nan_to_num(b)), max(atol, np.finfo(np.float64).tiny))
        ok = bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(b))))
    return float(diff.max()), float(rel.max()), ok


def _hint(probe: str | None, tracer_warnings: list[str], batch: int) -> str:
    if tracer_warnings:
        return (
            f"The tracer warned: {tracer_warnings[0]!r} - the exported graph froze a Python value computed "
            "from the input into a constant; rewrite forward() with torch ops (no .numpy(), .item(), int(t), "
            "if on tensors) so the computation is traced."
        )
    if probe == "dynamic":
        return (
            f"The batch axis is not really dynamic: an operation baked the example batch into the graph "
            f"(e.g. int(x.size(0)), a literal batch in reshape, squeeze()); fix forward() or pass "
            f"dynamic_batch=False. (Checked at batch {batch}.)"
        )
    hint = "If the difference is float noise, loosen rtol/atol; "
    return hint + "otherwise an operation exports with other semantics."


def _default_opset(file: Path) -> int:
    proto = onnx.load(str(file), load_external_data=False)
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return text.splitlines()[0].strip()
