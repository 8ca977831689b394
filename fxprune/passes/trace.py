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
Post: a GraphModule that is a deep copy (the user's model is never touched; its CPU tensors are copy-on-write
      clones, `_copy_model`), in eval mode, whose
      tensor-producing nodes carry `meta["tensor_meta"]` from one run on the example inputs that moves to
      meta tensors (no arithmetic) as soon as its real kernels cost more than meta dispatch (the real run
      throughout where the graph cannot run on meta), and
      whose `meta["train_flags"]` records the training flag of every submodule of the original.
      A forward whose Python side effects the graph cannot replay (assigning module attributes,
      changing parameters or buffers in place) is rejected with a TraceError naming the attribute.
"""

from __future__ import annotations

import copy
import inspect
import operator
import os
import time
import traceback
import warnings
from collections import Counter, OrderedDict
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import TensorMetadata, _extract_tensor_metadata

from ..errors import InputError, TraceError, node_context

__all__ = ["trace", "init_without_code", "check_inputs", "run_with_node_context", "set_training", "FRONTENDS",
           "LIB_DIRS"]

#: Accepted values of config["frontend"].
FRONTENDS = ("auto", "fx", "export")

LIB_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))


def set_training(module: torch.nn.Module, flags: bool | dict[str, bool]) -> dict[str, bool]:
    """Set `.training` on every submodule (one flag, or per qualname) and return the previous flags.

    Sets the attribute directly: graphs from torch.export refuse `.eval()`/`.train()` (their behaviour
    was fixed when they were traced, in eval mode), and the flags must still say what the user asked.
    """
    before: dict[str, bool] = {}
    for name, m in module.named_modules():
        before[name] = m.training
        if isinstance(flags, bool):
            m.training = flags
        elif name in flags:
            m.training = flags[name]
    return before


def check_inputs(model: torch.nn.Module, example_inputs: Any) -> tuple[Any, ...]:
    """Normalise example inputs to a tuple; reject what cannot be traced or verified on.

    Raises:
        TraceError: `model` is not an nn.Module.
        InputError: no inputs, inputs on another device than the parameters, parameters on the meta
            device, or floating inputs holding NaN/inf (the masked == pruned check cannot compare them).
    """
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"expected an nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise InputError(
            f"example_inputs must be a tensor or a non-empty tuple of tensors, got "
            f"{type(example_inputs).__name__}; pass e.g. example_inputs=(torch.randn(1, 3, 224, 224),)"
        )
    named = list(model.named_parameters()) + list(model.named_buffers())
    meta = next((n for n, t in named if t.is_meta), None)
    if meta is not None:
        raise InputError(
            f"parameter or buffer '{meta}' is on the meta device (not materialised): fxprune scores real "
            "weights; load them first, e.g. model.to_empty(device='cpu') then load_state_dict(...)"
        )
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            continue
        if named and x.device != named[0][1].device and x.device not in (devices := {t.device for _, t in named}):
            raise InputError(
                f"example_inputs[{i}] is on {x.device} but the model's parameters are on "
                f"{', '.join(map(str, devices))}; move one of them: x.to(model device)"
            )
        if x.is_meta or x.is_sparse or x.layout != torch.strided:
            raise InputError(f"example_inputs[{i}] is a {x.layout} tensor on {x.device}: pass a dense tensor "
                             "with real values")
        if x.is_floating_point() and x.numel() and not torch.isfinite(x).all():
            raise InputError(
                f"example_inputs[{i}] contains NaN or inf: the masked == pruned check cannot compare "
                "non-finite outputs; pass finite inputs, e.g. torch.randn(...)"
            )
    return tuple(example_inputs)


def _user_frame(exc: BaseException) -> str:
    """'file:line: code' of the innermost frame outside torch and fxprune, or ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(LIB_DIRS)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}:{f.lineno}: {f.line}"


_FORMATS = (torch.contiguous_format, torch.channels_last, torch.channels_last_3d)


def _tensor_metadata(t: torch.Tensor) -> TensorMetadata:
    """torch's `_extract_tensor_metadata` for a dense tensor, without its symbolic-shape checks (their first
    use imports sympy: seconds)."""
    if t.is_quantized or t.layout != torch.strided:
        return _extract_tensor_metadata(t)
    memory_format = next((f for f in _FORMATS if t.is_contiguous(memory_format=f)), None)
    return TensorMetadata(t.shape, t.dtype, t.requires_grad, t.stride(), memory_format, False, {})


class _ContextInterpreter(torch.fx.Interpreter):
    """Runs the graph, recording `meta["tensor_meta"]` per node and which node was running when an
    exception escaped (torch's ShapeProp prints tracebacks and hides the original message)."""

    current: torch.fx.Node | None = None

    def run_node(self, n: torch.fx.Node) -> Any:
        self.current = n
        result = super().run_node(n)
        found = False

        def extract(obj: Any) -> Any:
            nonlocal found
            if isinstance(obj, torch.Tensor):
                found = True
                return _tensor_metadata(obj)
            return obj

        meta = map_aggregate(result, extract)
        if found:
            n.meta["tensor_meta"] = meta
        n.meta["type"] = type(result)
        return result


#: modules whose output is a tensor like their one input (same shape, dtype, device) whatever their weights:
#: the meta run skips their meta kernels (BatchNorm's is a slow Python decomposition)
_SAME_AS_INPUT = {cls.forward for cls in (
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.ReLU, torch.nn.ReLU6,
    torch.nn.Identity, torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d, torch.nn.SiLU,
    torch.nn.GELU, torch.nn.Hardswish, torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.LeakyReLU, torch.nn.Hardsigmoid)}


#: functions whose result is shaped like their first argument (unary element-wise, in eval mode), and binary
#: element-wise ones whose result is the broadcast of their two operands: answered without their meta kernels
#: (several are Python decompositions costing a millisecond or more per call on meta tensors)
_UNARY = {torch.relu, F.relu, F.relu6, F.gelu, F.silu, torch.sigmoid, torch.tanh, F.hardswish, F.leaky_relu,
          torch.sigmoid, F.sigmoid, F.tanh, F.hardsigmoid}
_BINARY = {operator.add, operator.mul, operator.sub, operator.truediv, torch.add, torch.mul, torch.sub}


def _like(x: torch.Tensor) -> torch.Tensor:
    """A new meta tensor shaped like x (`empty_like` on meta is a Python reference: ten times slower)."""
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")


#: what a node costs on meta tensors (seconds, Python dispatch and meta kernels): real nodes cheaper than this
#: (small tensors) stay real, a run whose real nodes cost more moves to the meta device
_META_NODE_S = 4e-4

#: a node reading a tensor of this many elements costs more for real than on meta whatever it does (a 224x224
#: image: its first conv and pool cost ~10 ms on one thread): the run moves to meta before it, not after it
_META_NUMEL = 1 << 17


class _MetaInterpreter(_ContextInterpreter):
    """The shape run. It starts on the real tensors and moves to the meta device (`switch`) as soon as the
    real nodes so far cost more than meta ones would (`_META_NODE_S` each, plus `slack`): a model of small
    tensors runs for real (its kernels are cheaper than meta dispatch), a heavy one runs on meta after its
    first expensive node, or from its first node that reads a large tensor (`_META_NUMEL`). On meta,
    `_SAME_AS_INPUT` modules and `_UNARY`/`_BINARY` functions are answered without a kernel. Every node
    output that shares storage with one of the graph's tensors (`storages`: the tensor itself, a view, its
    `.data`) is kept with its version counter: an in-place write through it bumps the counter."""

    def __init__(self, gm: torch.fx.GraphModule, storages: dict[int, str], switch: Any, slack: float) -> None:
        super().__init__(gm)
        self.storages, self.switch, self.slack = storages, switch, slack
        self.aliases: list[tuple[str, torch.Tensor, int]] = []
        self.on_meta, self.real_s, self.real_nodes = False, 0.0, 0

    def _large_input(self, n: torch.fx.Node) -> bool:
        return n.op != "placeholder" and any(
            isinstance(v, torch.Tensor) and v.numel() >= _META_NUMEL
            for a in n.all_input_nodes if a in self.env for v in (self.env[a],))

    def run_node(self, n: torch.fx.Node) -> Any:
        if not self.on_meta and (self.real_s > self.real_nodes * _META_NODE_S + self.slack or self._large_input(n)):
            self.switch()
            for node, value in self.env.items():
                self.env[node] = map_aggregate(value, lambda v: v.to("meta") if isinstance(v, torch.Tensor) else v)
            self.on_meta = True
        start = time.perf_counter()
        result = super().run_node(n)
        if not self.on_meta:
            self.real_s += time.perf_counter() - start
            self.real_nodes += 1
        for t in (result if isinstance(result, (tuple, list)) else (result,)):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                name = self.storages.get(t.untyped_storage()._cdata)
                if name is not None:
                    self.aliases.append((name, t, t._version))
        return result

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        x = args[0] if args else None
        if self.on_meta and isinstance(x, torch.Tensor) and x.is_floating_point():
            if target in _UNARY and len(args) == 1 and set(kwargs) <= {"inplace", "approximate"}:
                return _like(x)
            if target in _BINARY and len(args) == 2 and not kwargs:
                other = args[1]
                if isinstance(other, torch.Tensor) or (isinstance(other, (int, float)) and not isinstance(other, bool)):
                    shape = torch.broadcast_shapes(x.shape, other.shape) if isinstance(other, torch.Tensor) \
                        else x.shape
                    return torch.empty(shape, dtype=torch.result_type(x, other), device="meta")
        return super().call_function(target, args, kwargs)

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        x = args[0] if len(args) == 1 and not kwargs else None
        if (self.on_meta and type(module).forward in _SAME_AS_INPUT and "forward" not in vars(module)
                and not (module._forward_hooks or module._forward_pre_hooks)
                and isinstance(x, torch.Tensor) and x.is_floating_point()
                and all(t.dtype == x.dtype for t in module.parameters(recurse=False))
                and (not isinstance(module, torch.nn.modules.batchnorm._BatchNorm) or x.dim() >= 2
                     and x.shape[1] == module.num_features)):
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module._check_input_dim(x)  # what its forward checks first
            return _like(x)
        return super().call_module(target, args, kwargs)


def _tensor_homes(gm: torch.fx.GraphModule) -> list[tuple[dict[str, Any], str, torch.Tensor, str]]:
    """Every tensor the graph can read: (the dict holding it, its key there, the tensor, its qualname), for
    parameters and buffers of every submodule and the plain tensor attributes `get_attr` nodes fetch."""
    homes = []
    for prefix, module in gm.named_modules(remove_duplicate=False):
        for store in (module._parameters, module._buffers):
            for key, t in store.items():
                if t is not None:
                    homes.append((store, key, t, f"{prefix}.{key}" if prefix else key))
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            owner_name, _, attr = str(node.target).rpartition(".")
            try:
                owner = gm.get_submodule(owner_name)
            except AttributeError:
                continue
            if isinstance(vars(owner).get(attr), torch.Tensor):
                homes.append((vars(owner), attr, vars(owner)[attr], str(node.target)))
    return homes


def _propagate_on_meta(gm: torch.fx.GraphModule, inputs: tuple[Any, ...], slack: float = 5e-3) -> list[str] | None:
    """Record every node's shape from one run that moves to the meta device once real kernels cost more than
    meta dispatch (`_MetaInterpreter`; `slack=0`: on meta from the first node), and return the tensors that
    forward modified in place, or None when the graph cannot run on meta tensors (a data-dependent op, an op
    without a meta kernel): the caller then runs it on the real inputs. The graph's tensors are swapped
    back before returning, also on failure."""
    homes = _tensor_homes(gm)
    metas: dict[int, torch.Tensor] = {}  # one meta tensor per real one: tied weights stay tied
    for _, _, t, _ in homes:
        if id(t) not in metas:
            m = torch.empty_like(t, device="meta")
            metas[id(t)] = torch.nn.Parameter(m, t.requires_grad) if isinstance(t, torch.nn.Parameter) else m
    names: dict[int, str] = {}
    reals: dict[int, torch.Tensor] = {}
    for _, _, t, name in homes:
        names.setdefault(id(t), name)
        reals[id(t)] = t
    storages = {metas[i].untyped_storage()._cdata: name for i, name in names.items()}
    storages |= {reals[i].untyped_storage()._cdata: name for i, name in names.items()
                 if reals[i].layout == torch.strided}

    def switch() -> None:
        for store, key, t, _ in homes:
            store[key] = metas[id(t)]

    interp = _MetaInterpreter(gm, storages, switch, slack)
    interp.aliases = [(name, t, t._version) for i, name in names.items() for t in (metas[i], reals[i])]
    if slack <= 0:
        switch()
        interp.on_meta = True
        inputs = tuple(x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs)
    try:
        with torch.no_grad():
            interp.run(*inputs)
    except Exception:
        for node in gm.graph.nodes:  # a partial run's shapes must not mix with the real run's
            node.meta.pop("tensor_meta", None)
            node.meta.pop("type", None)
        return None
    finally:
        for store, key, t, _ in homes:
            store[key] = t
    return list(dict.fromkeys(name for name, t, version in interp.aliases if t._version != version))


def run_with_node_context(gm: torch.fx.GraphModule, inputs: tuple[Any, ...], what: str) -> Any:
    """Run gm recording shapes into meta; an exception becomes InputError naming the node."""
    interp = _ContextInterpreter(gm)
    try:
        with torch.no_grad():
            return interp.run(*inputs)
    except Exception as e:
        node = interp.current
        where = node_context(node) if node is not None else "the graph's inputs"
        layer = f" (layer '{node.target}')" if node is not None and node.op == "call_module" else ""
        raise InputError(
            f"{what} failed at {where}{layer}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
            "Check that example_inputs have the shape, dtype and device the model's forward expects."
        ) from e


def _positional_names(model: torch.nn.Module, n: int) -> list[str] | None:
    """One parameter name per example input when forward takes `*args` or `**kwargs` (a wrapper that adapts a
    model returning a dict or a dataclass), else None: its named positional parameters first, then `args_0`,
    `args_1`, ... for the inputs that land in `*args`."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    variadic = [p for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not variadic:
        return None
    named = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), "args")
    return named[:n] + [f"{star}_{i}" for i in range(max(n - len(named), 0))]


class _FixedArityTracer(torch.fx.Tracer):
    """Traces a forward that takes `*args`/`**kwargs` as if it took one named parameter per example input: fx
    would make one placeholder for `*args` and fail where forward unpacks it (`self.model(*args)`), since a
    Proxy cannot be iterated. The graph's placeholders then take the example inputs positionally."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names

    def create_args_for_root(self, root_fn: Any, is_module: bool, concrete_args: Any = None) -> Any:
        params = ", ".join(self.names)
        scope = {"_forward": root_fn}
        exec(f"def forward(self, {params}):\n    return _forward(self, {params})\n", scope)  # noqa: S102
        return super().create_args_for_root(scope["forward"], is_module, concrete_args)


def init_without_code(module: torch.fx.GraphModule, root: Any, graph: torch.fx.Graph, *args: Any) -> None:
    """`GraphModule.__init__` without generating forward's code (its graph setter calls `recompile`), for a graph
    that is edited before it runs: its owner calls `recompile()` once, when done (a real GraphModule then)."""
    vars(module)["recompile"] = lambda: None
    try:
        torch.fx.GraphModule.__init__(module, root, graph, *args)
    finally:
        del vars(module)["recompile"]


def _fx(model: torch.nn.Module, inputs: tuple[Any, ...], codegen: bool = True) -> torch.fx.GraphModule:
    try:
        names = _positional_names(model, len(inputs))
        tracer = torch.fx.Tracer() if names is None else _FixedArityTracer(names)
        graph = tracer.trace(model)  # what torch.fx.symbolic_trace does, and then builds the GraphModule
        if codegen:
            return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
        gm = torch.fx.GraphModule.__new__(torch.fx.GraphModule)
        init_without_code(gm, tracer.root, graph, type(model).__name__)
        return gm
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


def _dynamic_shapes(model: torch.nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | dict[str, Any]:
    """`dynamic_shapes` shaped like forward's signature, as torch.export matches them: by parameter name, the
    inputs that land in `*args` as one tuple (a flat tuple only fits a forward with one parameter per input)."""
    flat = tuple(_dynamic_dims(x) for x in inputs)
    try:
        sig = inspect.signature(model.forward)
        bound = sig.bind(*inputs)
    except (TypeError, ValueError):
        return flat
    if not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
        return flat
    star = inspect.Parameter.VAR_POSITIONAL
    return {name: tuple(_dynamic_dims(x) for x in value) if sig.parameters[name].kind == star else _dynamic_dims(value)
            for name, value in bound.arguments.items()}


def _export(model: torch.nn.Module, inputs: tuple[Any, ...]) -> torch.fx.GraphModule:
    dims = _dynamic_shapes(model, inputs)
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
            + "\nFix: make forward return tensors (or containers of them registered with torch.utils._pytree) "
            "and avoid data-dependent control flow."
        ) from e
    for node in list(gm.graph.nodes):  # shape guards of the dense model: the pruned one has other sizes
        if node.op == "call_module" and type(gm.get_submodule(node.target)).__name__ == "GuardsFn":
            gm.graph.erase_node(node)
            delattr(gm, node.target)
    gm.graph.lint()
    gm.recompile()
    return gm


def _trace_without_cache(copy_: torch.nn.Module) -> None:
    """Make the traced copy of a Hugging Face model return no cache object (a `DynamicCache` is no tensor tree:
    neither front end can return it). Only the copy's config changes (the deep copy has its own config);
    the logits and hidden states are the same with or without the cache, and the user's model keeps
    `use_cache` as it was (so its `generate()` still caches)."""
    config = getattr(copy_, "config", None)
    if config is not None and getattr(config, "use_cache", None):
        config.use_cache = False


_SIMPLE = (bool, int, float, str, bytes, type(None))
_ATOMIC = (type(None), bool, int, float, complex, str, bytes)


def _immutable(v: Any) -> bool:
    """A plain value no one can change in place: an atomic one, or a tuple of them (a kernel size, a stride)."""
    return type(v) in _ATOMIC or type(v) is tuple and all(type(x) in _ATOMIC for x in v)


def _simple(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_simple(v) for v in value)
    return isinstance(value, _SIMPLE)


def _attributes(module: torch.nn.Module) -> dict[str, Any]:
    """The public plain-data attributes of a module (not parameters, buffers, submodules)."""
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"}


def _attribute_snapshot(module: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Copies of the plain-data attributes of every submodule, to compare after a forward run."""
    return {name: {k: copy.deepcopy(v) if not _immutable(v) and _simple(v) else v for k, v in _attributes(m).items()}
            for name, m in module.named_modules()}


def _side_effects(original: torch.nn.Module, copy_: torch.nn.Module,
                  attrs_before: dict[str, dict[str, Any]], parameters: bool = True) -> list[str]:
    """What running forward on `copy_` changed: its attributes (against `attrs_before`, a snapshot of the
    copy itself, since a deep copy need not keep every instance attribute) and its buffers and (if
    `parameters`) parameters (against `original`, which the run did not touch)."""
    found: list[str] = []
    for name, other in copy_.named_modules():
        if name not in attrs_before:
            continue
        before, after = attrs_before[name], _attributes(other)
        prefix = f"{name}." if name else ""
        for key in sorted(set(before) | set(after)):
            if key not in before:
                found.append(f"forward assigns the new attribute self.{prefix}{key}")
            elif key not in after:
                found.append(f"forward deletes the attribute self.{prefix}{key}")
            elif _simple(before[key]) and (not _simple(after[key]) or before[key] != after[key]):
                found.append(f"forward changes the attribute self.{prefix}{key} "
                             f"({before[key]!r} -> {after[key]!r})")
    theirs = dict(copy_.named_buffers(remove_duplicate=False))
    mine = dict(original.named_buffers(remove_duplicate=False))
    if parameters:
        theirs |= dict(copy_.named_parameters(remove_duplicate=False))
        mine |= dict(original.named_parameters(remove_duplicate=False))
    for key, t in mine.items():
        other = theirs.get(key)
        if other is None:
            continue
        same = (isinstance(other, torch.Tensor) and other.shape == t.shape and other.dtype == t.dtype
                and torch.equal(other.detach(), t.detach()))
        if not same:
            found.append(f"forward modifies the tensor {key} in place")
    return found


_PLAIN_STATE = {torch.nn.Module.__setstate__, torch.nn.Module.__getstate__, object.__getstate__,
                object.__reduce_ex__, object.__reduce__}
_plain_classes: dict[type, bool] = {}


def _plain(cls: type) -> bool:
    """Whether `copy.deepcopy` copies instances of `cls` as `__new__` + `__setstate__(deep copy of __getstate__())`:
    no `__deepcopy__`, `__reduce__`, new-args or slots of its own, and nn.Module's state methods (or torch's own
    `__setstate__`, which only fills attributes missing from old pickles)."""
    if cls not in _plain_classes:
        setstate = getattr(cls, "__setstate__", None)
        _plain_classes[cls] = (
            not hasattr(cls, "__deepcopy__") and not hasattr(cls, "__getnewargs_ex__")
            and not hasattr(cls, "__getnewargs__") and not any("__slots__" in vars(c) for c in cls.__mro__)
            and all(getattr(cls, k) in _PLAIN_STATE for k in ("__getstate__", "__reduce_ex__", "__reduce__"))
            and (setstate in _PLAIN_STATE or getattr(setstate, "__module__", "").startswith("torch.nn.")))
    return _plain_classes[cls]


def _deepcopy_value(v: Any, memo: dict[int, Any]) -> Any:
    if _immutable(v):  # deepcopy returns these as they are, too
        return v
    if type(v) in (dict, OrderedDict) and id(v) not in memo:  # what deepcopy does, without __reduce_ex__
        new = memo[id(v)] = type(v)()
        for k, item in v.items():
            new[k if type(k) is str else copy.deepcopy(k, memo)] = _deepcopy_value(item, memo)
        return new
    return copy.deepcopy(v, memo)


#: torch's copy-on-write clone (a private API): the clone shares the tensor's memory until either side writes to
#: it, and the writer then gets its own copy. Used from the version it was tested on (tests/test_copy_on_write.py).
_LAZY_CLONE = getattr(torch, "_lazy_clone", None) if torch.__version__ >= (2, 13) else None


def _storage(t: torch.Tensor) -> torch.UntypedStorage | None:
    return t.untyped_storage() if t.layout == torch.strided and not t.is_quantized else None


def _lazy_copies(modules: list[torch.nn.Module]) -> dict[int, torch.Tensor]:
    """Copy-on-write clones of the parameters and buffers a deep copy may share memory with until written: plain CPU
    tensors and Parameters whose storage no other tensor of the model views (a deep copy keeps views of one storage
    views of one copy; separate clones would not), not in shared or file-mapped memory (a clone would stop the
    user's writes reaching it), without attributes of their own (a deep copy copies a tensor's `__dict__`), in
    memory torch owns (it refuses the others: NumPy's, safetensors' mappings). The others are deep-copied."""
    if _LAZY_CLONE is None:
        return {}
    tensors = {id(t): t for m in modules for store in (m._parameters, m._buffers) for t in store.values()
               if t is not None}
    storages = {i: _storage(t) for i, t in tensors.items()}
    views = Counter(st._cdata for st in storages.values() if st is not None)
    copies: dict[int, torch.Tensor] = {}
    for i, t in tensors.items():
        st = storages[i]
        if (type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu" and t.is_leaf
                and st is not None and views[st._cdata] == 1 and not st.is_shared()
                and not (type(t) is torch.Tensor and vars(t))):
            try:
                clone = _LAZY_CLONE(t.detach())
            except RuntimeError:  # memory torch does not own (safetensors' file mapping, from_pretrained's)
                continue
            copies[i] = torch.nn.Parameter(clone, t.requires_grad) if type(t) is torch.nn.Parameter else \
                clone.requires_grad_(t.requires_grad)
    return copies


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """`copy.deepcopy(model)`, the same objects at a third of the cost: every module of a plain class (`_plain`) is
    made with `__new__` and given a deep copy of its state directly (deepcopy's generic path, `__reduce_ex__` on
    each module and each of its dozen hook dicts, is most of a deep copy's time besides cloning tensors). The
    tensors are copy-on-write clones where `_lazy_copies` allows: no memory is copied until a write (a one-shot
    compile writes none; training the masked model copies what it writes, as does writing to the original model
    while the masked one lives)."""
    modules = list(model.modules())
    memo: dict[int, Any] = _lazy_copies(modules)
    if not all(_plain(type(m)) for m in modules):
        return copy.deepcopy(model, memo)
    memo |= {id(m): type(m).__new__(type(m)) for m in modules}
    for m in modules:
        state = m.__getstate__()
        memo[id(m)].__setstate__({k: _deepcopy_value(v, memo) for k, v in state.items()})
    return memo[id(model)]


def _bake_weight_masks(model: torch.nn.Module) -> None:
    """A model masked in place by a pruner (NNI's wrapper: `weight = original * mask`) is traced with the masked
    weights as plain parameters (on the copy being traced)."""
    from .mask import WeightMask, bake_parametrizations  # the mask pass sits above this one

    for module in model.modules():
        for attr, plist in dict(getattr(module, "parametrizations", {})).items():
            if len(plist) == 1 and isinstance(plist[0], WeightMask):
                bake_parametrizations(module, {attr})


def trace(model: torch.nn.Module, example_inputs: Any, frontend: str = "auto", *,
          codegen: bool = True) -> torch.fx.GraphModule:
    """Trace a deep copy of `model` and annotate shapes from a run on `example_inputs`.

    Args:
        model: the user's model; it is not modified.
        example_inputs: a tensor or tuple of tensors the model's forward accepts.
        frontend: "fx", "export", or "auto" (fx, then export where fx fails).
        codegen: False: an fx graph may come without forward's code, for a caller that edits the graph and
            calls `gm.recompile()` before running it (the mask pass); it saves generating the code twice.

    Returns:
        An eval-mode GraphModule with shape metadata on its nodes; `gm.meta["frontend"]` names the front end.

    Raises:
        TraceError: the model cannot be traced by the chosen front end(s) (names the source line), or it
            has side effects (attribute assignments, in-place updates of parameters or buffers).
        InputError: the example inputs do not fit the model (names the failing node and layer).
    """
    inputs = check_inputs(model, example_inputs)
    original = model
    train_flags = {name: m.training for name, m in model.named_modules()}
    model = _copy_model(model)
    if not isinstance(model, torch.fx.GraphModule):
        _bake_weight_masks(model)
    set_training(model, False)
    _trace_without_cache(model)
    attrs_before = _attribute_snapshot(model)
    used = frontend
    if isinstance(model, torch.fx.GraphModule):
        gm, used = model, model.meta.get("frontend", "fx")
    elif frontend == "export":
        gm = _export(model, inputs)
    elif frontend == "fx":
        gm = _fx(model, inputs, codegen)
    else:
        try:
            gm, used = _fx(model, inputs, codegen), "fx"
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
    modified = _propagate_on_meta(gm, inputs)
    if modified is None:
        run_with_node_context(gm, inputs, "running the model on example_inputs")
        effects = _side_effects(original, model, attrs_before)
    else:
        # Symbolic tracing hands forward the real buffers (parameters become proxies): compare those.
        effects = _side_effects(original, model, attrs_before, parameters=False)
        effects += [f"forward modifies the tensor {name} in place" for name in modified
                    if f"forward modifies the tensor {name} in place" not in effects]
    if effects:
        raise TraceError(
            f"{type(original).__name__}.forward has side effects the traced graph would not replay the same "
            "way: " + "; ".join(effects[:5]) + ("; ..." if len(effects) > 5 else "")
            + "\nFix: keep state updates out of forward (or in a wrapper fxprune does not trace), "
            "and do not assign module attributes in forward."
        )
    gm.meta["train_flags"] = train_flags
    gm.meta["frontend"] = used
    if "module_classes" not in gm.meta:  # a GraphModule traced by fxprune keeps those of its own source
        # The user's classes and names: a traced GraphModule keeps neither (its submodules are plain copies).
        gm.meta["module_classes"] = {name: type(m) for name, m in original.named_modules(remove_duplicate=False)}
        aliases: dict[int, list[str]] = {}
        for name, m in original.named_modules(remove_duplicate=False):
            aliases.setdefault(id(m), []).append(name)
        gm.meta["module_aliases"] = {names[0]: names for names in aliases.values()}
    return gm
