"""Rows of the ops that own parameters or contract channels: conv, linear, matmul, norms, embedding, attention."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import NotHandled
from .context import MaskContext, NodeView, RewriteContext, RuleContext
from .couplings import elementwise
from .table import Rule, register_rule

__all__ = ["conv", "linear", "matmul", "addmm", "group_norm", "prelu", "layer_norm", "embedding", "sdpa",
           "masked_layer_norm", "masked_rms_norm", "HIDDEN_REASON",
           "sdpa_run_time_causal"]

aten = torch.ops.aten


def _per_channel_params(*names: str) -> Callable[[RuleContext], None]:
    """Norm layers and friends: channel dim 1 (dim 0 for unbatched 1-D) owns one entry of each param."""

    def couple(c: RuleContext) -> None:
        x = c.inputs()[0]
        ch = 1 if c.ndim(x) > 1 else 0
        c.link((x, ch), (c.out, ch))
        c.link((x, 0), (c.out, 0))
        params = [c.param(n) for n in names] if c.module is not None else c.inputs()[1:]
        for p in params:
            if p is not None and c.shape(p)[0] == c.shape(x)[ch]:
                c.link((x, ch), (p, 0))

    return couple


def _group_link(c: RuleContext, full: str, w_full: tuple[str, int], part: str, w_part: tuple[str, int],
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


def _groups_index(c: NodeView) -> int:
    """Position of `groups` in a functional conv's args (F.conv*, F.conv_transpose*, aten.conv*: 6)."""
    return 8 if c.node.target is aten.convolution.default else 6


def _conv_operands(c: NodeView) -> tuple[str, str, str | None, int, bool]:
    if c.module is not None:
        m = c.module
        return c.inputs()[0], c.param("weight"), c.param("bias"), m.groups, bool(getattr(m, "transposed", False))
    x, w, b = c.tensor(c.arg(0, "input")), c.tensor(c.arg(1, "weight")), c.tensor(c.arg(2, "bias"))
    if c.node.target is aten.convolution.default:
        transposed = bool(c.arg(6))
    else:
        transposed = c.target_name().startswith("conv_transpose")
    return x, w, b, c.arg(_groups_index(c), "groups", 1), transposed


def conv(c: RuleContext) -> None:
    """Conv/ConvTranspose, module or functional, any groups."""
    x, w, b, groups, transposed = _conv_operands(c)
    if transposed:  # weight (Cin, Cout/g, *k)
        _group_link(c, x, (w, 0), c.out, (w, 1), groups)
    else:  # weight (Cout, Cin/g, *k)
        _group_link(c, c.out, (w, 0), x, (w, 1), groups)
    if b is not None:
        c.link((b, 0), (c.out, 1))


def _rewrite_conv(c: RewriteContext) -> None:
    x, w, _, _, transposed = _conv_operands(c)
    weight = c.value(w)
    n_in, n_out = c.new_shape(x)[1], c.new_shape(c.out)[1]
    groups = n_out // weight.shape[1] if transposed else n_in // weight.shape[1]
    if c.module is not None:
        c.module.in_channels, c.module.out_channels, c.module.groups = n_in, n_out, groups
    else:
        c.set_arg(_groups_index(c), "groups", groups)


def _conv_macs(c: NodeView) -> int:
    x, w, _, _, transposed = _conv_operands(c)
    weight = c.shape(w)
    per_out = math.prod(weight[1:])
    if transposed:  # every input element is scattered into Cout/g * k outputs
        return math.prod(c.shape(x)) * per_out
    return math.prod(c.shape(c.out)) * per_out


def linear(c: RuleContext) -> None:
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


def _rewrite_linear(c: RewriteContext) -> None:
    if c.module is not None:
        c.module.out_features, c.module.in_features = c.module.weight.shape


def _linear_macs(c: NodeView) -> int:
    x = c.inputs()[0]
    return math.prod(c.shape(c.out)) * c.shape(x)[-1]


def matmul(c: RuleContext) -> None:
    """a @ b over the last two dims, batch dims broadcast; the contracted dim couples a and b."""
    a, b = c.tensor(c.arg(0, "input")), c.tensor(c.arg(1, "other"))
    if c.ndim(a) < 2 or c.ndim(b) < 2:
        raise NotHandled("1-D matmul operands")
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


def _matmul_macs(c: NodeView) -> int:
    a = c.tensor(c.arg(0, "input"))
    return math.prod(c.shape(c.out)) * c.shape(a)[-1]


def group_norm(c: RuleContext) -> None:
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


def _rewrite_group_norm(c: RewriteContext) -> None:
    m = c.module
    per = m.num_channels // m.num_groups
    m.num_channels = c.new_shape(c.out)[1]
    m.num_groups = m.num_channels // per


def _rewrite_num_features(c: RewriteContext) -> None:
    if hasattr(c.module, "num_features"):
        c.module.num_features = c.new_shape(c.out)[1 if len(c.new_shape(c.out)) > 1 else 0]


def prelu(c: RuleContext) -> None:
    x = c.inputs()[0]
    w = c.param("weight")
    elementwise(c)
    if c.shape(w)[0] > 1:
        c.link((x, 1 if c.ndim(x) > 1 else 0), (w, 0))


def _rewrite_prelu(c: RewriteContext) -> None:
    c.module.num_parameters = c.module.weight.shape[0]


HIDDEN_REASON = "hidden size: set prune_hidden=True to prune it"


def _norm_operands(c: NodeView) -> tuple[str, int, list[str]]:
    """(input, number of normalised trailing dims, [weight, bias]) of LayerNorm / RMSNorm, any spelling."""
    if c.module is not None:
        shape = c.module.normalized_shape
        params = [c.param("weight"), c.param("bias")]
    else:
        shape = c.arg(1, "normalized_shape")
        params = [c.tensor(c.arg(2, "weight")), c.tensor(c.arg(3, "bias"))]
    return c.inputs()[0], len(shape) if isinstance(shape, (list, tuple)) else 1, [p for p in params if p]


def layer_norm(c: RuleContext) -> None:
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



def _mask_norm(c: MaskContext) -> None:
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



def _rewrite_layer_norm(c: RewriteContext) -> None:
    new = c.new_shape(c.out)[-1]
    if c.module is not None:
        c.module.normalized_shape = (*c.module.normalized_shape[:-1], new)
    else:
        shape = c.arg(1, "normalized_shape")
        c.set_arg(1, "normalized_shape", [*shape[:-1], new])


def embedding(c: RuleContext) -> None:
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


def _rewrite_embedding(c: RewriteContext) -> None:
    if c.module is not None:
        c.module.embedding_dim = c.module.weight.shape[1]


def _sdpa_operands(c: NodeView) -> tuple[str, str, str, str | None]:
    return (c.tensor(c.arg(0, "query")), c.tensor(c.arg(1, "key")), c.tensor(c.arg(2, "value")),
            c.tensor(c.arg(3, "attn_mask")))


def sdpa(c: RuleContext) -> None:
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


def sdpa_run_time_causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: Any = False,
                         scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """`F.scaled_dot_product_attention` whose `is_causal` is computed at run time (`seq_len > 1`, as Hugging Face
    writes it): the causal triangle is applied as a mask built from `is_causal` with tensor ops, the same
    attention for either value. The legacy ONNX exporter traces `is_causal` as a Tensor, which the op refuses."""
    allowed = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
    allowed = allowed | ~torch.as_tensor(is_causal, device=query.device)
    if attn_mask is None:
        mask = allowed
    elif attn_mask.dtype == torch.bool:
        mask = attn_mask & allowed
    else:
        mask = attn_mask.masked_fill(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(query, key, value, mask, dropout_p, False, scale=scale,
                                          enable_gqa=enable_gqa)


def _rewrite_sdpa(c: RewriteContext) -> None:
    q = _sdpa_operands(c)[0]
    if c.arg(6, "scale") is None and c.new_shape(q)[-1] != c.old_shape(q)[-1]:
        c.set_arg(6, "scale", 1 / math.sqrt(c.old_shape(q)[-1]))  # the dense head_dim's scale
    if isinstance(c.arg(5, "is_causal"), torch.fx.Node):
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        kwargs = {**dict(zip(names, c.node.args)), **c.node.kwargs}
        c.replace(sdpa_run_time_causal, (), kwargs)


def _sdpa_macs(c: NodeView) -> int:
    q, k, v, _ = _sdpa_operands(c)
    return math.prod(c.shape(q)[:-1]) * c.shape(k)[-2] * (c.shape(q)[-1] + c.shape(v)[-1])


def addmm(c: RuleContext) -> None:
    """addmm(bias, x, w) = bias + x @ w (Hugging Face Conv1D: w is (in, out))."""
    bias, x, w = c.tensor(c.arg(0)), c.tensor(c.arg(1)), c.tensor(c.arg(2))
    c.link((x, 1), (w, 0))
    c.link((w, 1), (c.out, 1))
    c.link((x, 0), (c.out, 0))
    if bias is not None:
        c.broadcast(c.out, [bias])


def _addmm_macs(c: NodeView) -> int:
    return math.prod(c.shape(c.out)) * c.shape(c.tensor(c.arg(1)))[1]



# ---------------------------------------------------------------------------------------------
# Rows: one per op, every spelling (module class, F./torch. function, Tensor method, ATen overload)
# ---------------------------------------------------------------------------------------------

register_rule([nn.Conv1d, nn.Conv2d, nn.Conv3d, F.conv1d, F.conv2d, F.conv3d, aten.conv1d.default, aten.conv2d.default,
               aten.conv3d.default, aten.convolution.default],
              Rule(conv, rewrite=_rewrite_conv, macs=_conv_macs, out_param=("weight", 0)))
register_rule([nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, F.conv_transpose1d, F.conv_transpose2d,
               F.conv_transpose3d, aten.conv_transpose1d.default, aten.conv_transpose2d.input,
               aten.conv_transpose3d.input],
              Rule(conv, rewrite=_rewrite_conv, macs=_conv_macs, out_param=("weight", 1)))
register_rule([nn.Linear, F.linear, aten.linear.default],
              Rule(linear, rewrite=_rewrite_linear, macs=_linear_macs, out_param=("weight", 0)))
register_rule([torch.addmm, "addmm", aten.addmm.default],
              Rule(addmm, macs=_addmm_macs, out_param=("weight", 1), weight_arg=2))
_matmul = Rule(matmul, macs=_matmul_macs)
register_rule([torch.matmul, operator.matmul, "matmul", aten.matmul.default], _matmul)
register_rule([torch.bmm, "bmm", aten.bmm.default], _matmul)
register_rule([torch.mm, "mm", aten.mm.default], _matmul)
# weight_arg 1 is the weight of aten.batch_norm / aten.instance_norm (F.batch_norm's arg 1, its running mean, lies
# in the same group)
register_rule([nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, F.batch_norm, aten.batch_norm.default],
              Rule(_per_channel_params("weight", "bias", "running_mean", "running_var"), rewrite=_rewrite_num_features,
                   out_param=("weight", 0)))
register_rule([nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, F.instance_norm, aten.instance_norm.default],
              Rule(_per_channel_params("weight", "bias", "running_mean", "running_var"), rewrite=_rewrite_num_features,
                   out_param=("weight", 0)))
register_rule(nn.GroupNorm, Rule(group_norm, rewrite=_rewrite_group_norm, out_param=("weight", 0)))
register_rule(nn.PReLU, Rule(prelu, rewrite=_rewrite_prelu))
_norm = Rule(layer_norm, rewrite=_rewrite_layer_norm, mask=_mask_norm)
register_rule([nn.LayerNorm, F.layer_norm, aten.layer_norm.default], _norm)
register_rule([nn.RMSNorm, F.rms_norm, aten.rms_norm.default], _norm)
register_rule([nn.Embedding, F.embedding, aten.embedding.default], Rule(embedding, rewrite=_rewrite_embedding))
register_rule([F.scaled_dot_product_attention, aten.scaled_dot_product_attention.default, sdpa_run_time_causal],
              Rule(sdpa, rewrite=_rewrite_sdpa, macs=_sdpa_macs))
