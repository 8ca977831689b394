"""Rows of the ops that keep every element where it is: activations, arithmetic, comparisons, dropout and
per-sample drop-path, casts and copies, size reads, and tensors created from sizes."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .couplings import created, elementwise, first_input, metadata, opaque
from .table import Rule, register_rule

__all__ = ["ELEMENTWISE", "PER_SAMPLE"]

aten = torch.ops.aten

#: One row per element-wise op: every spelling of it (module, function, Tensor method, ATen overloads).
_ELEMENTWISE_ROWS: list[list[Any]] = [
    # activations
    [nn.ReLU, F.relu, F.relu_, torch.relu, torch.relu_, "relu", "relu_", aten.relu.default, aten.relu_.default],
    [nn.ReLU6, F.relu6],  # aten: hardtanh
    [nn.LeakyReLU, F.leaky_relu, aten.leaky_relu.default],
    [nn.GELU, F.gelu, aten.gelu.default],
    [nn.SiLU, F.silu, aten.silu.default, aten.silu_.default],
    [nn.Sigmoid, F.sigmoid, torch.sigmoid, "sigmoid", "sigmoid_", aten.sigmoid.default],
    [nn.Tanh, F.tanh, torch.tanh, "tanh", "tanh_", aten.tanh.default],
    [nn.Hardswish, F.hardswish, aten.hardswish.default, aten.hardswish_.default],
    [nn.Hardsigmoid, F.hardsigmoid, aten.hardsigmoid.default],
    [nn.Hardtanh, F.hardtanh, aten.hardtanh.default, aten.hardtanh_.default],
    [nn.ELU, F.elu, aten.elu.default],
    [nn.SELU, F.selu],
    [nn.CELU, F.celu],
    [nn.Softplus, F.softplus],
    [nn.Mish, F.mish],
    [nn.Softsign, F.softsign],
    [nn.Tanhshrink],
    [nn.LogSigmoid, F.logsigmoid],
    [nn.Identity],
    # dropout: element-wise in train mode too (each element is kept or zeroed on its own)
    [nn.Dropout, F.dropout, aten.dropout.default],
    [nn.Dropout1d, F.dropout1d],
    [nn.Dropout2d, F.dropout2d],
    [nn.Dropout3d, F.dropout3d],
    [nn.AlphaDropout, F.alpha_dropout],
    # arithmetic
    [torch.add, operator.add, operator.iadd, "add", "add_", aten.add.Tensor, aten.add_.Tensor, aten.add.Scalar],
    [torch.sub, operator.sub, operator.isub, "sub", "sub_", aten.sub.Tensor, aten.sub_.Tensor, aten.sub.Scalar],
    [torch.mul, operator.mul, operator.imul, "mul", "mul_", aten.mul.Tensor, aten.mul_.Tensor, aten.mul.Scalar],
    [torch.div, torch.true_divide, operator.truediv, operator.itruediv, "div", "div_", "true_divide",
     aten.div.Tensor, aten.div_.Tensor, aten.div.Scalar, aten.div_.Scalar],
    [torch.neg, operator.neg, "neg", aten.neg.default],
    [torch.pow, operator.pow, "pow", aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor],
    [torch.exp, "exp", aten.exp.default],
    [torch.abs, "abs", aten.abs.default],
    [torch.sqrt, "sqrt", aten.sqrt.default],
    [torch.rsqrt, "rsqrt", aten.rsqrt.default],
    [torch.square, "square", aten.square.default],
    [torch.erf, "erf", aten.erf.default],
    [torch.sin, "sin", aten.sin.default],
    [torch.cos, "cos", aten.cos.default],
    [torch.floor, "floor", "floor_", aten.floor.default],
    [torch.clamp, torch.clip, "clamp", "clamp_", "clip", aten.clamp.default],
    [torch.maximum, "maximum", aten.maximum.default],
    [torch.minimum, "minimum", aten.minimum.default],
    [torch.where, aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf],
    ["masked_fill", aten.masked_fill.Scalar, aten.masked_fill.Tensor],
    # comparisons and logic (attention masks)
    [aten.ge.Scalar, aten.ge.Tensor],
    [aten.gt.Scalar, aten.gt.Tensor],
    [aten.lt.Scalar, aten.lt.Tensor],
    [aten.le.Scalar, aten.le.Tensor],
    [aten.eq.Scalar, aten.eq.Tensor],
    [aten.ne.Scalar, aten.ne.Tensor],
    [aten.logical_not.default],
    [aten.logical_and.default],
    [aten.logical_or.default],
    [aten.bitwise_not.default],
    [aten.bitwise_and.Tensor, aten.__and__.Tensor],
    [aten.bitwise_or.Tensor, aten.__or__.Tensor],
    # random draws of a tensor's shape (the per-sample mask of drop-path under tracing)
    [torch.bernoulli, "bernoulli", "bernoulli_", aten.bernoulli.default, aten.bernoulli.p, aten.bernoulli_.float,
     aten.bernoulli_.Tensor],
    ["uniform_", aten.uniform_.default],
]

#: Per-sample ops of libraries fxprune does not import, by qualified name: each sample is scaled (dropped or kept)
#: as a whole, so channels pass through. torchvision wraps stochastic_depth with torch.fx.wrap (one node); timm's
#: drop_path is traced through (its ops have rows above) unless a tracer keeps it whole.
PER_SAMPLE: list[str] = [
    "torchvision.ops.stochastic_depth.stochastic_depth",
    "torchvision.ops.stochastic_depth.StochasticDepth",
    "timm.layers.drop.drop_path",
    "timm.layers.drop.DropPath",
    "timm.models.layers.drop.drop_path",
    "timm.models.layers.drop.DropPath",
]

_elementwise = Rule(elementwise)
for _row in _ELEMENTWISE_ROWS:
    register_rule(_row, _elementwise)
register_rule(PER_SAMPLE, _elementwise)

#: Every spelling registered as element-wise (a public list: `register_rule(ELEMENTWISE, ...)` reads every one).
ELEMENTWISE: list[Any] = [k for row in _ELEMENTWISE_ROWS for k in row] + PER_SAMPLE

_same = Rule(first_input)
register_rule(["contiguous", aten.contiguous.default], _same)
register_rule([torch.clone, "clone", aten.clone.default], _same)
register_rule([torch.detach, "detach", aten.detach.default, aten.alias.default], _same)
register_rule(["to", "float", "half", "double", aten.to.dtype, aten.to.dtype_layout, aten.to.device,
               aten._to_copy.default], _same)
register_rule(["type_as", aten.type_as.default], _same)
register_rule(["requires_grad_"], _same)
register_rule([aten.lift_fresh_copy.default], _same)
register_rule([torch.zeros_like, aten.zeros_like.default], _same)
register_rule([torch.ones_like, aten.ones_like.default], _same)
register_rule([torch.full_like, aten.full_like.default], _same)
register_rule([getattr, "size", "dim", "numel", aten.sym_size.int], Rule(metadata))
register_rule(aten._assert_tensor_metadata.default, Rule(metadata))
# the input-shape guards of an ExportedProgram.module() read sizes only
register_rule("torch.export._unlift.GuardsFn", Rule(metadata))
_created = Rule(created)
register_rule([torch.arange, aten.arange.default, aten.arange.start, aten.arange.start_step], _created)
register_rule([torch.zeros, "new_zeros", aten.zeros.default, aten.new_zeros.default], _created)
register_rule([torch.ones, "new_ones", aten.ones.default, aten.new_ones.default], _created)
register_rule([torch.full, "new_full", aten.full.default, aten.new_full.default], _created)
register_rule([torch.empty, "new_empty", aten.empty.memory_format, aten.new_empty.default], _created)
register_rule([torch.rand, torch.randn, aten.rand.default, aten.randn.default], _created)
register_rule(aten.scalar_tensor.default, _created)
_opaque = Rule(opaque)
register_rule([torch.gather, "gather", aten.gather.default], _opaque)
register_rule([torch.diff, aten.diff.default], _opaque)
register_rule(["repeat", aten.repeat.default], _opaque)
register_rule(torch.ops.higher_order.wrap_with_set_grad_enabled, _opaque)
