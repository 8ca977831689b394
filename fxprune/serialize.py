"""Save and load pruned models without pickling code.

    fxprune.save(result, "model.fxp")
    loaded = fxprune.load("model.fxp")
    loaded.model(x)          # the pruned GraphModule, rebuilt
    loaded.masks.kept("@conv1.weight", 0)   # indices of the original channels it kept
    loaded.report["params_after"]

A file is a zip archive holding `fxprune.json` (magic marker, format version, the fx graph as data,
the module tree as class import paths + plain attributes, the masks' index layout and the report) and
`tensors.pt` (a `torch.save` of a flat dict of tensors, read back with `torch.load(weights_only=True)`).
Functions are stored by qualified name and resolved by import on load; module classes must be
`torch.nn` built-ins, rebuilt from their recorded attributes. Anything else is refused at save time,
naming the node or module, instead of being pickled.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn as nn

from .errors import FormatError
from .passes.trace import set_training
from .version import __version__

__all__ = ["save", "load", "Loaded", "SavedMasks", "FORMAT_VERSION", "MAGIC"]

MAGIC = "fxprune-model"
FORMAT_VERSION = 1
_META = "fxprune.json"
_TENSORS = "tensors.pt"
#: Modules whose functions a file may name; add yours with `load(path, trusted_modules=[...])`.
_SAFE_MODULES = ("torch", "_operator", "operator", "math", "builtins", "fxprune")


@dataclass
class SavedMasks:
    """The masks of a saved result, as data: which original channels each pruned tensor dim kept.

    `kept_indices[(key, dim)]` are indices into the original size `sizes[(key, dim)]`; keys are node
    names (`"conv1"`, `"split[0]"`) or parameter qualnames prefixed with `@` (`"@conv1.weight"`).
    `groups[gid]` is the group's bool keep vector (True = kept), `group_slots[gid]` its (key, dim) slots;
    `weights[qualname]` are unstructured (Level) weight masks.
    """

    kept_indices: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    sizes: dict[tuple[str, int], int] = field(default_factory=dict)
    groups: dict[int, torch.Tensor] = field(default_factory=dict)
    group_slots: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    def kept(self, key: str, dim: int) -> torch.Tensor | None:
        """Indices kept along (key, dim), or None when nothing there was removed."""
        return self.kept_indices.get((key, dim))


@dataclass
class Loaded:
    """What `load` returns: the rebuilt pruned model, its masks, report and example inputs."""

    model: torch.fx.GraphModule
    masks: SavedMasks
    report: dict[str, Any]
    example_inputs: tuple[Any, ...]
    fxprune_version: str = ""


# ------------------------------------------------------------------------------------------------
# Values: node arguments and module attributes as tagged JSON
# ------------------------------------------------------------------------------------------------


def _function_name(fn: Any) -> str:
    if isinstance(fn, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        return "torch.ops:" + str(fn).replace("::", ".")
    module = getattr(fn, "__module__", None) or ""
    names = [getattr(fn, "__qualname__", None), getattr(fn, "__name__", None)]
    candidates = [(module, n) for n in names if n]
    if module.startswith("torch"):
        candidates += [(m, names[1]) for m in ("torch", "torch.nn.functional") if names[1]]
    for mod, name in candidates:
        if "<" in name:  # <lambda>, <locals>: no import path by this name
            continue
        try:
            if _resolve(f"{mod}:{name}", trusted=(mod,)) is fn:
                return f"{mod}:{name}"
        except FormatError:
            continue
    raise FormatError(f"function {fn!r} has no import path (a lambda or local function?): fxprune.save "
                      "stores functions by name; define it at module level, e.g. with @torch.fx.wrap")


def _resolve(name: str, trusted: Iterable[str] = ()) -> Any:
    module, _, qualname = name.partition(":")
    allowed = _SAFE_MODULES + tuple(trusted)
    if not any(module == m or module.startswith(m + ".") for m in allowed):
        raise FormatError(f"the file names {name}, outside the modules load trusts ({', '.join(allowed)}); "
                          f"pass trusted_modules=['{module}'] if you trust it")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise FormatError(f"cannot resolve {name}: {e}") from e
    return obj


_ENUMS = {"dtype": torch.dtype, "layout": torch.layout, "memory_format": torch.memory_format}


def _encode(value: Any, where: str) -> Any:
    """Plain-data form of a node argument or module attribute; raises FormatError for anything else."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, torch.Size):
        return {"size": list(value)}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode(v, where) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, where) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [_encode(v, where) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    for tag, kind in _ENUMS.items():
        if isinstance(value, kind):
            return {tag: str(value).removeprefix("torch.")}
    raise FormatError(f"{where}: cannot store a value of type {type(value).__name__} ({value!r:.60}) "
                      "without pickling it")


def _decode(value: Any, env: dict[str, torch.fx.Node]) -> Any:
    if not isinstance(value, dict):
        return value
    (tag, body), = value.items()
    if tag == "node":
        return env[body]
    if tag == "float":
        return float(body)
    if tag == "size":
        return torch.Size(body)
    if tag == "tuple":
        return tuple(_decode(v, env) for v in body)
    if tag == "list":
        return [_decode(v, env) for v in body]
    if tag == "dict":
        return {k: _decode(v, env) for k, v in body.items()}
    if tag == "slice":
        return slice(*(_decode(v, env) for v in body))
    if tag == "ellipsis":
        return Ellipsis
    if tag == "device":
        return torch.device(body)
    if tag in _ENUMS:
        obj = getattr(torch, body)
        if not isinstance(obj, _ENUMS[tag]):
            raise FormatError(f"{body} is not a torch {tag}")
        return obj
    raise FormatError(f"unknown value tag {tag!r}")


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _savable_class(cls: type) -> bool:
    return cls is nn.Module or (cls.__module__.startswith("torch.nn.modules.") and issubclass(cls, nn.Module))


def _plain_attrs(module: nn.Module, where: str) -> dict[str, Any]:
    out = {}
    for key, value in vars(module).items():
        if key.startswith("_") or isinstance(value, (torch.Tensor, nn.Module)):
            continue
        out[key] = _encode(value, f"{where}.{key}")
    return out


def _describe_module(name: str, module: nn.Module) -> dict[str, Any]:
    where = f"module '{name or '<root>'}' ({type(module).__qualname__})"
    cls = nn.Module if isinstance(module, torch.fx.GraphModule) and not name else type(module)
    if not _savable_class(cls):
        raise FormatError(
            f"{where} is not a torch.nn built-in: fxprune.save rebuilds modules from their class and "
            "attributes and does not pickle code. Trace it into the graph instead (make it a non-leaf).")
    hooks = [h for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks")
             if getattr(module, h, None)]
    if hooks:
        raise FormatError(f"{where} has hooks ({', '.join(hooks)}), which are code: remove them before saving")
    if hasattr(module, "parametrizations"):
        raise FormatError(f"{where} is parametrized: save the pruned model (result.model), not the masked one")
    attrs = _plain_attrs(module, where) if cls is not nn.Module else {"training": module.training}
    return {"class": _class_path(cls), "attrs": attrs}


def _build_module(desc: dict[str, Any], name: str) -> nn.Module:
    path = desc["class"]
    module_name, _, qualname = path.partition(":")
    if not (module_name == "torch.nn.modules.module" or module_name.startswith("torch.nn.modules.")):
        raise FormatError(f"module '{name}' has class {path}, not a torch.nn built-in: refusing to build it")
    cls = _resolve(path)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise FormatError(f"module '{name}': {path} is not an nn.Module class")
    attrs = {k: _decode(v, {}) for k, v in desc["attrs"].items()}
    kwargs: dict[str, Any] = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == "device":
            kwargs["device"] = "meta"  # no memory for weights that are replaced right away
        elif p.name in attrs:
            kwargs[p.name] = attrs[p.name]
        elif p.name in desc.get("flags", {}):
            kwargs[p.name] = desc["flags"][p.name]
        elif p.default is p.empty:
            raise FormatError(f"module '{name}' ({path}): constructor argument '{p.name}' was not recorded")
    try:
        module = cls(**kwargs)
    except Exception as e:
        raise FormatError(f"module '{name}': {path}({kwargs}) failed: {type(e).__name__}: {e}") from e
    for key, value in attrs.items():
        object.__setattr__(module, key, value)
    return module


def _constructor_flags(module: nn.Module) -> dict[str, bool]:
    """Constructor booleans stored as optional tensors (`bias=True` -> `self.bias` is a Parameter)."""
    flags = {}
    try:
        params = list(inspect.signature(type(module).__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return flags
    for p in params:
        if isinstance(p.default, bool) and p.name in (module._parameters | module._buffers):
            flags[p.name] = getattr(module, p.name) is not None
    return flags


# ------------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------------


def _graph_data(gm: torch.fx.GraphModule) -> list[dict[str, Any]]:
    nodes = []
    for node in gm.graph.nodes:
        where = f"node {node.format_node()}"
        target = {"function": _function_name(node.target)} if node.op == "call_function" else node.target
        if not isinstance(target, (str, dict)):
            raise FormatError(f"{where}: target {node.target!r} is not a name")
        nodes.append({"name": node.name, "op": node.op, "target": target,
                      "args": _encode(tuple(node.args), where), "kwargs": _encode(dict(node.kwargs), where)})
    return nodes


def _masks_data(masks: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    if masks is None:
        return {}
    slots, groups = [], []
    for i, (s, keep) in enumerate(masks.pruned_slots()):
        tensors[f"masks/slot{i}"] = torch.as_tensor(np.flatnonzero(keep), dtype=torch.int64)
        slots.append({"key": s.tensor, "dim": s.dim, "size": int(len(keep)), "tensor": f"masks/slot{i}"})
    for gid, keep in sorted(masks.keep.items()):
        tensors[f"masks/group{gid}"] = torch.as_tensor(np.asarray(keep, dtype=bool))
        g = masks.graph.groups[gid]
        groups.append({"id": int(gid), "tensor": f"masks/group{gid}", "slots": [[s.tensor, s.dim] for s in g.slots]})
    weights = {}
    for i, (name, keep) in enumerate(sorted(masks.weights.items())):
        tensors[f"masks/weight{i}"] = keep.detach().to("cpu", torch.bool)
        weights[name] = f"masks/weight{i}"
    return {"slots": slots, "groups": groups, "weights": weights}


def _outputs(model: nn.Module, inputs: tuple[Any, ...]) -> list[torch.Tensor]:
    flags = set_training(model, False)
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        set_training(model, flags)
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def save(result: Any, path: str | os.PathLike[str]) -> None:
    """Write a pruned model (a `CompileResult`, or a bare GraphModule) to one file, without pickling code.

    Stores the graph, the module tree (torch.nn built-ins by class and attributes), every parameter,
    buffer and tensor attribute, the masks, the report, the example inputs and the outputs on them.
    The file is written to a temporary name and renamed, so a failed save leaves no partial file.

    Raises:
        FormatError: naming the node or module that cannot be stored without pickling (a lambda, a
            custom module class, hooks), before anything is written.

    Example:
        >>> fxprune.save(fxprune.compile(model, {"sparsity": 0.5}, x), "model.fxp")
    """
    gm = getattr(result, "model", result)
    if not isinstance(gm, torch.fx.GraphModule):
        raise FormatError(f"fxprune.save takes a CompileResult or a GraphModule, got {type(result).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    modules, tensor_index = {}, []
    ids: dict[int, str] = {}  # tied tensors are stored once
    for name, module in gm.named_modules(remove_duplicate=False):
        if name in modules:
            continue
        desc = _describe_module(name, module)
        if not isinstance(module, torch.fx.GraphModule):
            desc["flags"] = _constructor_flags(module)
        modules[name] = desc
        entries = [("parameter", k, v) for k, v in module._parameters.items()]
        entries += [("buffer", k, v) for k, v in module._buffers.items()]
        entries += [("attr", k, v) for k, v in vars(module).items() if isinstance(v, torch.Tensor)
                    and not k.startswith("__")]
        for kind, attr, value in entries:
            qualname = f"{name}.{attr}" if name else attr
            if value is None:
                tensor_index.append({"name": qualname, "kind": kind, "tensor": None})
                continue
            if id(value) not in ids:
                ids[id(value)] = f"weights/{qualname}"
                tensors[ids[id(value)]] = value.detach()
            entry = {"name": qualname, "kind": kind, "tensor": ids[id(value)]}
            if kind == "parameter":
                entry["requires_grad"] = bool(value.requires_grad)
            if kind == "buffer":
                entry["persistent"] = attr not in module._non_persistent_buffers_set
            tensor_index.append(entry)
    nodes = _graph_data(gm)
    inputs = tuple(getattr(result, "example_inputs", ()) or ())
    input_index = []
    for i, x in enumerate(inputs):
        if isinstance(x, torch.Tensor):
            tensors[f"inputs/{i}"] = x.detach()
            input_index.append({"tensor": f"inputs/{i}"})
        else:
            input_index.append({"value": _encode(x, f"example_inputs[{i}]")})
    outputs = _outputs(gm, inputs) if inputs else []
    for i, t in enumerate(outputs):
        tensors[f"outputs/{i}"] = t.detach()
    report = getattr(result, "report", None)
    meta = {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "fxprune_version": __version__,
        "torch_version": torch.__version__,
        "graph": nodes,
        "modules": modules,
        "tensors": tensor_index,
        "masks": _masks_data(getattr(result, "masks", None), tensors),
        "report": report.to_dict() if hasattr(report, "to_dict") else (report or {}),
        "inputs": input_index,
        "outputs": len(outputs),
    }
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise FormatError(f"cannot write {path}: the report or graph holds a value JSON cannot store: {e}") from e
    buffer = io.BytesIO()
    torch.save({k: v.cpu().contiguous() if v.device.type != "cpu" else v for k, v in tensors.items()}, buffer)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fxprune-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            z.comment = MAGIC.encode()
            z.writestr(_META, text)
            z.writestr(_TENSORS, buffer.getbuffer())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if _META not in names:
                raise FormatError(f"{path} is a zip archive but not an fxprune model (no {_META}); "
                                  "was it written by fxprune.save?")
            meta = json.loads(z.read(_META))
            if not isinstance(meta, dict) or meta.get("magic") != MAGIC:
                raise FormatError(f"{path}: {_META} lacks the fxprune magic marker; not an fxprune model")
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                raise FormatError(f"{path} has format version {version!r}; this fxprune reads version "
                                  f"{FORMAT_VERSION}: load it with the fxprune that wrote it (version "
                                  f"{meta.get('fxprune_version', '?')})")
            if _TENSORS not in names:
                raise FormatError(f"{path}: {_TENSORS} is missing; the file is incomplete")
            payload = z.read(_TENSORS)
    except zipfile.BadZipFile as e:
        raise FormatError(f"{path} is not an fxprune model or is truncated/corrupt ({e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: {_META} is not valid JSON ({e}); the file is corrupt") from e
    except (OSError, EOFError, zipfile.LargeZipFile, RuntimeError) as e:
        raise FormatError(f"{path}: cannot read ({type(e).__name__}: {e}); truncated or corrupt?") from e
    try:
        tensors = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as e:
        raise FormatError(f"{path}: the tensor payload cannot be read ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); the file is corrupt") from e
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise FormatError(f"{path}: the tensor payload is not a dict of tensors")
    return meta, tensors


def _rebuild(meta: dict[str, Any], tensors: dict[str, torch.Tensor], trusted: Iterable[str]) -> torch.fx.GraphModule:
    built: dict[str, nn.Module] = {}
    for name in sorted(meta["modules"], key=lambda n: (n.count("."), n) if n else (-1, n)):
        module = _build_module(meta["modules"][name], name)
        if name:
            parent, _, leaf = name.rpartition(".")
            built[parent].add_module(leaf, module)
        built[name] = module
    params: dict[str, nn.Parameter] = {}  # one Parameter per stored tensor: tied weights stay tied
    for entry in meta["tensors"]:
        owner_name, _, attr = entry["name"].rpartition(".")
        owner = built[owner_name]
        key = entry["tensor"]
        value = None if key is None else tensors[key]
        if entry["kind"] == "parameter":
            if value is not None and key not in params:
                params[key] = nn.Parameter(value, requires_grad=entry.get("requires_grad", True))
            owner._parameters[attr] = None if value is None else params[key]
        elif entry["kind"] == "buffer":
            owner.register_buffer(attr, value, persistent=entry.get("persistent", True))
        else:
            object.__setattr__(owner, attr, value)
    leftover = [f"{n}.{k}" if n else k for n, m in built.items()
                for k, t in list(m._parameters.items()) + list(m._buffers.items()) if t is not None and t.is_meta]
    if leftover:
        raise FormatError(f"the file holds no values for {', '.join(leftover[:5])}; it is incomplete")

    graph = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    for n in meta["graph"]:
        target = n["target"]
        if isinstance(target, dict):
            name = target["function"]
            target = _resolve_op(name) if name.startswith("torch.ops:") else _resolve(name, trusted)
        args, kwargs = _decode(n["args"], env), _decode(n["kwargs"], env)
        env[n["name"]] = graph.create_node(n["op"], target, tuple(args), dict(kwargs), name=n["name"])
    graph.lint()
    gm = torch.fx.GraphModule(built[""], graph)
    gm.train(meta["modules"][""]["attrs"].get("training", False))
    for name, module in gm.named_modules():
        desc = meta["modules"].get(name)
        if desc is not None and "training" in desc["attrs"]:
            module.training = desc["attrs"]["training"]
    return gm


def _resolve_op(name: str) -> Any:
    obj: Any = torch.ops
    for part in name.removeprefix("torch.ops:").split("."):
        obj = getattr(obj, part)
    return obj


def load(path: str | os.PathLike[str], *, trusted_modules: Iterable[str] = (), check: bool = True) -> Loaded:
    """Read a file written by `fxprune.save` and rebuild the pruned model.

    Args:
        path: the file.
        trusted_modules: modules besides torch/operator/math/fxprune whose functions the graph may call
            (e.g. ["mypackage.ops"] for an `@torch.fx.wrap`-ed function); nothing else is imported.
        check: run the rebuilt model on the saved example inputs and compare with the saved outputs.

    Raises:
        FormatError: the file is missing, truncated, corrupt, not an fxprune file, of another format
            version, names untrusted code, or the rebuilt model computes something else (names the path).
    """
    path = os.fspath(path)
    meta, tensors = _read(path)
    try:
        gm = _rebuild(meta, tensors, trusted_modules)
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise FormatError(f"{path}: the model description is inconsistent ({type(e).__name__}: {e}); "
                          "the file is corrupt or was edited") from e
    inputs = []
    for entry in meta.get("inputs", []):
        inputs.append(tensors[entry["tensor"]] if "tensor" in entry else _decode(entry["value"], {}))
    if check and inputs:
        try:
            got = _outputs(gm, tuple(inputs))
        except Exception as e:
            raise FormatError(f"{path}: the rebuilt model fails on the saved example inputs: "
                              f"{type(e).__name__}: {e}") from e
        want = [tensors[f"outputs/{i}"] for i in range(meta.get("outputs", 0))]
        if len(got) != len(want) or any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(got, want)):
            raise FormatError(f"{path}: the rebuilt model's outputs differ from the saved ones")
    masks = SavedMasks()
    data = meta.get("masks") or {}
    for s in data.get("slots", []):
        masks.kept_indices[(s["key"], s["dim"])] = tensors[s["tensor"]]
        masks.sizes[(s["key"], s["dim"])] = s["size"]
    for g in data.get("groups", []):
        masks.groups[g["id"]] = tensors[g["tensor"]]
        masks.group_slots[g["id"]] = [(k, d) for k, d in g["slots"]]
    for name, key in data.get("weights", {}).items():
        masks.weights[name] = tensors[key]
    return Loaded(gm, masks, meta.get("report", {}), tuple(inputs), meta.get("fxprune_version", ""))
