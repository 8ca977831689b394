"""The rule table: everything fxprune knows about an op, one row per op, keyed by every spelling.

A row is a `Rule`:
- `couple(c)` links the channels of the op's inputs, outputs and parameters (see `RuleContext`).
  Any dimension the rule does not mention is frozen: channels only flow where a rule says so.
- `rewrite(c)` (optional) fixes what the speedup pass makes stale once channels are gone: module
  attributes (`out_channels`, `groups`, ...) and shape constants held in the node's arguments.
- `macs(c)` (optional) counts multiply-accumulates from the shapes of the traced run.
- `out_param` names the parameter dimension that holds a layer's output channels (for config
  selection: `op_types=['Conv2d']` selects the group of `conv.weight` dim 0). For a function spelling
  (`F.linear`, `aten.addmm`) the weight is positional arg `weight_arg`.
- `mask(c)` (optional) makes the masked model compute what the pruned one will where zeroing inputs is
  not enough (a norm or a mean over a pruned dim divides by the channel count): the mask pass calls it
  and it swaps the node for a masked twin (see `passes.mask.MaskContext`); speedup swaps it back.

Keys: a module class (`nn.Conv2d`), a function (`torch.add`, `F.relu`, `operator.add`), a
Tensor method name (`"view"`), or an ATen overload (`torch.ops.aten.linear.default`, as the
torch.export front end spells ops). Add support for an op with `register_rule(key, rule)`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Rule", "RULES", "register_rule", "lookup", "elementwise", "ELEMENTWISE"]


@dataclass(frozen=True)
class Rule:
    """One row of the table. See the module docstring."""

    couple: Callable[[Any], None]
    rewrite: Callable[[Any], None] | None = None
    macs: Callable[[Any], int] | None = None
    out_param: tuple[str, int] | None = None
    weight_arg: int = 1
    mask: Callable[[Any], None] | None = None


RULES: dict[Any, Rule] = {}
_aten = torch.ops.aten


def register_rule(keys: Any | Iterable[Any], rule: Rule | Callable[[Any], None]) -> None:
    """Add or replace the row for one op spelling or several.

    Args:
        keys: a module class, function, Tensor method name, or a list of them.
        rule: a `Rule`, or a bare `couple` function (e.g. `fxprune.rules.elementwise`).

    Example:
        >>> fxprune.register_rule(my_gate, fxprune.rules.elementwise)
    """
    if not isinstance(rule, Rule):
        rule = Rule(couple=rule)
    if isinstance(keys, (list, tuple, set)):
        for k in keys:
            RULES[k] = rule
    else:
        RULES[keys] = rule


def lookup(key: Any) -> Rule | None:
    return RULES.get(key)


# ---------------------------------------------------------------------------------------------
# Couplings
# ---------------------------------------------------------------------------------------------


def elementwise(c: Any) -> None:
    """Output channel i is computed from input channel i only (broadcasting allowed)."""
    c.broadcast(c.out, c.inputs())


def metadata(c: Any) -> None:
    """The op reads sizes or dtypes only: its inputs stay free to change."""
    for key in c.inputs():
        c.touch(key)


def along_dims(keep: Callable[[Any], Iterable[int]]) -> Callable[[Any], None]:
    """Input and output share the dims `keep(c)` returns (same positions); the rest are mixed."""

    def couple(c: Any) -> None:
        x = c.inputs()[0]
        for d in keep(c):
            c.link((x, d), (c.out, d))

    return couple


def _channel_and_batch(c: Any) -> Iterable[int]:
    return (0, 1) if c.ndim(c.inputs()[0]) > 1 else (0,)


def _all_but(dims_of: Callable[[Any], Iterable[int]]) -> Callable[[Any], Iterable[int]]:
    def keep(c: Any) -> Iterable[int]:
        n = c.ndim(c.inputs()[0])
        mixed = {d % n for d in dims_of(c)}
        return [d for d in range(n) if d not in mixed]

    return keep


def _softmax_dim(c: Any) -> Iterable[int]:
    d = c.module.dim if c.module is not None else c.arg(1, "dim")
    return [d if d is not None else -1]


per_channel = along_dims(_channel_and_batch)


def _per_channel_params(*names: str) -> Callable[[Any], None]:
    """Norm layers and friends: channel dim 1 (dim 0 for unbatched 1-D) owns one entry of each param."""

    def couple(c: Any) -> None:
        x = c.inputs()[0]
        ch = 1 if c.ndim(x) > 1 else 0
        c.link((x, ch), (c.out, ch))
        c.link((x, 0), (c.out, 0))
        params = [c.param(n) for n in names] if c.module is not None else c.inputs()[1:]
        for p in params:
            if p is not None and c.shape(p)[0] == c.shape(x)[ch]:
                c.link((x, ch), (p, 0))

    return couple


def _group_link(c: Any, full: str, w_full: tuple[str, int], part: str, w_part: tuple[str, int],
                groups: int) -> None:
    """Couple a grouped contraction: `full` owns one weight row each (w_full), `part` is split in groups.

    g == 1: part channel j <-> weight slice j. Depthwise-like (one part channel per group): removing
    part channel k removes group k with all its `full` channels. Otherwise channels keep their
    position inside every group: part j of each group share weight slice j, and `full` channel i of
    each group are removed together, so the groups stay equal.
    """
    c.link(w_full, (full, 1))
    n_part, n_full = c.shape(part)[1], c.shape(full)[1]
    a, b = n_part // groups, n_full // groups
    if groups == 1:
        c.link(w_part, (part, 1))
    elif a == 1:
        c.link((part, 1), (full, 1), np.arange(n_full) // b)
        c.touch(*w_part)
    else:
        c.link(w_part, (part, 1), np.tile(np.arange(a), groups))
        c.link((full, 1), (full, 1), np.arange(n_full) % b)
    c.link((part, 0), (full, 0))


def _groups_index(c: Any) -> int:
    """Position of `groups` in a functional conv's args (F.conv*, F.conv_transpose*, aten.conv*: 6)."""
    return 8 if c.node.target is _aten.convolution.default else 6


def _conv_operands(c: Any) -> tuple[str, str, str | None, int, bool]:
    if c.module is not None:
        m = c.module
        return c.inputs()[0], c.param("weight"), c.param("bias"), m.groups, bool(getattr(m, "transposed", False))
    x, w, b = c.tensor(c.arg(0, "input")), c.tensor(c.arg(1, "weight")), c.tensor(c.arg(2, "bias"))
    if c.node.target is _aten.convolution.default:
        transposed = bool(c.arg(6))
    else:
        transposed = c.target_name().startswith("conv_transpose")
    return x, w, b, c.arg(_groups_index(c), "groups", 1), transposed


def conv(c: Any) -> None:
    """Conv/ConvTranspose, module or functional, any groups."""
    x, w, b, groups, transposed = _conv_operands(c)
    if transposed:  # weight (Cin, Cout/g, *k)
        _group_link(c, x, (w, 0), c.out, (w, 1), groups)
    else:  # weight (Cout, Cin/g, *k)
        _group_link(c, c.out, (w, 0), x, (w, 1), groups)
    if b is not None:
        c.link((b, 0), (c.out, 1))


def _rewrite_conv(c: Any) -> None:
    x, w, _, _, transposed = _conv_operands(c)
    weight = c.value(w)
    n_in, n_out = c.new_shape(x)[1], c.new_shape(c.out)[1]
    groups = n_out // weight.shape[1] if transposed else n_in // weight.shape[1]
    if c.module is not None:
        c.module.in_channels, c.module.out_channels, c.module.groups = n_in, n_out, groups
    else:
        c.set_arg(_groups_index(c), "groups", groups)


def _conv_macs(c: Any) -> int:
    x, w, _, _, transposed = _conv_operands(c)
    weight = c.shape(w)
    per_out = math.prod(weight[1:])
    if transposed:  # every input element is scattered into Cout/g * k outputs
        return math.prod(c.shape(x)) * per_out
    return math.prod(c.shape(c.out)) * per_out


def linear(c: Any) -> None:
    """y = x W^T + b over the last dim; leading dims pass through."""
    if c.module is not None:
        x, w, b = c.inputs()[0], c.param("weight"), c.param("bias")
    else:
        x, w, b = c.tensor(c.arg(0, "input")), c.tensor(c.arg(1, "weight")), c.tensor(c.arg(2, "bias"))
    c.link((w, 0), (c.out, -1))
    c.link((w, 1), (x, -1))
    if b is not None:
        c.link((b, 0), (c.out, -1))
    for d in range(c.ndim(x) - 1):
        c.link((x, d), (c.out, d))


def _rewrite_linear(c: Any) -> None:
    if c.module is not None:
        c.module.out_features, c.module.in_features = c.module.weight.shape


def _linear_macs(c: Any) -> int:
    x = c.inputs()[0]
    return math.prod(c.shape(c.out)) * c.shape(x)[-1]


def matmul(c: Any) -> None:
    """a @ b over the last two dims, batch dims broadcast; the contracted dim couples a and b."""
    a, b = c.tensor(c.arg(0, "input")), c.tensor(c.arg(1, "other"))
    if c.ndim(a) < 2 or c.ndim(b) < 2:
        raise ValueError("1-D matmul operands")
    c.link((a, -1), (b, -2))
    c.link((a, -2), (c.out, -2))
    c.link((b, -1), (c.out, -1))
    for key in (a, b):
        shift = c.ndim(c.out) - c.ndim(key)
        for d in range(c.ndim(key) - 2):
            if c.shape(key)[d] == c.shape(c.out)[d + shift]:
                c.link((key, d), (c.out, d + shift))
            else:
                c.touch(key, d)


def _matmul_macs(c: Any) -> int:
    a = c.tensor(c.arg(0, "input"))
    return math.prod(c.shape(c.out)) * c.shape(a)[-1]


def group_norm(c: Any) -> None:
    """GroupNorm: a whole normalisation group is the unit (other groups' statistics stay put)."""
    x = c.inputs()[0]
    m = c.module
    per = c.shape(x)[1] // m.num_groups
    c.link((x, 1), (c.out, 1))
    c.link((x, 0), (c.out, 0))
    c.link((x, 1), (x, 1), (np.arange(c.shape(x)[1]) // per) * per)
    for n in ("weight", "bias"):
        p = c.param(n)
        if p is not None:
            c.link((x, 1), (p, 0))


def _rewrite_group_norm(c: Any) -> None:
    m = c.module
    per = m.num_channels // m.num_groups
    m.num_channels = c.new_shape(c.out)[1]
    m.num_groups = m.num_channels // per


def _rewrite_num_features(c: Any) -> None:
    if hasattr(c.module, "num_features"):
        c.module.num_features = c.new_shape(c.out)[1 if len(c.new_shape(c.out)) > 1 else 0]


def prelu(c: Any) -> None:
    x = c.inputs()[0]
    w = c.param("weight")
    elementwise(c)
    if c.shape(w)[0] > 1:
        c.link((x, 1 if c.ndim(x) > 1 else 0), (w, 0))


def _rewrite_prelu(c: Any) -> None:
    c.module.num_parameters = c.module.weight.shape[0]


HIDDEN_REASON = "hidden size: set prune_hidden=True to prune it"


def _norm_operands(c: Any) -> tuple[str, int, list[str]]:
    """(input, number of normalised trailing dims, [weight, bias]) of LayerNorm / RMSNorm, any spelling."""
    if c.module is not None:
        shape = c.module.normalized_shape
        params = [c.param("weight"), c.param("bias")]
    else:
        shape = c.arg(1, "normalized_shape")
        params = [c.tensor(c.arg(2, "weight")), c.tensor(c.arg(3, "bias"))]
    return c.inputs()[0], len(shape) if isinstance(shape, (list, tuple)) else 1, [p for p in params if p]


def layer_norm(c: Any) -> None:
    """LayerNorm/RMSNorm mix their normalised (trailing) dims; leading dims pass through.

    Over one normalised dim with `prune_hidden`, its channels are coupled with the weight and bias:
    the masked model normalises over the kept channels only (see `mask_norm`), as the pruned one does.
    Otherwise that dim is frozen as the hidden size.
    """
    x, k, params = _norm_operands(c)
    n = c.ndim(x)
    for d in range(n - k):
        c.link((x, d), (c.out, d))
    c.role(x, -1, "hidden")
    if k == 1 and c.options.prune_hidden:
        c.link((x, -1), (c.out, -1))
        for p in params:
            c.link((p, 0), (c.out, -1))
        return
    for d in range(n - k, n):
        c.freeze(x, d, HIDDEN_REASON if k == 1 else "normalised over several dims")
        c.freeze(c.out, d, HIDDEN_REASON if k == 1 else "normalised over several dims")
    for p in params:
        c.touch(p)


def masked_layer_norm(x: torch.Tensor, normalized_shape: Any, weight: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, eps: float = 1e-5, *_: Any, keep: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim with statistics over the channels where `keep` is 1 (others give 0)."""
    n = keep.sum()
    mean = (x * keep).sum(-1, keepdim=True) / n
    var = ((x - mean) * keep).pow(2).sum(-1, keepdim=True) / n
    y = (x - mean) * torch.rsqrt(var + eps)
    y = y * weight if weight is not None else y
    return (y + bias if bias is not None else y) * keep


def masked_rms_norm(x: torch.Tensor, normalized_shape: Any, weight: torch.Tensor | None = None,
                    eps: float | None = None, *, keep: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dim with the mean square over the channels where `keep` is 1."""
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x * torch.rsqrt((x * keep).pow(2).sum(-1, keepdim=True) / keep.sum() + eps)
    return (y * weight if weight is not None else y) * keep


def masked_mean(x: torch.Tensor, dim: Any, keepdim: bool = False, *_: Any, keep: torch.Tensor, **__: Any
                ) -> torch.Tensor:
    """Mean over `dim` counting only the elements where `keep` (broadcast to x) is 1."""
    keep = keep.expand_as(x)
    return (x * keep).sum(dim, keepdim=keepdim) / keep.sum(dim, keepdim=keepdim)


def _mask_norm(c: Any) -> None:
    x = _norm_operands(c)[0]
    keep = c.keep_buffer(x, -1)
    if keep is None:
        return
    rms = (type(c.module).__name__ if c.module is not None else c.target_name()) in ("rms_norm", "RMSNorm")
    if c.module is not None:  # the module call becomes its function, reading the module's parameters
        m = c.module
        w, b = (c.get_attr(f"{c.node.target}.{n}") if getattr(m, n, None) is not None else None
                for n in ("weight", "bias"))
        src, shape = c.node.args[0], tuple(m.normalized_shape)
        args = (src, shape, w, m.eps) if rms else (src, shape, w, b, m.eps)
        c.swap(masked_rms_norm if rms else masked_layer_norm, F.rms_norm if rms else F.layer_norm, args, keep)
    else:
        c.swap(masked_rms_norm if rms else masked_layer_norm, c.node.target, c.node.args, keep)


def _mask_mean(c: Any) -> None:
    if c.target_name() != "mean":
        return
    x = c.inputs()[0]
    n = c.ndim(x)
    dims = c.arg(1, "dim")
    for d in (dims if isinstance(dims, (list, tuple)) else [dims]):
        keep = c.keep_buffer(x, d % n)
        if keep is not None:
            c.swap(masked_mean, c.node.target, c.node.args, keep)
            return


def _rewrite_layer_norm(c: Any) -> None:
    new = c.new_shape(c.out)[-1]
    if c.module is not None:
        c.module.normalized_shape = (*c.module.normalized_shape[:-1], new)
    else:
        shape = c.arg(1, "normalized_shape")
        c.set_arg(1, "normalized_shape", [*shape[:-1], new])


def embedding(c: Any) -> None:
    """Embedding lookup: the table's dim 1 is the output's last dim; the vocabulary (dim 0) stays."""
    if c.module is not None:
        idx, w = c.inputs()[0], c.param("weight")
    elif c.node.target is F.embedding:
        idx, w = c.tensor(c.arg(0, "input")), c.tensor(c.arg(1, "weight"))
    else:
        w, idx = c.tensor(c.arg(0, "weight")), c.tensor(c.arg(1, "indices"))
    c.link((w, 1), (c.out, -1))
    c.role(w, 1, "hidden")
    c.freeze(w, 0, "vocabulary of an embedding table")
    for d in range(c.ndim(idx)):
        c.link((idx, d), (c.out, d))


def _rewrite_embedding(c: Any) -> None:
    if c.module is not None:
        c.module.embedding_dim = c.module.weight.shape[1]


def _sdpa_operands(c: Any) -> tuple[str, str, str, str | None]:
    return (c.tensor(c.arg(0, "query")), c.tensor(c.arg(1, "key")), c.tensor(c.arg(2, "value")),
            c.tensor(c.arg(3, "attn_mask")))


def sdpa(c: Any) -> None:
    """scaled_dot_product_attention: q and k share head_dim, v and the output share theirs, heads are
    shared (grouped-query: kv head j serves q heads j*rep .. j*rep+rep-1), the mask broadcasts."""
    q, k, v, mask = _sdpa_operands(c)
    c.link((q, -1), (k, -1))
    c.link((v, -1), (c.out, -1))
    c.link((q, -2), (c.out, -2))
    c.link((k, -2), (v, -2))
    for d in range(c.ndim(q) - 2):
        c.link((q, d), (c.out, d))
        c.link((k, d), (v, d))
        n_q, n_k = c.shape(q)[d], c.shape(k)[d]
        c.link((k, d), (q, d), np.arange(n_q) // (n_q // n_k))
    c.role(q, -1, "head_dim")
    if c.ndim(q) >= 3:
        c.role(q, -3, "heads")
    if mask is not None:
        shift = c.ndim(c.out) - c.ndim(mask)
        for d, size in enumerate(c.shape(mask)):
            if size == c.shape(c.out)[d + shift] and d + shift < c.ndim(c.out) - 1:
                c.link((mask, d), (c.out, d + shift))
            elif size == c.shape(k)[-2] and d + shift == c.ndim(c.out) - 1:
                c.link((mask, d), (k, -2))
            else:
                c.touch(mask, d)


def _rewrite_sdpa(c: Any) -> None:
    q = _sdpa_operands(c)[0]
    if c.arg(6, "scale") is None and c.new_shape(q)[-1] != c.old_shape(q)[-1]:
        c.set_arg(6, "scale", 1 / math.sqrt(c.old_shape(q)[-1]))  # the dense head_dim's scale


def _sdpa_macs(c: Any) -> int:
    q, k, v, _ = _sdpa_operands(c)
    return math.prod(c.shape(q)[:-1]) * c.shape(k)[-2] * (c.shape(q)[-1] + c.shape(v)[-1])


def slice_tensor(c: Any) -> None:
    """aten.slice(x, dim, start, end, step): a window of dim; other dims pass through."""
    x = c.inputs()[0]
    dim = c.arg(1, "dim", 0) % c.ndim(x)
    start, stop, step = slice(c.arg(2, "start"), c.arg(3, "end"), c.arg(4, "step", 1)).indices(c.shape(x)[dim])
    if step != 1:
        raise ValueError("strided slice")
    c.link((x, dim), (c.out, dim), start + np.arange(max(stop - start, 0)))
    c.same(x, c.out, (d for d in range(c.ndim(x)) if d != dim))


def _rewrite_slice(c: Any) -> None:
    x = c.inputs()[0]
    dim = c.arg(1, "dim", 0) % len(c.old_shape(x))
    kept = c.kept(x, dim)
    if kept is None:
        return
    start, stop, _ = slice(c.arg(2, "start"), c.arg(3, "end")).indices(c.old_shape(x)[dim])
    c.set_arg(2, "start", c.new_index(x, dim, start))
    c.set_arg(3, "end", c.new_index(x, dim, stop))


def select(c: Any) -> None:
    """aten.select(x, dim, index): that element of dim must stay; the other dims pass through."""
    x = c.inputs()[0]
    dim = c.arg(1, "dim") % c.ndim(x)
    index = c.arg(2, "index") % c.shape(x)[dim]
    c.freeze(x, dim, "indexed by an integer", np.array([index]))
    for d in range(c.ndim(x)):
        if d != dim:
            c.link((x, d), (c.out, d - (d > dim)))


def _rewrite_select(c: Any) -> None:
    x = c.inputs()[0]
    dim = c.arg(1, "dim") % len(c.old_shape(x))
    kept = c.kept(x, dim)
    if kept is not None:
        c.set_arg(2, "index", c.new_index(x, dim, c.arg(2, "index") % c.old_shape(x)[dim]))


def cat(c: Any) -> None:
    """Concat: input k occupies a window of the output at its offset; other dims are shared."""
    tensors = c.arg(0, "tensors")
    dim = c.arg(1, "dim", 0)
    keys = [c.tensor(t) for t in tensors]
    dim %= c.ndim(c.out)
    offset = 0
    for key in keys:
        size = c.shape(key)[dim]
        c.link((c.out, dim), (key, dim), offset + np.arange(size))
        offset += size
        c.same(key, c.out, (d for d in range(c.ndim(key)) if d != dim))


def _windows(c: Any) -> tuple[str, int, list[tuple[int, int]]]:
    """(input, dim, [(start, size)] per item), sizes from the traced items' shapes: split sizes may be
    computed in the graph (`x.size(1) - s`), and chunk may return fewer items than asked for."""
    x = c.inputs()[0]
    dim = c.arg(2, "dim", 0) % c.ndim(x)
    sizes, k = [], 0
    while f"{c.node.name}[{k}]" in c.shapes:
        sizes.append(c.shapes[f"{c.node.name}[{k}]"][dim])
        k += 1
    if sum(sizes) != c.shape(x)[dim]:
        raise ValueError(f"split items cover {sum(sizes)} of {c.shape(x)[dim]} elements")
    starts = np.cumsum([0] + sizes[:-1]).tolist()
    return x, dim, list(zip(starts, sizes))


def split(c: Any) -> None:
    """split/chunk: item k is a window of the input; the node's items are `name[k]`."""
    x, dim, windows = _windows(c)
    for k, (start, size) in enumerate(windows):
        item = f"{c.node.name}[{k}]"
        c.link((x, dim), (item, dim), start + np.arange(size))
        c.same(x, item, (d for d in range(c.ndim(x)) if d != dim))


def _rewrite_split(c: Any) -> None:
    x, dim, windows = _windows(c)
    kept = c.kept(x, dim)
    if kept is None:
        return
    sizes = [c.new_index(x, dim, s + n) - c.new_index(x, dim, s) for s, n in windows]
    c.replace(torch.split, (c.node.args[0], sizes), {"dim": dim})


def getitem(c: Any) -> None:
    """Item of a tuple output (alias), or tensor indexing with slices / ints / None / Ellipsis."""
    src, index = c.arg(0), c.arg(1)
    key = c.tensor(src)
    if key is None:  # item of a tuple (split, chunk, ...) or of a size
        item = f"{src.name}[{index}]" if hasattr(src, "name") else None
        if item in c.g.shapes and c.out is not None:
            c.same(item, c.out)
        return
    if c.tensor(index) is not None:
        _gather_rows(c, key, c.tensor(index))
        return
    for in_dim, out_dim, idx in _index_plan(c.shape(key), index):
        if out_dim is None:  # an int index picks one channel: that channel must stay
            c.freeze(key, in_dim, "indexed by an integer", np.array([idx % c.shape(key)[in_dim]]))
        elif isinstance(idx, slice):
            start, stop, step = idx.indices(c.shape(key)[in_dim])
            if step != 1:
                raise ValueError("strided slice")
            c.link((key, in_dim), (c.out, out_dim), start + np.arange(max(stop - start, 0)))


def _gather_rows(c: Any, key: str, index: str) -> None:
    """x[idx] with one integer tensor: rows of dim 0 are picked (dim 0 stays), the other dims pass through
    (a relative-position bias table indexed by a buffer keeps its heads dim prunable)."""
    c.freeze(key, 0, "rows picked by an index tensor")
    c.touch(index)
    shift = c.ndim(index) - 1
    for d in range(1, c.ndim(key)):
        c.link((key, d), (c.out, d + shift))


def index_tensor(c: Any) -> None:
    """aten.index.Tensor(x, [idx]): one index tensor on dim 0, as `x[idx]`; anything else is opaque."""
    indices = c.arg(1, "indices")
    if len(indices) == 1 and c.tensor(indices[0]) is not None:
        _gather_rows(c, c.inputs()[0], c.tensor(indices[0]))
    else:
        opaque(c)


def _index_plan(shape: tuple[int, ...], index: Any) -> list[tuple[int, int | None, Any]]:
    """(input dim, output dim or None, slice or int) for a tensor index; raises on tensor indices."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(i, (torch.fx.Node, list, torch.Tensor)) for i in items):
        raise ValueError("advanced (tensor) indexing")
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    plan, d_in, d_out = [], 0, 0
    for i in items:
        if i is Ellipsis:
            for _ in range(len(shape) - n_real):
                plan.append((d_in, d_out, slice(None)))
                d_in, d_out = d_in + 1, d_out + 1
        elif i is None:
            d_out += 1
        elif isinstance(i, int):
            plan.append((d_in, None, i))
            d_in += 1
        else:
            plan.append((d_in, d_out, i))
            d_in, d_out = d_in + 1, d_out + 1
    while d_in < len(shape):
        plan.append((d_in, d_out, slice(None)))
        d_in, d_out = d_in + 1, d_out + 1
    return plan


def _rewrite_getitem(c: Any) -> None:
    src, index = c.node.args
    key = c.tensor(src)
    if key is None or c.tensor(index) is not None:
        return
    items = list(index) if isinstance(index, tuple) else [index]
    plan = _index_plan(c.old_shape(key), index)
    positions = [k for k, i in enumerate(items) if i is not None and i is not Ellipsis]
    changed = False
    for (in_dim, _, idx), pos in zip([p for p in plan if p[2] is not None], positions + [None] * len(plan)):
        kept = c.kept(key, in_dim)
        if kept is None or pos is None or idx == slice(None):
            continue
        if isinstance(idx, slice):
            start, stop, _ = idx.indices(c.old_shape(key)[in_dim])
            items[pos] = slice(c.new_index(key, in_dim, start), c.new_index(key, in_dim, stop))
        else:
            items[pos] = c.new_index(key, in_dim, idx % c.old_shape(key)[in_dim])
        changed = True
    if changed:
        c.node.args = (src, tuple(items) if isinstance(index, tuple) else items[0])


def _shape_chunks(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Align two shapes of equal numel into chunks of dims with equal products (size-1 dims skipped)."""
    ia = [d for d, s in enumerate(a) if s != 1]
    ib = [d for d, s in enumerate(b) if s != 1]
    chunks, i, j = [], 0, 0
    while i < len(ia) and j < len(ib):
        da, db = [ia[i]], [ib[j]]
        pa, pb = a[ia[i]], b[ib[j]]
        while pa != pb:
            if pa < pb and i + 1 < len(ia):
                i += 1
                da.append(ia[i])
                pa *= a[ia[i]]
            elif pb < pa and j + 1 < len(ib):
                j += 1
                db.append(ib[j])
                pb *= b[ib[j]]
            else:
                return None
        chunks.append((da, db))
        i, j = i + 1, j + 1
    return chunks if i == len(ia) and j == len(ib) else None


def _size_args(c: Any) -> list[Any] | None:
    """The size arguments of view/reshape/expand, one per output dim (ints, -1 or Nodes), else None."""
    args = c.node.args
    if c.node.op == "call_method" and c.target_name() in ("view", "reshape", "expand"):
        sizes = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
    elif c.node.op == "call_function" and c.target_name() in ("view", "reshape", "_unsafe_view", "expand"):
        sizes = c.arg(1, "shape", c.arg(1, "size"))
    else:
        return None
    return list(sizes) if isinstance(sizes, (list, tuple)) else None


def _split_carrier(c: Any, db: list[int]) -> int:
    """Which factor of a split dim carries the channels: the heads factor (db[-2]) when the config says
    heads and the view's sizes for it and for head_dim are constants the speedup pass can rewrite (or
    -1); else the innermost factor (head_dim; the channel shuffle, whose sizes are computed at run time)."""
    if c.options.split != "heads" or len(db) < 2:
        return db[-1]
    sizes = _size_args(c)
    if sizes is None or len(sizes) != len(c.shape(c.out)):
        return db[-1]
    outer, inner = sizes[db[-2]], sizes[db[-1]]
    return db[-2] if isinstance(outer, int) and isinstance(inner, int) else db[-1]


def reshape(c: Any) -> None:
    """view/reshape/flatten/unflatten/squeeze/unsqueeze, from the traced in/out shapes.

    Dims that map 1:1 are shared. When one dim splits into several (C -> heads x head_dim), its
    channels follow one factor, uniformly across the others: the heads factor where the config asks
    for heads and the view's sizes allow it (see `_split_carrier`), else the innermost factor (head_dim,
    the channel-shuffle pattern). When several dims merge into one (C x H x W -> CHW), the merged
    channels follow the innermost factor that is still free (C for a flatten after a conv, heads
    after attention). Anything else is frozen.
    """
    x = c.inputs()[0]
    a, b = c.shape(x), c.shape(c.out)
    chunks = _shape_chunks(a, b)
    if chunks is None:
        raise ValueError(f"cannot align shapes {a} -> {b}")
    for d in range(len(a)):
        if a[d] == 1:
            c.touch(x, d)
    for d in range(len(b)):
        if b[d] == 1:
            c.touch(c.out, d)
    for da, db in chunks:
        if len(da) == 1 and len(db) == 1:
            c.link((x, da[0]), (c.out, db[0]))
        elif len(da) == 1:
            j = _split_carrier(c, db)
            stride = math.prod(b[d] for d in db if d > j)
            c.link((c.out, j), (x, da[0]), (np.arange(a[da[0]]) // stride) % b[j])
            c.role(c.out, j, "heads" if j != db[-1] else "head_dim")
        elif len(db) == 1:
            free = [d for d in da if not c.is_frozen(x, d)]
            if free:
                j = free[-1]
                stride = math.prod(a[d] for d in da if d > j)
                c.link((x, j), (c.out, db[0]), (np.arange(b[db[0]]) // stride) % a[j])


def _rewrite_reshape(c: Any) -> None:
    """Replace stale sizes in view/reshape/expand arguments by the pruned sizes: an int constant becomes
    the new size; a size computed at run time (a Node) whose dim shrank becomes -1 (inferred)."""
    new, old = c.new_shape(c.out), c.old_shape(c.out)
    if new == old:
        return
    sizes = _size_args(c)
    if sizes is None or len(sizes) != len(new):
        raise ValueError(f"cannot map the size arguments onto a rank-{len(new)} result")
    fixed = []
    for s, n, o in zip(sizes, new, old):
        if isinstance(s, int) and s == o:
            fixed.append(n)
        elif isinstance(s, torch.fx.Node) and n != o:
            fixed.append(-1)
        else:
            fixed.append(s)
    if fixed.count(-1) > 1 and c.target_name() != "expand":
        raise ValueError(f"sizes {sizes} -> {fixed}: more than one size is computed at run time and changes; "
                         "write the view with one -1 or with constants")
    args = list(c.node.args)
    if c.node.op == "call_method" and not (len(args) == 2 and isinstance(args[1], (list, tuple))):
        c.node.args = (args[0], *fixed)
    else:
        c.set_arg(1, "shape" if c.target_name() != "expand" else "size", type(args[1])(fixed)
                  if len(args) > 1 and isinstance(args[1], (list, tuple)) else fixed)


def _rewrite_unflatten(c: Any) -> None:
    new, old = c.new_shape(c.out), c.old_shape(c.out)
    if new == old:
        return
    dim = c.arg(1, "dim") % len(c.old_shape(c.inputs()[0]))
    sizes = c.arg(2, "sizes")
    fixed = tuple(n if s != -1 else s for s, n in zip(sizes, new[dim:dim + len(sizes)]))
    c.set_arg(2, "sizes", fixed)


def permute(c: Any) -> None:
    x = c.inputs()[0]
    n = c.ndim(x)
    if c.target_name() in ("transpose", "swapaxes", "swapdims"):
        d0, d1 = c.arg(1, "dim0") % n, c.arg(2, "dim1") % n
        perm = list(range(n))
        perm[d0], perm[d1] = perm[d1], perm[d0]
    elif c.target_name() == "t":
        perm = list(range(n))[::-1]
    else:
        perm = c.node.args[1:] if c.node.op == "call_method" and not isinstance(c.arg(1), (list, tuple)) \
            else list(c.arg(1, "dims"))
    for out_d, in_d in enumerate(perm):
        c.link((x, in_d % n), (c.out, out_d))


def reduce_dims(c: Any) -> None:
    """mean/sum/amax/... over some dims (keepdim or not): the other dims pass through."""
    x = c.inputs()[0]
    n = c.ndim(x)
    dims = c.arg(1, "dim")
    if dims is None:
        return
    dims = {d % n for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
    keepdim = c.arg(2, "keepdim", False)
    averages = c.target_name() in ("mean", "sum") and c.options.prune_hidden
    out_d = 0
    for d in range(n):
        if d in dims:
            if averages:  # zeroed channels add nothing to a sum; a mean is made to count kept ones (mask_mean)
                c.reduce(x, d)
            out_d += 1 if keepdim else 0
            continue
        c.link((x, d), (c.out, out_d))
        out_d += 1


def expand(c: Any) -> None:
    """expand/expand_as: broadcast size-1 dims, share the rest."""
    x = c.inputs()[0]
    shift = c.ndim(c.out) - c.ndim(x)
    for d, size in enumerate(c.shape(x)):
        if size == c.shape(c.out)[d + shift]:
            c.link((x, d), (c.out, d + shift))
        else:
            c.touch(x, d)
    for other in c.inputs()[1:]:
        c.touch(other)


def first_input(c: Any) -> None:
    """Same tensor out as in (contiguous, clone, to, type_as, ...): other tensor args are templates."""
    ins = c.inputs()
    c.same(ins[0], c.out)
    for other in ins[1:]:
        c.touch(other)


def addmm(c: Any) -> None:
    """addmm(bias, x, w) = bias + x @ w (Hugging Face Conv1D: w is (in, out))."""
    bias, x, w = c.tensor(c.arg(0)), c.tensor(c.arg(1)), c.tensor(c.arg(2))
    c.link((x, 1), (w, 0))
    c.link((w, 1), (c.out, 1))
    c.link((x, 0), (c.out, 0))
    if bias is not None:
        c.broadcast(c.out, [bias])


def _addmm_macs(c: Any) -> int:
    return math.prod(c.shape(c.out)) * c.shape(c.tensor(c.arg(1)))[1]


def created(c: Any) -> None:
    """A new tensor from sizes or scalars (arange, zeros, full): no channels flow into it."""


def opaque(c: Any) -> None:
    """The op moves elements across positions in ways no coupling describes (gather, index, diff)."""
    for key in c.inputs() + ([c.out] if c.out else []):
        for d in range(c.ndim(key)):
            c.freeze(key, d, f"{c.target_name()} reads elements by index")


def _roll_dims(c: Any) -> Iterable[int]:
    dims = c.arg(2, "dims", ())
    return dims if isinstance(dims, (list, tuple)) else [dims]


def _cumsum_dim(c: Any) -> Iterable[int]:
    return [c.arg(1, "dim")]


def pad(c: Any) -> None:
    """F.pad: dims that are not padded pass through."""
    x = c.inputs()[0]
    pads = c.arg(1, "pad")
    n_padded = len(pads) // 2
    for d in range(c.ndim(x) - n_padded):
        c.link((x, d), (c.out, d))


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

_num_features = Rule(_per_channel_params("weight", "bias", "running_mean", "running_var"),
                     rewrite=_rewrite_num_features, out_param=("weight", 0))
_conv = Rule(conv, rewrite=_rewrite_conv, macs=_conv_macs, out_param=("weight", 0))
_conv_t = Rule(conv, rewrite=_rewrite_conv, macs=_conv_macs, out_param=("weight", 1))
_elementwise = Rule(elementwise)
_reshape = Rule(reshape, rewrite=_rewrite_reshape)

register_rule([nn.Conv1d, nn.Conv2d, nn.Conv3d, F.conv1d, F.conv2d, F.conv3d], _conv)
register_rule([nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d], _conv_t)
register_rule([nn.Linear, F.linear], Rule(linear, rewrite=_rewrite_linear, macs=_linear_macs,
                                          out_param=("weight", 0)))
register_rule([torch.matmul, operator.matmul, torch.bmm, "matmul", "bmm"], Rule(matmul, macs=_matmul_macs))
register_rule([nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d], _num_features)
register_rule(nn.GroupNorm, Rule(group_norm, rewrite=_rewrite_group_norm, out_param=("weight", 0)))
register_rule(nn.PReLU, Rule(prelu, rewrite=_rewrite_prelu))

ELEMENTWISE: list[Any] = [
    # activation modules
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish, nn.Softsign,
    nn.Tanhshrink, nn.LogSigmoid, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AlphaDropout,
    # functions
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.gelu, F.silu, F.sigmoid, F.tanh, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.elu, F.selu, F.celu, F.softplus, F.mish, F.softsign, F.logsigmoid,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.exp, torch.abs, torch.neg, torch.sqrt,
    torch.rsqrt, torch.clamp, torch.clip, torch.square, torch.erf, torch.sin, torch.cos,
    torch.add, torch.sub, torch.mul, torch.div, torch.true_divide, torch.maximum, torch.minimum,
    torch.where, torch.pow,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv,
    # Tensor methods
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "abs", "neg", "sqrt", "rsqrt",
    "clamp", "clamp_", "clip", "square", "pow", "add", "add_", "sub", "sub_", "mul", "mul_", "div",
    "div_", "true_divide", "maximum", "minimum", "masked_fill", "erf", "sin", "cos",
]
register_rule(ELEMENTWISE, _elementwise)
register_rule(["contiguous", "clone", "float", "half", "double", "to", "type_as", "detach", "requires_grad_",
               torch.clone, torch.detach], Rule(first_input))
register_rule(["size", "dim", "numel", getattr], Rule(metadata))

_pool = Rule(per_channel)
register_rule([nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
               nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
               nn.UpsamplingBilinear2d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d,
               nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d,
               nn.ReplicationPad2d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
               F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
               F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate,
               F.upsample, F.upsample_nearest, F.upsample_bilinear, torch.max_pool2d, torch.avg_pool1d,
               torch.adaptive_avg_pool1d], _pool)
register_rule(F.pad, Rule(pad))
register_rule([nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
               "softmax", "log_softmax"], Rule(along_dims(_all_but(_softmax_dim))))

register_rule([torch.cat, torch.concat, torch.concatenate], Rule(cat))
register_rule([torch.split, torch.chunk, "split", "chunk"], Rule(split, rewrite=_rewrite_split))
register_rule(operator.getitem, Rule(getitem, rewrite=_rewrite_getitem))
register_rule(["view", "reshape", torch.reshape], _reshape)
register_rule([torch.flatten, "flatten", nn.Flatten, torch.squeeze, "squeeze", torch.unsqueeze, "unsqueeze",
               "view_as", "reshape_as"], Rule(reshape))
register_rule([nn.Unflatten, "unflatten", torch.unflatten], Rule(reshape, rewrite=_rewrite_unflatten))
register_rule([torch.permute, "permute", torch.transpose, "transpose", torch.swapaxes, "swapaxes",
               "swapdims", "t", torch.t], Rule(permute))
register_rule(["expand", "expand_as"], Rule(expand, rewrite=_rewrite_reshape))
register_rule([torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"],
              Rule(reduce_dims, mask=_mask_mean))

# ---------------------------------------------------------------------------------------------
# ATen spellings (the torch.export front end): the same couplings, keyed by overload
# ---------------------------------------------------------------------------------------------

register_rule([_aten.conv1d.default, _aten.conv2d.default, _aten.conv3d.default, _aten.convolution.default], _conv)
register_rule([_aten.conv_transpose1d.default, _aten.conv_transpose2d.input, _aten.conv_transpose3d.input], _conv_t)
register_rule(_aten.linear.default, Rule(linear, macs=_linear_macs, out_param=("weight", 0)))
register_rule(_aten.addmm.default, Rule(addmm, macs=_addmm_macs, out_param=("weight", 1), weight_arg=2))
register_rule([_aten.arange.default, _aten.arange.start, _aten.arange.start_step, _aten.zeros.default,
               _aten.ones.default, _aten.full.default, _aten.empty.memory_format, _aten.scalar_tensor.default,
               _aten.new_ones.default, _aten.new_zeros.default, _aten.new_full.default, _aten.new_empty.default],
              Rule(created))
register_rule(_aten.index.Tensor, Rule(index_tensor))
register_rule([_aten.gather.default, _aten.diff.default, _aten.repeat.default, torch.gather,
               "gather", "repeat", torch.ops.higher_order.wrap_with_set_grad_enabled], Rule(opaque))
register_rule([_aten.pad.default, _aten.constant_pad_nd.default], Rule(pad))
register_rule([_aten.roll.default, torch.roll, "roll"], Rule(along_dims(_all_but(_roll_dims))))
register_rule([_aten.cumsum.default, torch.cumsum, "cumsum"], Rule(along_dims(_all_but(_cumsum_dim))))
register_rule([_aten.zeros_like.default, _aten.ones_like.default, _aten.full_like.default, _aten._to_copy.default,
               _aten.lift_fresh_copy.default], Rule(first_input))
register_rule([_aten.matmul.default, _aten.bmm.default, _aten.mm.default], Rule(matmul, macs=_matmul_macs))
register_rule([F.batch_norm, _aten.batch_norm.default, F.instance_norm, _aten.instance_norm.default],
              Rule(_per_channel_params()))
register_rule([_aten.relu.default, _aten.relu_.default, _aten.gelu.default, _aten.silu.default, _aten.silu_.default,
               _aten.sigmoid.default, _aten.tanh.default, _aten.hardtanh.default, _aten.hardtanh_.default,
               _aten.hardswish.default, _aten.hardswish_.default, _aten.hardsigmoid.default, _aten.elu.default,
               _aten.leaky_relu.default, _aten.dropout.default, _aten.exp.default, _aten.neg.default,
               _aten.abs.default, _aten.sqrt.default, _aten.rsqrt.default, _aten.erf.default, _aten.sin.default,
               _aten.cos.default, _aten.pow.Tensor_Scalar, _aten.pow.Tensor_Tensor, _aten.clamp.default,
               _aten.add.Tensor, _aten.add_.Tensor, _aten.sub.Tensor, _aten.sub_.Tensor, _aten.mul.Tensor,
               _aten.mul_.Tensor, _aten.div.Tensor, _aten.div_.Tensor, _aten.maximum.default,
               _aten.minimum.default, _aten.where.self, _aten.masked_fill.Scalar, _aten.square.default,
               _aten.where.ScalarOther, _aten.where.ScalarSelf, _aten.masked_fill.Tensor, _aten.mul.Scalar,
               _aten.add.Scalar, _aten.sub.Scalar, _aten.div.Scalar, _aten.ge.Scalar, _aten.gt.Scalar,
               _aten.lt.Scalar, _aten.le.Scalar, _aten.eq.Scalar, _aten.ne.Scalar, _aten.ge.Tensor, _aten.gt.Tensor,
               _aten.lt.Tensor, _aten.le.Tensor, _aten.eq.Tensor, _aten.ne.Tensor, _aten.logical_not.default,
               _aten.logical_and.default, _aten.logical_or.default, _aten.bitwise_not.default,
               _aten.bitwise_and.Tensor, _aten.bitwise_or.Tensor, _aten.__and__.Tensor, _aten.__or__.Tensor],
              _elementwise)
register_rule([_aten.contiguous.default, _aten.clone.default, _aten.to.dtype, _aten.to.dtype_layout,
               _aten.to.device, _aten.type_as.default, _aten.detach.default, _aten.alias.default],
              Rule(first_input))
register_rule([_aten.sym_size.int, _aten._assert_tensor_metadata.default], Rule(metadata))
register_rule([_aten.max_pool1d.default, _aten.max_pool2d.default, _aten.max_pool3d.default,
               _aten.avg_pool1d.default, _aten.avg_pool2d.default, _aten.avg_pool3d.default,
               _aten.adaptive_avg_pool1d.default, _aten.adaptive_avg_pool2d.default,
               _aten.adaptive_avg_pool3d.default, _aten.upsample_nearest2d.vec, _aten.upsample_bilinear2d.vec],
              _pool)
register_rule([_aten.softmax.int, _aten._softmax.default, _aten.log_softmax.int],
              Rule(along_dims(_all_but(_softmax_dim))))
register_rule(_aten.cat.default, Rule(cat))
register_rule([_aten.split.Tensor, _aten.split_with_sizes.default, _aten.chunk.default],
              Rule(split, rewrite=_rewrite_split))
register_rule([_aten.view.default, _aten.reshape.default, _aten._unsafe_view.default], _reshape)
register_rule([_aten.flatten.using_ints, _aten.squeeze.dim, _aten.squeeze.dims, _aten.squeeze.default,
               _aten.unsqueeze.default], Rule(reshape))
register_rule(_aten.unflatten.int, Rule(reshape, rewrite=_rewrite_unflatten))
register_rule([_aten.permute.default, _aten.transpose.int, _aten.t.default], Rule(permute))
register_rule(_aten.expand.default, Rule(expand, rewrite=_rewrite_reshape))
register_rule([_aten.mean.dim, _aten.sum.dim_IntList, _aten.amax.default, _aten.amin.default],
              Rule(reduce_dims, mask=_mask_mean))
register_rule(_aten.slice.Tensor, Rule(slice_tensor, rewrite=_rewrite_slice))
register_rule(_aten.select.int, Rule(select, rewrite=_rewrite_select))

# ---------------------------------------------------------------------------------------------
# Transformers: norms over the hidden size, embeddings, attention (every spelling)
# ---------------------------------------------------------------------------------------------

register_rule([nn.LayerNorm, F.layer_norm, _aten.layer_norm.default, nn.RMSNorm, F.rms_norm, _aten.rms_norm.default],
              Rule(layer_norm, rewrite=_rewrite_layer_norm, mask=_mask_norm))
register_rule([nn.Embedding, F.embedding, _aten.embedding.default], Rule(embedding, rewrite=_rewrite_embedding))
register_rule([F.scaled_dot_product_attention, _aten.scaled_dot_product_attention.default],
              Rule(sdpa, rewrite=_rewrite_sdpa, macs=_sdpa_macs))
