"""Write-back: shrink the user's own model in place to the pruned model a `CompileResult` holds.

`apply_to(model, result)` gives the user back their own object (its class, methods, `generate()`,
`save_pretrained()`, config), physically smaller:

1. every parameter, buffer and tensor attribute of `result.model` (whose qualnames are the user's under
   both front ends) that differs from the user's is copied onto the user's module (tied tensors stay tied);
2. the attributes each module's class reads in `forward` are updated from the new shapes (`out_channels`,
   `in_features`, `num_features`, `normalized_shape`, `num_heads`, `head_dim`, `split_size`, ...);
3. a Hugging Face `config` gets the new sizes where they are the same in every layer; where they are not,
   or the config cannot describe the pruned shapes, a note says that `save_pretrained` would not round-trip;
4. the user's own `forward` runs on `result.example_inputs` and must agree with `result.model`.

All or nothing: every tensor and attribute changed is recorded first; any failure (a forward holding a
literal size no attribute controls, a different output) restores the model exactly and raises an error
naming the module, the source line and the size, and pointing to `result.model`, which always works.
"""

from __future__ import annotations

import copy
import inspect
import linecache
import re
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn

from .errors import InputError, UnsupportedError
from .graph import Slot, module_class
from .passes.trace import LIB_DIRS, set_training
from .passes.verify import tensors_close

__all__ = ["apply_to", "output_pairs", "run_model"]

_MISSING = object()


@dataclass
class _Undo:
    """What was changed, to put back in reverse order on failure."""

    entries: list[tuple[Any, str, str, Any]] = field(default_factory=list)  # (object, kind, name, old value)

    def tensor(self, module: nn.Module, name: str, new: torch.Tensor) -> None:
        if name in module._parameters:
            self.entries.append((module, "param", name, module._parameters[name]))
            module._parameters[name] = new
        elif name in module._buffers:
            self.entries.append((module, "buffer", name, module._buffers[name]))
            module._buffers[name] = new
        else:
            self.attr(module, name, new)

    def attr(self, obj: Any, name: str, value: Any) -> None:
        self.entries.append((obj, "attr", name, getattr(obj, name, _MISSING)))
        setattr(obj, name, value)

    def restore(self) -> None:
        for obj, kind, name, old in reversed(self.entries):
            if kind == "param":
                obj._parameters[name] = old
            elif kind == "buffer":
                obj._buffers[name] = old
            elif old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
        self.entries.clear()


def _resolve(root: nn.Module, qualname: str) -> tuple[nn.Module, str, Any]:
    """(owner module, attribute, value) of a dotted tensor name, or (None, attr, _MISSING)."""
    owner_name, _, attr = qualname.rpartition(".")
    try:
        owner = root.get_submodule(owner_name)
    except AttributeError:
        return None, attr, _MISSING
    return owner, attr, getattr(owner, attr, _MISSING)


def _pruned_tensors(gm: torch.fx.GraphModule) -> dict[str, tuple[torch.Tensor, bool]]:
    """Every tensor of the pruned graph by qualname: parameters, buffers and tensor `get_attr` targets
    (plain tensor attributes under fx; constants torch.export lifted). Value: (tensor, is a parameter)."""
    out = {n: (p, True) for n, p in gm.named_parameters(remove_duplicate=False)}
    out.update({n: (b, False) for n, b in gm.named_buffers(remove_duplicate=False) if n not in out})
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in out:
            _, _, value = _resolve(gm, node.target)
            if isinstance(value, torch.Tensor):
                out[node.target] = (value, isinstance(value, nn.Parameter))
    return out


@dataclass
class _Change:
    owner: nn.Module
    owner_name: str
    attr: str
    old: torch.Tensor
    new: torch.Tensor


def _plan(model: nn.Module, gm: torch.fx.GraphModule) -> list[_Change]:
    """The tensor replacements, checked before anything changes (a result of another model is refused)."""
    changes = []
    for name, (new, is_param) in _pruned_tensors(gm).items():
        owner, attr, old = _resolve(model, name)
        if not isinstance(old, torch.Tensor):
            if is_param:
                raise InputError(
                    f"the pruned model has the parameter '{name}' but {type(model).__name__} has no tensor of that "
                    "name: apply_to takes the model the result was compiled from (or an identical one)")
            continue  # a constant torch.export lifted (e.g. a literal tensor in forward): not the user's
        if old.shape == new.shape and old.dtype == new.dtype and torch.equal(old.detach(), new.detach()):
            continue
        if old.dim() != new.dim():
            raise InputError(f"'{name}' has shape {tuple(old.shape)} in {type(model).__name__} but "
                             f"{tuple(new.shape)} in the pruned model: not the model the result was compiled from")
        changes.append(_Change(owner, name.rpartition(".")[0], attr, old, new))
    return changes


def _replace_tensors(changes: list[_Change], undo: _Undo) -> None:
    made: dict[int, torch.Tensor] = {}  # one new object per old object: tied tensors stay tied
    for ch in changes:
        if id(ch.old) not in made:
            value = ch.new.detach().clone().to(ch.old.device)
            made[id(ch.old)] = (nn.Parameter(value, requires_grad=ch.old.requires_grad)
                                if isinstance(ch.old, nn.Parameter) else value)
        undo.tensor(ch.owner, ch.attr, made[id(ch.old)])


# -- module attributes ---------------------------------------------------------------------------------


def _reference(gm: torch.fx.GraphModule, name: str, module: nn.Module) -> nn.Module | None:
    """The pruned graph's copy of the user's module (fx front end: its attributes were rewritten by the
    rules), or None (torch.export keeps only the tensors)."""
    try:
        ref = gm.get_submodule(name)
    except AttributeError:
        return None
    return ref if module_class(ref) is module_class(module) else None


def _conv_groups(gm: torch.fx.GraphModule, name: str, module: nn.Module) -> int:
    """`groups` of a conv after pruning: from the fx copy, or from the conv call on its weight (export)."""
    ref = _reference(gm, name, module)
    if ref is not None:
        return ref.groups
    weight = f"{name}.weight"
    for node in gm.graph.nodes:
        if node.op == "call_function" and "conv" in str(node.target) and len(node.args) > 1 and \
                isinstance(node.args[1], torch.fx.Node) and node.args[1].target == weight:
            index = 8 if "convolution" in str(node.target) else 6  # aten.convolution has transposed, output_padding
            if len(node.args) > index:
                return int(node.args[index])
            return int(node.kwargs.get("groups", 1))
    return module.groups


def _layer_attributes(module: nn.Module, name: str, gm: torch.fx.GraphModule) -> dict[str, Any]:
    """The size attributes of a torch layer (or HF Conv1D), from its (new) tensors."""
    w = getattr(module, "weight", None)
    if isinstance(module, nn.modules.conv._ConvNd):
        groups = _conv_groups(gm, name, module)
        if module.transposed:
            return {"in_channels": w.shape[0], "out_channels": w.shape[1] * groups, "groups": groups}
        return {"in_channels": w.shape[1] * groups, "out_channels": w.shape[0], "groups": groups}
    if isinstance(module, nn.Linear):
        return {"out_features": w.shape[0], "in_features": w.shape[1]}
    if isinstance(module, nn.modules.batchnorm._NormBase):  # BatchNorm*, InstanceNorm*
        ref = w if w is not None else getattr(module, "running_mean", None)
        return {"num_features": ref.shape[0]} if ref is not None else {}
    if isinstance(module, nn.GroupNorm) and w is not None:
        per = module.num_channels // module.num_groups
        return {"num_channels": w.shape[0], "num_groups": w.shape[0] // per}
    if isinstance(module, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))) and w is not None:
        return {"normalized_shape": tuple(w.shape)}
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return {"num_embeddings": w.shape[0], "embedding_dim": w.shape[1]}
    if isinstance(module, nn.PReLU):
        return {"num_parameters": w.numel()}
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # Hugging Face's transposed linear (GPT-2)
        return {"nx": w.shape[0], "nf": w.shape[1]}
    return {}


def _roles(result: Any, key: str, dim: int) -> set[str]:
    dg = result.masks.graph
    gid = dg.group_of.get(Slot(key, dim))
    return dg.groups[gid].roles if gid is not None else set()


def _head_dim_pruned(result: Any, weight_name: str, dim: int) -> bool:
    """Whether the projection's output was pruned along head_dim (attention='head_dim'), not whole heads."""
    return "head_dim" in _roles(result, f"@{weight_name}", dim)


def _attention_attributes(module: nn.Module, name: str, result: Any) -> dict[str, Any]:
    """Head counts / head size / inner width of Hugging Face attention and MLP modules, as their forward
    reads them (BERT, GPT-2, Llama in transformers 5), from their (already updated) projections."""
    prefix = f"{name}." if name else ""
    if hasattr(module, "c_attn") and hasattr(module, "split_size") and hasattr(module, "head_dim"):  # GPT-2
        inner = module.c_attn.nf // (2 if getattr(module, "is_cross_attention", False) else 3)
        attrs: dict[str, Any] = {"split_size": inner, "embed_dim": module.c_proj.nf}
        if _head_dim_pruned(result, f"{prefix}c_attn.weight", 1):
            attrs["head_dim"] = inner // module.num_heads
        else:
            attrs["num_heads"] = inner // module.head_dim
        return attrs
    if hasattr(module, "attention_head_size") and hasattr(module, "query"):  # BERT self/cross attention
        inner = module.query.out_features
        if _head_dim_pruned(result, f"{prefix}query.weight", 0):
            return {"all_head_size": inner, "attention_head_size": inner // module.num_attention_heads}
        return {"all_head_size": inner, "num_attention_heads": inner // module.attention_head_size}
    if hasattr(module, "q_proj") and hasattr(module, "k_proj") and hasattr(module, "head_dim"):  # Llama family
        if _head_dim_pruned(result, f"{prefix}q_proj.weight", 0):  # the head count stays the config's
            return {"head_dim": module.q_proj.out_features // module.config.num_attention_heads}
        n_q, n_kv = module.q_proj.out_features // module.head_dim, module.k_proj.out_features // module.head_dim
        attrs = {"num_key_value_groups": n_q // max(n_kv, 1)}
        for attr, value in (("num_heads", n_q), ("num_key_value_heads", n_kv)):
            if hasattr(module, attr):
                attrs[attr] = value
        return attrs
    if hasattr(module, "intermediate_size") and hasattr(module, "up_proj"):  # Llama MLP
        return {"intermediate_size": module.up_proj.out_features, "hidden_size": module.up_proj.in_features}
    return {}


def _update_attributes(model: nn.Module, result: Any, changed: set[str], undo: _Undo) -> None:
    modules = dict(model.named_modules())
    for name in sorted(changed, key=lambda n: -n.count(".")):  # layers first, then the blocks that read them
        module = modules.get(name)
        if module is None:
            continue
        for attr, value in _layer_attributes(module, name, result.model).items():
            if getattr(module, attr, _MISSING) != value:
                undo.attr(module, attr, value)
    for name, module in model.named_modules():  # attention / MLP blocks own no tensors: look at all of them
        for attr, value in _attention_attributes(module, name, result).items():
            if getattr(module, attr, _MISSING) != value:
                undo.attr(module, attr, value)


# -- Hugging Face config -------------------------------------------------------------------------------


def _config_values(model: nn.Module) -> dict[str, list[int]]:
    """Per config field, the value every layer now has (one entry per layer)."""
    values: dict[str, list[int]] = {}

    def add(key: str, value: int) -> None:
        values.setdefault(key, []).append(int(value))

    for module in model.modules():
        if hasattr(module, "c_attn") and hasattr(module, "split_size"):  # GPT-2
            add("num_attention_heads", module.num_heads)
        elif hasattr(module, "c_fc") and hasattr(module, "c_proj") and hasattr(module.c_fc, "nf"):  # GPT-2 MLP
            add("n_inner", module.c_fc.nf)
        elif hasattr(module, "attention_head_size") and hasattr(module, "query"):  # BERT
            add("num_attention_heads", module.num_attention_heads)
        elif type(module).__name__.endswith("Intermediate") and isinstance(getattr(module, "dense", None), nn.Linear):
            add("intermediate_size", module.dense.out_features)
        elif hasattr(module, "q_proj") and hasattr(module, "k_proj") and hasattr(module, "head_dim"):  # Llama
            add("num_attention_heads", module.q_proj.out_features // module.head_dim)
            add("num_key_value_heads", module.k_proj.out_features // module.head_dim)
            add("head_dim", module.head_dim)
        elif hasattr(module, "intermediate_size") and hasattr(module, "up_proj"):
            add("intermediate_size", module.intermediate_size)
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    if isinstance(embeddings, nn.Embedding):
        add("hidden_size", embeddings.embedding_dim)
    return values


def _shape_mismatch(model: nn.Module) -> str:
    """'' if `type(model)(model.config)` has the model's tensor shapes (so save_pretrained/from_pretrained
    round-trips), else the first difference. Built on the meta device: no memory, no init cost."""
    try:
        with torch.device("meta"):
            fresh = type(model)(copy.deepcopy(model.config))
    except Exception as e:  # a config the class refuses (e.g. a hidden size the head count does not divide)
        return f"{type(model).__name__}(config) fails: {type(e).__name__}: {e}"
    theirs = dict(fresh.state_dict())
    for name, t in model.state_dict().items():
        other = theirs.get(name)
        if other is not None and tuple(other.shape) != tuple(t.shape):
            return f"'{name}' would be built {tuple(other.shape)}, the pruned one is {tuple(t.shape)}"
    return ""


def _update_config(model: nn.Module, before: dict[str, list[int]], undo: _Undo) -> list[str]:
    """Set the Hugging Face config fields pruning changed and that are the same in every layer; say what
    cannot be described. `before`: `_config_values` of the model before the write-back."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict") or not hasattr(type(model), "from_pretrained"):
        return []
    notes, uneven = [], []
    for key, values in _config_values(model).items():
        if values == before.get(key):
            continue
        if len(set(values)) > 1:
            uneven.append(f"{key} per layer {values}")
        elif hasattr(config, key):
            undo.attr(config, key, values[0])
    if uneven:
        notes.append("pruning is not uniform across layers (" + "; ".join(uneven) + "): the config holds one "
                     "value per field, so save_pretrained()/from_pretrained() would not round-trip; save with "
                     "fxprune.save(result, path)")
    else:
        mismatch = _shape_mismatch(model)
        if mismatch:
            notes.append(f"the {type(config).__name__} cannot describe the pruned shapes ({mismatch}): "
                         "save_pretrained()/from_pretrained() would not round-trip; "
                         "save with fxprune.save(result, path)")
    return notes


# -- the check -----------------------------------------------------------------------------------------


def output_pairs(ref: Any, got: Any, path: str = "output") -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Matching tensor leaves of two outputs (tuples, dicts, HF output dataclasses; None and caches skipped)."""
    if isinstance(ref, torch.Tensor) and isinstance(got, torch.Tensor):
        yield path, ref, got
    elif isinstance(ref, Mapping) and isinstance(got, Mapping):
        for key, value in ref.items():
            if key in got and value is not None and got[key] is not None:
                yield from output_pairs(value, got[key], f"{path}.{key}")
    elif isinstance(ref, Mapping) and isinstance(got, (tuple, list)):
        yield from output_pairs(tuple(v for v in ref.values() if v is not None), got, path)
    elif isinstance(ref, (tuple, list)) and isinstance(got, Mapping):
        yield from output_pairs(ref, tuple(v for v in got.values() if v is not None), path)
    elif isinstance(ref, (tuple, list)) and isinstance(got, (tuple, list)):
        for i, (a, b) in enumerate(zip(ref, got)):
            yield from output_pairs(a, b, f"{path}[{i}]")


def run_model(module: nn.Module, inputs: tuple[Any, ...]) -> Any:
    flags = set_training(module, False)
    try:
        with torch.no_grad():
            return module(*inputs)
    finally:
        set_training(module, flags)


def _user_site(exc: BaseException, model: nn.Module) -> tuple[str, str, str, Any]:
    """(module qualname, 'file:line', code, code object) of the innermost frame of the failure outside
    torch and fxprune whose `self` is a module of `model` (the forward that failed)."""
    names = {id(m): n for n, m in model.named_modules()}
    found: tuple[str, str, str, Any] = ("", "", "", None)
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename.startswith(LIB_DIRS):
            continue
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            line = linecache.getline(frame.f_code.co_filename, lineno).strip()
            found = (names[id(owner)], f"{frame.f_code.co_filename}:{lineno}", line, frame.f_code)
    return found


def _literals(code: str, sizes: dict[int, int]) -> list[str]:
    """The integer literals of a source line that are sizes pruning changed ('64 (now 32)')."""
    hits = [int(v) for v in re.findall(r"(?<![\w.])\d+(?![\w.])", code.split("#")[0]) if int(v) in sizes]
    return [f"{v} (now {sizes[v]})" for v in dict.fromkeys(hits)]


def _literal_lines(code: Any, sizes: dict[int, int]) -> Iterator[tuple[str, str, list[str]]]:
    """('file:line', source, literals) of the lines of a function that hold a size pruning changed."""
    try:
        lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError):
        return
    for i, line in enumerate(lines):
        hits = _literals(line, sizes)
        if hits and not line.strip().startswith(("def ", "#", '"', "'")):
            yield f"{code.co_filename}:{first + i}", line.strip(), hits


def _suspects(model: nn.Module, sizes: dict[int, int]) -> list[tuple[str, str, str, list[str]]]:
    """Lines in the forwards of the user's own classes (not torch's, not fxprune's) holding a changed size."""
    out, seen = [], set()
    for name, module in model.named_modules():
        forward = type(module).forward
        code = getattr(forward, "__code__", None)
        if code is None or code in seen or code.co_filename.startswith(LIB_DIRS):
            continue
        seen.add(code)
        out += [(name, where, line, hits) for where, line, hits in _literal_lines(code, sizes)]
    return out


def _failure(model: nn.Module, detail: str, site: tuple[str, str, str, Any],
             sizes: dict[int, int]) -> UnsupportedError:
    name, where, code, func = site
    text = f"cannot write the pruned model back into your {type(model).__name__}: {detail}"
    if where:
        text += f"\n    in the forward of '{name or type(model).__name__}' " \
                f"({type(model.get_submodule(name)).__name__}) at {where}: {code}"
    hits = _literals(code, sizes) if where else []
    if hits:
        text += f"\n    that line holds the literal size {', '.join(hits)}, which no attribute controls"
    else:
        found = [(name, w, line, h) for w, line, h in _literal_lines(func, sizes)] if func is not None else []
        for owner, w, line, h in (found or _suspects(model, sizes))[:3]:
            text += (f"\n    the forward of '{owner or type(model).__name__}' holds the literal size {', '.join(h)}, "
                     f"which no attribute controls, at {w}: {line}")
    return UnsupportedError(
        text + f"\nYour {type(model).__name__} is unchanged. Use result.model (the pruned GraphModule, verified "
        "against the masked model), or compute that size from an attribute or x.shape in forward and call "
        "apply_to again.")


def _check(model: nn.Module, result: Any, sizes: dict[int, int]) -> None:
    """The user's forward on the written-back model must compute what result.model computes."""
    inputs = result.example_inputs
    want = run_model(result.model, inputs)
    try:
        got = run_model(model, inputs)
    except Exception as e:
        raise _failure(model, f"its forward fails at the pruned sizes ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})", _user_site(e, model), sizes) from e
    pairs = list(output_pairs(want, got))
    if not pairs:
        raise _failure(model, f"its output ({type(got).__name__}) has no tensor that matches one of the pruned "
                              f"model's ({type(want).__name__})", ("", "", "", None), sizes)
    for path, ref, out in pairs:
        ok, diff = tensors_close(ref, out, 1e-4, 1e-5)
        if not ok:
            shape = f"shape {tuple(out.shape)} vs {tuple(ref.shape)}" if out.shape != ref.shape else \
                f"max abs diff {diff:.3g}"
            raise _failure(model, f"its {path} differs from the pruned model's ({shape}); a size in its forward "
                                  "did not follow the pruning", ("", "", "", None), sizes)


def _changed_sizes(changes: list[_Change]) -> dict[int, int]:
    """Old size -> new size of every pruned tensor dim (and of flattened trailing dims), to name literals."""
    sizes: dict[int, int] = {}
    for ch in changes:
        for a, b in zip(ch.old.shape, ch.new.shape):
            if a != b and a > 1:
                sizes.setdefault(int(a), int(b))
    return sizes


def apply_to(model: nn.Module, result: Any) -> nn.Module:
    """Shrink `model` in place to `result.model` (the pruned GraphModule compiled from it) and check it.

    Args:
        model: the user's model the result was compiled from (its class, methods and config are kept).
        result: a `CompileResult` (from `fxprune.compile`, `fxprune.nni_masks.speedup_from_nni`, ...).

    Returns:
        `model` itself, physically smaller; its own forward checked against `result.model` on
        `result.example_inputs`. Notes (e.g. a config that cannot describe non-uniform pruning) are added
        to `result.report.notes`. Parameters are new objects: build the optimizer after this call.

    Raises:
        InputError: `result` was compiled from another model (a parameter it names does not exist).
        UnsupportedError: the model's own forward cannot run, or computes something else, at the pruned
            sizes (a literal size no attribute controls): names the module, source line and size. `model`
            is then exactly as it was.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"apply_to takes the nn.Module the result was compiled from, got {type(model).__name__}")
    changes = _plan(model, result.model)
    before = _config_values(model)
    undo = _Undo()
    try:
        _replace_tensors(changes, undo)
        _update_attributes(model, result, {ch.owner_name for ch in changes}, undo)
        notes = _update_config(model, before, undo)
        _check(model, result, _changed_sizes(changes))
    except BaseException:
        undo.restore()
        raise
    for note in notes:
        if note not in result.report.notes:
            result.report.notes.append(note)
    return model
