"""Trace pass: nn.Module -> fx GraphModule with the shape of every tensor in `node.meta`.

Two front ends produce the same kind of graph for the same analysis:
- `"fx"`: `torch.fx.symbolic_trace` (keeps `call_module` nodes);
- `"export"`: `torch.export.export(strict=False)` with the batch dim (and the sequence dim of rank-2
  and rank-3 inputs) dynamic where the model allows (`Dim.AUTO`), then `ExportedProgram.module()`,
  which lifts the parameter placeholders back into `get_attr` nodes named by their state-dict
  qualnames (so they become `@qualname` slots and the speedup pass slices them on their owning
  module). Its ops are ATen overloads (`aten.linear.default`, ...), which the rule table knows. Its
  input guards (`_guards_fn`) are dropped: the pruned model has other sizes than the ones they check.
  The graph is traced in eval mode and stays so (dropout and BatchNorm behaviour are baked in;
  `train()` is not supported on it). An example batch of size 1 makes export specialise the batch
  dim: give at least 2 samples for a model that must run at any batch size.
`"auto"` tries fx, then export. `gm.meta["frontend"]` says which one was used.

Pre:  any nn.Module and example inputs it accepts.
Post: a GraphModule that is a deep copy (the user's model is never touched), in eval mode, whose
      tensor-producing nodes carry `meta["tensor_meta"]` from one run on the example inputs, and
      whose `meta["train_flags"]` records the training flag of every submodule of the original.
"""

from __future__ import annotations

import copy
import os
import traceback
import warnings
from typing import Any

import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import InputError, TraceError, node_context

__all__ = ["trace", "check_inputs", "run_with_node_context", "FRONTENDS"]

#: Accepted values of config["frontend"].
FRONTENDS = ("auto", "fx", "export")

_LIB_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))


def check_inputs(model: torch.nn.Module, example_inputs: Any) -> tuple[Any, ...]:
    """Normalise example inputs to a tuple of tensors; reject what cannot be an input."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise InputError(
            f"example_inputs must be a tensor or a non-empty tuple of tensors, got "
            f"{type(example_inputs).__name__}; pass e.g. example_inputs=(torch.randn(1, 3, 224, 224),)"
        )
    devices = {p.device for p in model.parameters()}
    for i, x in enumerate(example_inputs):
        if isinstance(x, torch.Tensor) and devices and x.device not in devices:
            raise InputError(
                f"example_inputs[{i}] is on {x.device} but the model's parameters are on "
                f"{', '.join(map(str, devices))}; move one of them: x.to(model device)"
            )
    return tuple(example_inputs)


def _user_frame(exc: BaseException) -> str:
    """'file:line: code' of the innermost frame outside torch and fxprune, or ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_LIB_DIRS)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}:{f.lineno}: {f.line}"


class _ContextInterpreter(ShapeProp):
    """ShapeProp that remembers which node was running when an exception escaped."""

    current: torch.fx.Node | None = None

    def run_node(self, n: torch.fx.Node) -> Any:
        self.current = n
        return super().run_node(n)


def run_with_node_context(gm: torch.fx.GraphModule, inputs: tuple[Any, ...], what: str) -> Any:
    """Run gm recording shapes into meta; an exception becomes InputError naming the node."""
    interp = _ContextInterpreter(gm)
    try:
        with torch.no_grad():
            return interp.propagate(*inputs)
    except Exception as e:
        node = interp.current
        where = node_context(node) if node is not None else "the graph's inputs"
        layer = f" (layer '{node.target}')" if node is not None and node.op == "call_module" else ""
        raise InputError(
            f"{what} failed at {where}{layer}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
            "Check that example_inputs have the shape, dtype and device the model's forward expects."
        ) from e


def _fx(model: torch.nn.Module, inputs: tuple[Any, ...]) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as e:
        where = _user_frame(e)
        raise TraceError(
            f"torch.fx.symbolic_trace cannot trace {type(model).__name__}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
            + (f"\n    at {where}" if where else "")
            + "\nFix: use config['frontend'] = 'export' (or 'auto'), remove data-dependent Python control flow "
            "from forward (use torch.where), or wrap the offending function with torch.fx.wrap."
        ) from e


def _dynamic_dims(x: Any) -> dict[int, Any] | None:
    """Batch dim of every tensor input, and the sequence dim of token ids / masks (rank 2) and of (B, S, D)
    inputs: the sizes a pruned model must keep accepting. Image sizes stay static (exporting them dynamic
    costs minutes on window-attention models)."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return None
    return {d: torch.export.Dim.AUTO for d in range(min(x.dim(), 2 if x.dim() in (2, 3) else 1))}


def _export(model: torch.nn.Module, inputs: tuple[Any, ...]) -> torch.fx.GraphModule:
    dims = tuple(_dynamic_dims(x) for x in inputs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(model, inputs, strict=False, dynamic_shapes=dims)
        gm = ep.module()
    except Exception as e:
        where = _user_frame(e)
        raise TraceError(
            f"torch.export cannot trace {type(model).__name__}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}" + (f"\n    at {where}" if where else "")
            + "\nFix: make forward return tensors (for Hugging Face decoders pass use_cache=False in the config) "
            "and avoid data-dependent control flow."
        ) from e
    for node in list(gm.graph.nodes):  # shape guards of the dense model: the pruned one has other sizes
        if node.op == "call_module" and type(gm.get_submodule(node.target)).__name__ == "GuardsFn":
            gm.graph.erase_node(node)
            delattr(gm, node.target)
    gm.graph.lint()
    gm.recompile()
    return gm


def trace(model: torch.nn.Module, example_inputs: Any, frontend: str = "auto") -> torch.fx.GraphModule:
    """Trace a deep copy of `model` and annotate shapes from a run on `example_inputs`.

    Args:
        model: the user's model; it is not modified.
        example_inputs: a tensor or tuple of tensors the model's forward accepts.
        frontend: "fx", "export", or "auto" (fx, then export where fx fails).

    Returns:
        An eval-mode GraphModule with shape metadata on its nodes; `gm.meta["frontend"]` names the front end.

    Raises:
        TraceError: the model cannot be traced by the chosen front end(s) (names the source line).
        InputError: the example inputs do not fit the model (names the failing node and layer).
    """
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"expected an nn.Module, got {type(model).__name__}")
    inputs = check_inputs(model, example_inputs)
    train_flags = {name: m.training for name, m in model.named_modules()}
    model = copy.deepcopy(model).eval()
    used = frontend
    if isinstance(model, torch.fx.GraphModule):
        gm, used = model, model.meta.get("frontend", "fx")
    elif frontend == "export":
        gm = _export(model, inputs)
    elif frontend == "fx":
        gm = _fx(model, inputs)
    else:
        try:
            gm, used = _fx(model, inputs), "fx"
        except TraceError as fx_error:
            try:
                gm, used = _export(model, inputs), "export"
            except TraceError as e:
                raise TraceError(f"both front ends failed.\nfx: {fx_error}\nexport: {e}") from e
    n_placeholders = sum(1 for n in gm.graph.nodes if n.op == "placeholder")
    if len(inputs) > n_placeholders:
        raise InputError(
            f"{type(model).__name__}.forward takes {n_placeholders} input(s) but {len(inputs)} example "
            "inputs were given; pass one tensor per forward argument"
        )
    run_with_node_context(gm, inputs, "running the model on example_inputs")
    gm.meta["train_flags"] = train_flags
    gm.meta["frontend"] = used
    return gm
