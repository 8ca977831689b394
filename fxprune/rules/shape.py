"""Rows of the ops that move channels without mixing them: cat, split, slicing and indexing, reshape,
permute, expand, reductions, padding, pooling, softmax."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import NotHandled
from .context import MaskContext, NodeView, RewriteContext, RuleContext
from .couplings import all_but, along_dims, per_channel
from .table import Rule, register_rule

__all__ = ["slice_tensor", "select", "cat", "split", "unbind", "getitem", "index_tensor", "reshape", "permute",
           "reduce_dims", "expand", "pad", "masked_mean"]

aten = torch.ops.aten


def _softmax_dim(c: RuleContext) -> Iterable[int]:
    d = c.module.dim if c.module is not None else c.arg(1, "dim")
    return [d if d is not None else -1]


def masked_mean(x: torch.Tensor, dim: Any, keepdim: bool = False, *_: Any, keep: torch.Tensor, **__: Any
                ) -> torch.Tensor:
    """Mean over `dim` counting only the elements where `keep` (broadcast to x) is 1."""
    keep = keep.expand_as(x)
    return (x * keep).sum(dim, keepdim=keepdim) / keep.sum(dim, keepdim=keepdim)


def _mask_mean(c: MaskContext) -> None:
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


def _window(c: NodeView, key: str, dim: int, start: Any, stop: Any, step: Any) -> np.ndarray | str:
    """The input positions a slice of (key, dim) reads, or why they cannot be rewritten once channels go (a
    strided slice; bounds computed at run time, which stay valid only while the dim keeps its size)."""
    if any(isinstance(v, torch.fx.Node) for v in (start, stop, step)):
        return "slice bounds computed at run time"
    start, stop, step = slice(start, stop, step).indices(c.shape(key)[dim])
    if step != 1:
        return "strided slice"
    return start + np.arange(max(stop - start, 0))


def _slice_dim(c: RuleContext, key: str, in_dim: int, out_dim: int, bounds: tuple[Any, Any, Any]) -> None:
    window = _window(c, key, in_dim, *bounds)
    if isinstance(window, str):  # a spatial or token dim in practice: keeping it whole costs no channel
        c.freeze(key, in_dim, window)
        c.freeze(c.out, out_dim, window)
    else:
        c.link((key, in_dim), (c.out, out_dim), window)


def slice_tensor(c: RuleContext) -> None:
    """aten.slice(x, dim, start, end, step): a window of dim; other dims pass through. A strided slice or one
    with bounds computed at run time (position ids sliced to the sequence length) keeps its dim whole."""
    x = c.inputs()[0]
    dim = c.arg(1, "dim", 0) % c.ndim(x)
    _slice_dim(c, x, dim, dim, (c.arg(2, "start"), c.arg(3, "end"), c.arg(4, "step", 1)))
    c.same(x, c.out, (d for d in range(c.ndim(x)) if d != dim))


def _rewrite_slice(c: RewriteContext) -> None:
    x = c.inputs()[0]
    dim = c.arg(1, "dim", 0) % len(c.old_shape(x))
    kept = c.kept(x, dim)
    if kept is None:
        return
    start, stop, _ = slice(c.arg(2, "start"), c.arg(3, "end")).indices(c.old_shape(x)[dim])
    c.set_arg(2, "start", c.new_index(x, dim, start))
    c.set_arg(3, "end", c.new_index(x, dim, stop))


def select(c: RuleContext) -> None:
    """aten.select(x, dim, index): that element of dim must stay; the other dims pass through."""
    x = c.inputs()[0]
    dim = c.arg(1, "dim") % c.ndim(x)
    index = c.arg(2, "index") % c.shape(x)[dim]
    c.freeze(x, dim, "indexed by an integer", np.array([index]))
    for d in range(c.ndim(x)):
        if d != dim:
            c.link((x, d), (c.out, d - (d > dim)))


def _rewrite_select(c: RewriteContext) -> None:
    x = c.inputs()[0]
    dim = c.arg(1, "dim") % len(c.old_shape(x))
    kept = c.kept(x, dim)
    if kept is not None:
        c.set_arg(2, "index", c.new_index(x, dim, c.arg(2, "index") % c.old_shape(x)[dim]))


def cat(c: RuleContext) -> None:
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


def _windows(c: NodeView) -> tuple[str, int, list[tuple[int, int]]]:
    """(input, dim, [(start, size)] per item), sizes from the traced items' shapes: split sizes may be
    computed in the graph (`x.size(1) - s`), and chunk may return fewer items than asked for."""
    x = c.inputs()[0]
    dim = c.arg(2, "dim", 0) % c.ndim(x)
    sizes, k = [], 0
    while f"{c.node.name}[{k}]" in c.shapes:
        sizes.append(c.shapes[f"{c.node.name}[{k}]"][dim])
        k += 1
    if sum(sizes) != c.shape(x)[dim]:
        raise NotHandled(f"split items cover {sum(sizes)} of {c.shape(x)[dim]} elements")
    starts = np.cumsum([0] + sizes[:-1]).tolist()
    return x, dim, list(zip(starts, sizes))


def split(c: RuleContext) -> None:
    """split/chunk: item k is a window of the input; the node's items are `name[k]`."""
    x, dim, windows = _windows(c)
    for k, (start, size) in enumerate(windows):
        item = f"{c.node.name}[{k}]"
        c.link((x, dim), (item, dim), start + np.arange(size))
        c.same(x, item, (d for d in range(c.ndim(x)) if d != dim))


def unbind(c: RuleContext) -> None:
    """unbind(x, dim): item k is `x.select(dim, k)` (timm's `q, k, v = qkv.unbind(0)`): every element of dim is
    read, so dim stays; the other dims pass through to every item."""
    x = c.inputs()[0]
    dim = c.arg(1, "dim", 0) % c.ndim(x)
    c.freeze(x, dim, "unbound into one tensor per element")
    for k in range(c.shape(x)[dim]):
        item = f"{c.node.name}[{k}]"
        for d in range(c.ndim(x)):
            if d != dim:
                c.link((x, d), (item, d - (d > dim)))


def _rewrite_split(c: RewriteContext) -> None:
    x, dim, windows = _windows(c)
    kept = c.kept(x, dim)
    if kept is None:
        return
    sizes = [c.new_index(x, dim, s + n) - c.new_index(x, dim, s) for s, n in windows]
    c.replace(torch.split, (c.node.args[0], sizes), {"dim": dim})


class _Item(NamedTuple):
    """One entry of an index: which input dim it reads, which output dim it makes (None: dropped)."""

    pos: int | None  # position in the index tuple (None: a trailing dim the index does not name)
    in_dim: int
    out_dim: int | None
    item: Any  # slice, int, an int Node (position computed at run time), or "tensor" (advanced index)


def _index_plan(c: NodeView, key: str, items: list[Any]) -> list[_Item]:
    """How `x[items]` maps input dims to output dims (items: slices, ints, None, Ellipsis, index tensors as
    Nodes or lists). Index tensors on adjacent dims put their broadcast dims where they stand, as torch does;
    the plan is checked against the traced output shape, and anything else is `NotHandled`."""
    shape, out_shape = c.shape(key), c.shape(c.out)
    tensors = [k for k, i in enumerate(items) if _is_index_tensor(c, i)]
    if tensors and tensors != list(range(tensors[0], tensors[-1] + 1)):
        raise NotHandled("index tensors on dims that are not adjacent")
    if any(_index_dtype(c, items[k]) == torch.bool for k in tensors):
        raise NotHandled("a boolean mask as index (the output size depends on the data)")
    n_index = max((_index_ndim(c, items[k]) for k in tensors), default=0)
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    plan: list[_Item] = []
    d_in = d_out = 0
    for k, i in enumerate(items):
        if i is Ellipsis:
            for _ in range(len(shape) - n_real):
                plan.append(_Item(None, d_in, d_out, slice(None)))
                d_in, d_out = d_in + 1, d_out + 1
        elif i is None:
            d_out += 1
        elif k in tensors:
            plan.append(_Item(k, d_in, d_out if k == tensors[0] else None, "tensor"))
            d_in += 1
            d_out += n_index if k == tensors[0] else 0
        elif isinstance(i, (int, torch.fx.Node)):
            plan.append(_Item(k, d_in, None, i))
            d_in += 1
        else:
            plan.append(_Item(k, d_in, d_out, i))
            d_in, d_out = d_in + 1, d_out + 1
    while d_in < len(shape):
        plan.append(_Item(None, d_in, d_out, slice(None)))
        d_in, d_out = d_in + 1, d_out + 1
    if d_in != len(shape) or d_out != len(out_shape):
        raise NotHandled(f"index {items} of a rank-{len(shape)} tensor")
    return plan


def _is_index_tensor(c: NodeView, item: Any) -> bool:
    return c.tensor(item) is not None or isinstance(item, (list, torch.Tensor))


def _index_ndim(c: NodeView, item: Any) -> int:
    return c.ndim(c.tensor(item)) if c.tensor(item) is not None else np.asarray(item).ndim


def _index_dtype(c: NodeView, item: Any) -> torch.dtype | None:
    if c.tensor(item) is not None:
        meta = item.meta.get("tensor_meta", item.meta.get("val"))
        return getattr(meta, "dtype", None)
    return torch.as_tensor(item).dtype


def _couple_index(c: RuleContext, key: str, items: list[Any]) -> None:
    """Couple `x[items]`: sliced dims by their window, dims an int or an index tensor reads stay (an index
    tensor on a table's positions keeps its other dims coupled: a relative-position bias gathered as
    `biases[:, idxs]` keeps its heads dim prunable), untouched dims pass through."""
    plan = _index_plan(c, key, items)
    n_index = max((_index_ndim(c, items[e.pos]) for e in plan if e.item == "tensor"), default=0)
    for e in plan:
        if e.item == "tensor":
            c.freeze(key, e.in_dim, "read at positions an index tensor holds")
            if c.tensor(items[e.pos]) is not None:
                c.touch(c.tensor(items[e.pos]))
            for d in range(e.out_dim, e.out_dim + n_index) if e.out_dim is not None else ():
                c.freeze(c.out, d, "positions picked by an index tensor")
        elif isinstance(e.item, torch.fx.Node):
            c.freeze(key, e.in_dim, "indexed at a position computed at run time")
        elif isinstance(e.item, int):  # an int index picks one channel: that channel must stay
            c.freeze(key, e.in_dim, "indexed by an integer", np.array([e.item % c.shape(key)[e.in_dim]]))
        else:
            _slice_dim(c, key, e.in_dim, e.out_dim, (e.item.start, e.item.stop, e.item.step))


def getitem(c: RuleContext) -> None:
    """Item of a tuple output (alias), or tensor indexing: slices, ints, None, Ellipsis, index tensors."""
    src, index = c.arg(0), c.arg(1)
    key = c.tensor(src)
    if key is None:  # item of a tuple (split, chunk, ...) or of a size
        if isinstance(index, int) and index < 0 and hasattr(src, "name"):  # spx[-1]: the last item's key
            n = 0
            while f"{src.name}[{n}]" in c.g.shapes:
                n += 1
            index += n
        item = f"{src.name}[{index}]" if hasattr(src, "name") else None
        if item in c.g.shapes and c.out is not None:
            c.same(item, c.out)
        return
    _couple_index(c, key, list(index) if isinstance(index, tuple) else [index])


def index_tensor(c: RuleContext) -> None:
    """aten.index.Tensor(x, indices): `x[indices]` where a None entry is a whole dim (`x[:, idx]` is
    `[None, idx]`)."""
    items = [slice(None) if i is None else i for i in c.arg(1, "indices")]
    _couple_index(c, c.inputs()[0], items)


def _rewrite_getitem(c: RewriteContext) -> None:
    src, index = c.node.args
    key = c.tensor(src)
    if key is None:
        return
    items = list(index) if isinstance(index, tuple) else [index]
    changed = False
    for e in _index_plan(c, key, items):
        kept = c.kept(key, e.in_dim)
        if kept is None or e.pos is None or e.item == slice(None):
            continue
        if isinstance(e.item, slice):  # a frozen dim is never pruned: only plain windows reach here
            start, stop, _ = e.item.indices(c.old_shape(key)[e.in_dim])
            items[e.pos] = slice(c.new_index(key, e.in_dim, start), c.new_index(key, e.in_dim, stop))
        elif isinstance(e.item, int):
            items[e.pos] = c.new_index(key, e.in_dim, e.item % c.old_shape(key)[e.in_dim])
        else:
            continue
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


def _size_args(c: NodeView) -> list[Any] | None:
    """The size arguments of view/reshape/expand, one per output dim (ints, -1 or Nodes), else None."""
    args = c.node.args
    if c.node.op == "call_method" and c.target_name() in ("view", "reshape", "expand"):
        sizes = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
    elif c.node.op == "call_function" and c.target_name() in ("view", "reshape", "_unsafe_view", "expand"):
        sizes = c.arg(1, "shape", c.arg(1, "size"))
    else:
        return None
    return list(sizes) if isinstance(sizes, (list, tuple)) else None


def _split_carrier(c: RuleContext, db: list[int]) -> int:
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


def reshape(c: RuleContext) -> None:
    """view/reshape/flatten/unflatten/squeeze/unsqueeze, from the traced in/out shapes.

    Dims that map 1:1 are shared. When one dim splits into several (C -> heads x head_dim), its
    channels follow one factor, uniformly across the others: the heads factor where the config asks
    for heads and the view's sizes allow it (see `_split_carrier`), else the innermost factor (head_dim,
    the channel-shuffle pattern). When several dims merge into one (C x H x W -> CHW), the merged
    channels follow the innermost factor that is still free (C for a flatten after a conv, heads
    after attention). Anything else is frozen. `view_as`/`reshape_as` take the template's shape at run time:
    the template and the output share every dim.
    """
    x = c.inputs()[0]
    a, b = c.shape(x), c.shape(c.out)
    _template_shape(c)
    chunks = _shape_chunks(a, b)
    if chunks is None:
        raise NotHandled(f"cannot align shapes {a} -> {b}")
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


def _size_source(node: torch.fx.Node) -> tuple[str, int] | None:
    """(tensor, dim) when a size Node reads one dim of a tensor (`x.size(d)`, `x.shape[d]`, aten.sym_size)."""
    if node.op == "call_method" and node.target == "size" and len(node.args) == 2 or node.target is aten.sym_size.int:
        src, dim = node.args
    elif node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
        sizes, dim = node.args
        if not ((sizes.op == "call_function" and sizes.target is getattr and sizes.args[1:] == ("shape",))
                or (sizes.op == "call_method" and sizes.target == "size" and len(sizes.args) == 1)):
            return None
        src = sizes.args[0]
    else:
        return None
    return (src.name, dim) if isinstance(src, torch.fx.Node) and isinstance(dim, int) else None


def _rewrite_reshape(c: RewriteContext) -> None:
    """Replace stale sizes in view/reshape/expand arguments by the pruned sizes: an int constant becomes
    the new size; a size computed at run time (a Node) whose dim shrank becomes -1 (inferred). Where that
    would give two -1, a Node that reads a dim of a tensor which shrank to the same size (`B, N, C = x.shape`)
    stays: it is right at run time."""
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
    if fixed.count(-1) > 1:
        for k, (s, n) in enumerate(zip(sizes, new)):
            source = _size_source(s) if isinstance(s, torch.fx.Node) and fixed[k] == -1 else None
            if source is not None and source[0] in c.shapes and c.new_shape(source[0])[source[1]] == n:
                fixed[k] = s
    if fixed.count(-1) > 1 and c.target_name() != "expand":
        raise ValueError(f"sizes {sizes} -> {fixed}: more than one size is computed at run time and changes; "
                         "write the view with one -1 or with constants")
    args = list(c.node.args)
    if c.node.op == "call_method" and not (len(args) == 2 and isinstance(args[1], (list, tuple))):
        c.node.args = (args[0], *fixed)
    else:
        c.set_arg(1, "shape" if c.target_name() != "expand" else "size", type(args[1])(fixed)
                  if len(args) > 1 and isinstance(args[1], (list, tuple)) else fixed)


def _rewrite_unflatten(c: RewriteContext) -> None:
    new, old = c.new_shape(c.out), c.old_shape(c.out)
    if new == old:
        return
    dim = c.arg(1, "dim") % len(c.old_shape(c.inputs()[0]))
    sizes = c.arg(2, "sizes")
    fixed = tuple(n if s != -1 else s for s, n in zip(sizes, new[dim:dim + len(sizes)]))
    c.set_arg(2, "sizes", fixed)


def permute(c: RuleContext) -> None:
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


def reduce_dims(c: RuleContext) -> None:
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


def expand(c: RuleContext) -> None:
    """expand/expand_as: broadcast size-1 dims, share the rest."""
    x = c.inputs()[0]
    shift = c.ndim(c.out) - c.ndim(x)
    for d, size in enumerate(c.shape(x)):
        if size == c.shape(c.out)[d + shift]:
            c.link((x, d), (c.out, d + shift))
        else:
            c.touch(x, d)
    _template_shape(c)


def _template_shape(c: RuleContext) -> None:
    """`*_as(x, other)`: the output has other's shape at run time, so the two lose the same channels."""
    for other in c.inputs()[1:]:
        c.same(other, c.out)


def _roll_dims(c: RuleContext) -> Iterable[int]:
    dims = c.arg(2, "dims", ())
    return dims if isinstance(dims, (list, tuple)) else [dims]


def _cumsum_dim(c: RuleContext) -> Iterable[int]:
    return [c.arg(1, "dim")]


def pad(c: RuleContext) -> None:
    """F.pad: dims that are not padded pass through."""
    x = c.inputs()[0]
    pads = c.arg(1, "pad")
    n_padded = len(pads) // 2
    for d in range(c.ndim(x) - n_padded):
        c.link((x, d), (c.out, d))



# ---------------------------------------------------------------------------------------------
# Rows: one per op, every spelling (module class, F./torch. function, Tensor method, ATen overload)
# ---------------------------------------------------------------------------------------------

register_rule([torch.cat, torch.concat, torch.concatenate, aten.cat.default], Rule(cat))
_split = Rule(split, rewrite=_rewrite_split)
register_rule([torch.split, "split", aten.split.Tensor, aten.split_with_sizes.default], _split)
register_rule([torch.chunk, "chunk", aten.chunk.default], _split)
register_rule([torch.unbind, "unbind", aten.unbind.int], Rule(unbind))
register_rule(operator.getitem, Rule(getitem, rewrite=_rewrite_getitem))
register_rule(aten.index.Tensor, Rule(index_tensor))
register_rule(aten.slice.Tensor, Rule(slice_tensor, rewrite=_rewrite_slice))
register_rule([torch.select, "select", aten.select.int], Rule(select, rewrite=_rewrite_select))
_reshape = Rule(reshape, rewrite=_rewrite_reshape)
register_rule([torch.reshape, "reshape", aten.reshape.default], _reshape)
register_rule(["view", aten.view.default, aten._unsafe_view.default], _reshape)
register_rule(["view_as", aten.view_as.default], Rule(reshape))
register_rule(["reshape_as", aten.reshape_as.default], Rule(reshape))
register_rule([nn.Flatten, torch.flatten, "flatten", aten.flatten.using_ints], Rule(reshape))
register_rule([torch.squeeze, "squeeze", aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default], Rule(reshape))
register_rule([torch.unsqueeze, "unsqueeze", aten.unsqueeze.default], Rule(reshape))
register_rule([nn.Unflatten, torch.unflatten, "unflatten", aten.unflatten.int],
              Rule(reshape, rewrite=_rewrite_unflatten))
register_rule([torch.permute, "permute", aten.permute.default], Rule(permute))
register_rule([torch.transpose, "transpose", torch.swapaxes, "swapaxes", "swapdims", aten.transpose.int], Rule(permute))
register_rule([torch.t, "t", aten.t.default], Rule(permute))
register_rule(["expand", aten.expand.default], Rule(expand, rewrite=_rewrite_reshape))
register_rule(["expand_as", aten.expand_as.default], Rule(expand))
_reduce = Rule(reduce_dims, mask=_mask_mean)
register_rule([torch.mean, "mean", aten.mean.dim], _reduce)
register_rule([torch.sum, "sum", aten.sum.dim_IntList], _reduce)
register_rule([torch.amax, "amax", aten.amax.default], _reduce)
register_rule([torch.amin, "amin", aten.amin.default], _reduce)
register_rule([F.pad, aten.pad.default, aten.constant_pad_nd.default], Rule(pad))
register_rule([torch.roll, "roll", aten.roll.default], Rule(along_dims(all_but(_roll_dims))))
register_rule([torch.cumsum, "cumsum", aten.cumsum.default], Rule(along_dims(all_but(_cumsum_dim))))
_softmax = Rule(along_dims(all_but(_softmax_dim)))
register_rule([nn.Softmax, F.softmax, torch.softmax, "softmax", aten.softmax.int, aten._softmax.default], _softmax)
register_rule([nn.LogSoftmax, F.log_softmax, torch.log_softmax, "log_softmax", aten.log_softmax.int], _softmax)

_pool = Rule(per_channel)
register_rule([nn.MaxPool1d, F.max_pool1d, aten.max_pool1d.default], _pool)
register_rule([nn.MaxPool2d, F.max_pool2d, torch.max_pool2d, aten.max_pool2d.default], _pool)
register_rule([nn.MaxPool3d, F.max_pool3d, aten.max_pool3d.default], _pool)
register_rule([nn.AvgPool1d, F.avg_pool1d, torch.avg_pool1d, aten.avg_pool1d.default], _pool)
register_rule([nn.AvgPool2d, F.avg_pool2d, aten.avg_pool2d.default], _pool)
register_rule([nn.AvgPool3d, F.avg_pool3d, aten.avg_pool3d.default], _pool)
register_rule([nn.AdaptiveAvgPool1d, F.adaptive_avg_pool1d, torch.adaptive_avg_pool1d,
               aten.adaptive_avg_pool1d.default], _pool)
register_rule([nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, aten.adaptive_avg_pool2d.default], _pool)
register_rule([nn.AdaptiveAvgPool3d, F.adaptive_avg_pool3d, aten.adaptive_avg_pool3d.default], _pool)
register_rule([nn.AdaptiveMaxPool1d, F.adaptive_max_pool1d], _pool)
register_rule([nn.AdaptiveMaxPool2d, F.adaptive_max_pool2d], _pool)
register_rule([nn.AdaptiveMaxPool3d, F.adaptive_max_pool3d], _pool)
register_rule([nn.Upsample, F.interpolate, F.upsample, aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec],
              _pool)
register_rule([nn.UpsamplingNearest2d, F.upsample_nearest], _pool)
register_rule([nn.UpsamplingBilinear2d, F.upsample_bilinear], _pool)
register_rule([nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
               nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d], _pool)
