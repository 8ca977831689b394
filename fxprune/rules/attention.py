"""The row of `nn.MultiheadAttention`: its heads and its input and output channels are prunable.

fx keeps `nn.MultiheadAttention` whole (one `call_module` node). Its fused `in_proj_weight` (q, k, v rows, one
`head_dim` block per head each) and the columns of `out_proj.weight` are coupled per head: a head is removed
with its q, k and v rows and its out-projection columns. `nn.MultiheadAttention` cannot hold an inner width
other than `embed_dim`, so the mask pass swaps the call for `masked_multi_head_attention` (which zeroes the
removed heads' outputs) reading the module's tensors, and the speedup pass turns it into
`multi_head_attention`, the same computation over the tensors it slices: the number of heads is read from the
sliced weights, the scale from the dense `head_dim`. The pruned graph keeps the module only as the owner of
those tensors.

Kept whole (a reason in the report, never a guess): heads whose averaged attention weights are read
(`need_weights=True` and output 1 used: averaging over fewer heads changes them), and the whole op where the
attention mask is per head (3-D) or the projections are separate (`kdim`/`vdim` other than `embed_dim`).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import NotHandled
from .context import MaskContext, NodeView, RuleContext
from .table import Rule, register_rule

__all__ = ["multihead_attention", "multi_head_attention", "masked_multi_head_attention"]

_TENSORS = ("in_proj_weight", "in_proj_bias", "bias_k", "bias_v", "out_proj.weight", "out_proj.bias")
_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")


def multi_head_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                         attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                         is_causal: bool = False, *, in_proj_weight: torch.Tensor,
                         in_proj_bias: torch.Tensor | None, bias_k: torch.Tensor | None, bias_v: torch.Tensor | None,
                         out_proj_weight: torch.Tensor, out_proj_bias: torch.Tensor | None, head_dim: int,
                         add_zero_attn: bool, dropout: float, batch_first: bool, training: bool = False,
                         keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`nn.MultiheadAttention.forward` over tensors of any inner width (`in_proj_weight.shape[0] // 3`, whole heads of
    `head_dim`), with the dense model's scale `head_dim ** -0.5`. `keep` (0/1 over the inner width) zeroes the
    removed heads' outputs before the out-projection: the masked model computes what the pruned one does."""
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
    if batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    length, batch = query.shape[0], query.shape[1]
    inner = in_proj_weight.shape[0] // 3
    heads = inner // head_dim
    w_q, w_k, w_v = in_proj_weight.split(inner)
    b_q, b_k, b_v = in_proj_bias.split(inner) if in_proj_bias is not None else (None, None, None)
    q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
    if bias_k is not None and bias_v is not None:
        k, v = torch.cat([k, bias_k.expand(1, batch, -1)]), torch.cat([v, bias_v.expand(1, batch, -1)])
        attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
        key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
    q = q.reshape(length, batch * heads, head_dim).transpose(0, 1)
    k = k.reshape(k.shape[0], batch * heads, head_dim).transpose(0, 1)
    v = v.reshape(v.shape[0], batch * heads, head_dim).transpose(0, 1)
    if add_zero_attn:
        k = torch.cat([k, k.new_zeros(batch * heads, 1, head_dim)], dim=1)
        v = torch.cat([v, v.new_zeros(batch * heads, 1, head_dim)], dim=1)
        attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
        key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
    scores = torch.bmm(q * head_dim ** -0.5, k.transpose(1, 2)).view(batch, heads, length, k.shape[1])
    for mask in (attn_mask, key_padding_mask[:, None, None, :] if key_padding_mask is not None else None):
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = F.dropout(scores.softmax(dim=-1), dropout, training)
    out = torch.bmm(weights.view(batch * heads, length, -1), v)
    out = out.transpose(0, 1).reshape(length, batch, inner)
    if keep is not None:
        out = out * keep.reshape(-1)
    out = F.linear(out, out_proj_weight, out_proj_bias)
    if batch_first:
        out = out.transpose(0, 1)
    out = out.squeeze(1) if unbatched else out
    if not need_weights:
        return out, None
    weights = weights.mean(dim=1) if average_attn_weights else weights
    return out, weights.squeeze(0) if unbatched else weights


def masked_multi_head_attention(*args: Any, keep: torch.Tensor | None, **kwargs: Any
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The masked twin: `multi_head_attention` with the removed heads' outputs zeroed."""
    return multi_head_attention(*args, keep=keep, **kwargs)


def _keys(c: NodeView) -> dict[str, str | None]:
    """Tensor key (`@attn.in_proj_weight`, ...) of each of the module's tensors, None where it has none."""
    keys = {}
    for name in _TENSORS:
        owner, _, attr = name.rpartition(".")
        module = c.module.get_submodule(owner) if owner else c.module
        keys[name] = f"@{c.node.target}.{name}" if getattr(module, attr, None) is not None else None
    return keys


def _operand(c: NodeView, i: int) -> Any:
    return c.arg(i, _ARGS[i], None if i not in (4, 6) else True)


def _weights_read(c: NodeView) -> bool:
    """Whether the averaged (or per-head) attention weights, output 1, reach any op."""
    if not _operand(c, 4):
        return False
    items = [u for u in c.node.users if u.op == "call_function" and u.target is operator.getitem]
    others = [u for u in c.node.users if u not in items]
    return bool(others) or any(u.args[1] != 0 and u.users for u in items)


def multihead_attention(c: RuleContext) -> None:
    """Couple q/k/v rows and out-projection columns per head, inputs with the in-projection columns, the output
    with the out-projection rows; batch and sequence dims pass through."""
    m = c.module
    if m is None:  # multi_head_attention in a graph fxprune already pruned: its tensors are get_attr kwargs
        raise NotHandled("nn.MultiheadAttention already swapped for multi_head_attention; trace the dense model")
    if not m._qkv_same_embed_dim:
        raise NotHandled("separate q/k/v projections (kdim or vdim other than embed_dim)")
    query, key, value = (c.tensor(_operand(c, i)) for i in range(3))
    attn_mask = c.tensor(_operand(c, 5))
    if attn_mask is not None and c.ndim(attn_mask) == 3:
        raise NotHandled("a per-head (3-D) attn_mask")
    out = f"{c.node.name}[0]"
    keys = _keys(c)
    for k in filter(None, keys.values()):
        c.g.add_tensor(k, tuple(c.value(k).shape))
    embed, heads = m.embed_dim, m.num_heads
    head_dim = embed // heads
    w_in, w_out = keys["in_proj_weight"], keys["out_proj.weight"]
    # heads: q, k, v row j and out-projection column j are one channel; a head's head_dim columns one unit
    c.link((w_out, 1), (w_in, 0), np.arange(3 * embed) % embed)
    c.link((w_out, 1), (w_out, 1), (np.arange(embed) // head_dim) * head_dim)
    c.role(w_out, 1, "heads")
    if keys["in_proj_bias"]:
        c.link((w_out, 1), (keys["in_proj_bias"], 0), np.arange(3 * embed) % embed)
    for name in ("bias_k", "bias_v"):
        if keys[name]:
            c.link((w_out, 1), (keys[name], 2))
            c.touch(keys[name], 0)
            c.touch(keys[name], 1)
    if _weights_read(c):
        c.freeze(w_out, 1, "attention weights averaged over heads are read (need_weights=True)")
    # channels in: every input's last dim is a column of in_proj_weight; channels out: rows of out_proj
    for x in {query, key, value}:
        c.link((x, -1), (w_in, 1))
    c.link((out, -1), (w_out, 0))
    if keys["out_proj.bias"]:
        c.link((out, -1), (keys["out_proj.bias"], 0))
    for d in range(c.ndim(query) - 1):
        c.link((query, d), (out, d))
    for x in {key, value} - {query}:
        for d in range(c.ndim(x) - 1):
            c.link((key, d), (x, d))
    batch = 0 if m.batch_first else 1
    if c.ndim(query) == 3 and key != query:
        c.link((query, batch), (key, batch))
    for mask in (attn_mask, c.tensor(_operand(c, 3))):
        if mask is not None:
            c.touch(mask)
    weights = f"{c.node.name}[1]"
    if weights in c.shapes:
        for d in range(c.ndim(weights)):
            c.freeze(weights, d, "attention weights")


def _mask_multihead_attention(c: MaskContext) -> None:
    """Swap the module call for `masked_multi_head_attention` over the module's tensors (get_attr nodes) where any
    of its channels may be removed; speedup turns it into `multi_head_attention`."""
    keys = _keys(c)
    graph = c.masks.graph
    slots = [(keys["out_proj.weight"], 1), (keys["out_proj.weight"], 0), (keys["in_proj_weight"], 1)]
    if not any(graph.groups[graph.group_of[(k, d)]].prunable.any() for k, d in slots if (k, d) in graph.group_of):
        return
    m = c.module
    keep = c.keep_buffer(keys["out_proj.weight"], 1)
    tensors = {name.replace(".", "_"): c.get_attr(key[1:]) if key else None for name, key in keys.items()}
    c.node.kwargs = {**dict(zip(_ARGS, c.node.args)), **c.node.kwargs, **tensors,
                     "head_dim": m.embed_dim // m.num_heads, "add_zero_attn": m.add_zero_attn,
                     "dropout": m.dropout, "batch_first": m.batch_first}
    c.swap(masked_multi_head_attention, multi_head_attention, (), keep)


def _macs(c: NodeView) -> int:
    """in-projection + scores + weighted sum + out-projection, as `multi_head_attention` computes them."""
    query, key = c.tensor(_operand(c, 0)), c.tensor(_operand(c, 1))
    if c.module is not None:
        m = c.module
        w_in, w_out = m.in_proj_weight, m.out_proj.weight
        head_dim, extra = m.embed_dim // m.num_heads, int(m.bias_k is not None) + int(m.add_zero_attn)
    else:
        w_in, w_out = (c.value(c.node.kwargs[n].name) for n in ("in_proj_weight", "out_proj_weight"))
        head_dim = c.node.kwargs["head_dim"]
        extra = int(c.node.kwargs["bias_k"] is not None) + int(c.node.kwargs["add_zero_attn"])
    inner = w_in.shape[0] // 3
    tokens_q, tokens_k = math.prod(c.shape(query)[:-1]), math.prod(c.shape(key)[:-1])
    seq_k = c.shape(key)[1 if c.ndim(key) == 3 and _batch_first(c) else 0] + extra
    scores = tokens_q * (inner // head_dim) * seq_k * head_dim  # q @ k^T, and as many for weights @ v
    return tokens_q * w_in.shape[1] * inner + 2 * tokens_k * w_in.shape[1] * inner + 2 * scores + (
        tokens_q * inner * w_out.shape[0])


def _batch_first(c: NodeView) -> bool:
    return c.module.batch_first if c.module is not None else c.node.kwargs["batch_first"]


_rule = Rule(multihead_attention, macs=_macs, mask=_mask_multihead_attention, out_param=("in_proj_weight", 0))
register_rule(nn.MultiheadAttention, _rule)
register_rule([multi_head_attention, masked_multi_head_attention], Rule(multihead_attention, macs=_macs))
