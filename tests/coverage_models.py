"""Fixture models for issue 15's coverage classes, written here because torchvision and timm do not run in
this environment. Each model takes `plain=True` to replace the op under test by a plain element-wise op (or a
plain slice), so a test can measure what the op costs: the MACs removed must match.

- `stochastic_depth` / `StochasticDepth` reproduce torchvision.ops.stochastic_depth as torchvision defines
  them (a module-level function registered with `torch.fx.wrap`, so fx keeps it as one node), and carry
  torchvision's `__module__` so the rule table sees the function torchvision users trace.
- `drop_path` / `DropPath` reproduce timm.layers.drop (traced through by fx; identity in eval mode).
- `EfficientNetLike`: MBConv blocks (expand, depthwise, squeeze-excite, project) with stochastic depth.
- `ConvNeXtLike`: ConvNeXt blocks (depthwise 7x7, channels-last LayerNorm, MLP, layer scale) with
  stochastic depth or drop-path.
- `LeViTLike`: attention with a relative-position bias gathered as `biases[:, idxs]` and a subsampling
  `x.view(B, H, W, C)[:, ::2, ::2]`, as timm's LeViT writes them.
- `TimmViTLike`: timm's VisionTransformer in small (`qkv(x).reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1,
  4).unbind(0)`, `F.scaled_dot_product_attention`); `causal=True` computes `is_causal` from the sequence length at
  run time, as Hugging Face's sdpa attention does (the legacy ONNX exporter then sees it as a Tensor).
- `Res2NetLike`: timm's Res2Net bottleneck (`Bottle2neck`): conv1's output split into `scale` pieces, each
  piece's 3x3 conv fed the previous one's output plus its own piece, the last piece passed through (or avg-pooled in
  a stage's first block), all concatenated into conv3.
- `VideoResNetLike`: torchvision's R3D / R(2+1)D video ResNets in small: `Conv3DSimple(nn.Conv3d)` with its own
  `__init__` and `get_downsample_stride` staticmethod, `Conv2Plus1D(nn.Sequential)` (spatial 1x3x3 conv, BN, ReLU,
  temporal 3x1x1 conv), and a 'same'-padded `nn.Conv3d` subclass; `plain=True` builds the same net of plain
  `nn.Conv3d`s.
- `TorchvisionViTLike`: torchvision's VisionTransformer in small (conv patch embedding, class token, EncoderBlocks
  calling `nn.MultiheadAttention(x, x, x, need_weights=False)`); `plain=True` writes the same attention by hand
  (one qkv Linear, heads by view, `F.scaled_dot_product_attention`, out Linear) with the same weights.
- `ArgsWrapper` / `KwargsWrapper`: `forward(self, *args)` / `forward(self, *args, **kwargs)` adapters around a
  model that returns a dict or a dataclass (`SegmentationLike` returns an `OrderedDict` as torchvision's
  segmentation models do), the usual way the zoo reaches segmentation and Hugging Face models.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["stochastic_depth", "StochasticDepth", "drop_path", "DropPath", "EfficientNetLike", "ConvNeXtLike",
           "LeViTLike", "SegmentationLike", "TimmViTLike", "Res2NetLike", "ArgsWrapper", "KwargsWrapper",
           "TwoInputArgsWrapper", "VideoResNetLike", "Conv3DSimple", "Conv2Plus1D", "Conv3DSame", "TorchvisionViTLike"]


def stochastic_depth(input: Tensor, p: float, mode: str, training: bool = True) -> Tensor:  # noqa: A002
    """torchvision.ops.stochastic_depth: drop whole samples ("row") or the whole batch with probability p."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ["batch", "row"]:
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input

    survival_rate = 1.0 - p
    if mode == "row":  # noqa: SIM108 (torchvision's code, verbatim)
        size = [input.shape[0]] + [1] * (input.ndim - 1)
    else:
        size = [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


torch.fx.wrap("stochastic_depth")
# The function torchvision users trace is torchvision's: same module and name, so the same rule-table key.
stochastic_depth.__module__ = "torchvision.ops.stochastic_depth"


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return stochastic_depth(input, self.p, self.mode, self.training)


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True) -> Tensor:
    """timm.layers.drop.drop_path: drop whole samples; a per-sample (N, 1, 1, 1) mask in train mode."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    """timm.layers.drop.DropPath."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


class _Plain(nn.Module):
    """The plain element-wise stand-in: x * 1 (a node with a rule, same MACs)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 1.0


def _drop(p: float, kind: str, plain: bool) -> nn.Module:
    if plain:
        return _Plain()
    return StochasticDepth(p, "row") if kind == "stochastic_depth" else DropPath(p)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)


class _SqueezeExcite(nn.Module):
    def __init__(self, ch: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(ch, squeeze, 1), nn.Conv2d(squeeze, ch, 1)
        self.act, self.gate = nn.SiLU(), nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class _MBConv(nn.Module):
    """torchvision's MBConv: expand 1x1, depthwise kxk, squeeze-excite, project 1x1, stochastic depth, residual."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int, p: float, plain: bool) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            _conv_bn(cin, mid, 1), _conv_bn(mid, mid, 3, stride, groups=mid), _SqueezeExcite(mid, max(1, cin // 4)),
            _conv_bn(mid, cout, 1, act=False))
        self.stochastic_depth = _drop(p, "stochastic_depth", plain)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res:
            out = self.stochastic_depth(out)
            out = out + x
        return out


class EfficientNetLike(nn.Module):
    """A small EfficientNet: stem, MBConv stages with stochastic depth on every residual block, head."""

    def __init__(self, plain: bool = False, num_classes: int = 10) -> None:
        super().__init__()
        stages = [(16, 16, 1, 1, 2), (16, 24, 4, 2, 2), (24, 40, 4, 2, 2)]  # cin, cout, expand, stride, repeats
        blocks: list[nn.Module] = []
        n = sum(s[-1] for s in stages)
        for cin, cout, expand, stride, repeats in stages:
            for r in range(repeats):
                blocks.append(_MBConv(cin if r == 0 else cout, cout, expand, stride if r == 0 else 1,
                                      0.2 * len(blocks) / n, plain))
        self.stem = _conv_bn(3, 16, 3, 2)
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(40, 64, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.head(self.blocks(self.stem(x)))), 1))


class _Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


class _CNBlock(nn.Module):
    """torchvision's CNBlock: layer scale times the block, stochastic depth (or timm's drop-path), residual."""

    def __init__(self, dim: int, p: float, kind: str, plain: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim), _Permute([0, 2, 3, 1]), nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), _Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 0.5)
        self.stochastic_depth = _drop(p, kind, plain)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        result = self.layer_scale * self.block(input)
        result = self.stochastic_depth(result)
        result += input
        return result


class ConvNeXtLike(nn.Module):
    """A small ConvNeXt: patchify stem, two stages of CNBlocks with a strided-conv downsample, pooled head."""

    def __init__(self, kind: str = "stochastic_depth", plain: bool = False, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.stage1 = nn.Sequential(*(_CNBlock(16, 0.1 * i, kind, plain) for i in range(2)))
        self.down = nn.Conv2d(16, 32, 2, 2)
        self.stage2 = nn.Sequential(*(_CNBlock(32, 0.1 * (2 + i), kind, plain) for i in range(2)))
        self.norm = nn.LayerNorm(32)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.classifier(self.norm(x.mean((2, 3))))


class _LinearBN(nn.Sequential):
    """timm LeViT's Linear + BatchNorm1d over tokens (B, N, C)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.c, self.bn = nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.c(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


def _bias_idxs(resolution: int, stride: int = 1) -> Tensor:
    """timm LeViT's relative-position index: |dy| * resolution + |dx| for every (query, key) pair."""
    q_points = list(itertools.product(range(0, resolution, stride), range(0, resolution, stride)))
    k_points = list(itertools.product(range(resolution), range(resolution)))
    return torch.tensor([[abs(p[0] - k[0]) * resolution + abs(p[1] - k[1]) for k in k_points] for p in q_points])


class _Attention(nn.Module):
    """LeViT attention: per-head q, k, v from one projection; scores plus a bias table gathered by index."""

    def __init__(self, dim: int, key_dim: int, heads: int, resolution: int, plain: bool) -> None:
        super().__init__()
        self.heads, self.key_dim, self.val_dim, self.plain = heads, key_dim, 2 * key_dim, plain
        self.scale = key_dim ** -0.5
        self.qkv = _LinearBN(dim, heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Sequential(nn.Hardswish(), _LinearBN(heads * self.val_dim, dim))
        n = resolution ** 2
        self.attention_biases = nn.Parameter(torch.randn(heads, n) * 0.1)
        self.register_buffer("attention_bias_idxs", _bias_idxs(resolution), persistent=False)
        self.dense_biases = nn.Parameter(torch.randn(heads, n, n) * 0.1)  # the plain stand-in: same shape

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, self.heads, -1).split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3)
        biases = self.dense_biases if self.plain else self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k * self.scale + biases).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.heads * self.val_dim)
        return self.proj(x)


class _Subsample(nn.Module):
    """timm LeViT's Subsample: tokens back to a grid, every other row and column."""

    def __init__(self, stride: int, resolution: int, plain: bool) -> None:
        super().__init__()
        self.stride, self.resolution, self.plain = stride, resolution, plain

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        grid = x.view(B, self.resolution, self.resolution, C)
        r = (self.resolution + self.stride - 1) // self.stride
        x = grid[:, :r, :r] if self.plain else grid[:, ::self.stride, ::self.stride]
        return x.reshape(B, -1, C)


class _Residual(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return x + self.m(x)


class _MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(_LinearBN(dim, hidden), nn.Hardswish(), _LinearBN(hidden, dim))


class LeViTLike(nn.Module):
    """A small LeViT: conv stem to 8x8 tokens, an attention + MLP stage, a subsampling step with a wider MLP,
    a second stage at 4x4, mean-pooled head."""

    def __init__(self, plain: bool = False, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.Hardswish(), nn.Conv2d(16, 32, 3, 2, 1))
        self.stage1 = nn.Sequential(_Residual(_Attention(32, 8, 4, 8, plain)), _Residual(_MLP(32, 64)))
        self.subsample = _Subsample(2, 8, plain)
        self.expand = _MLP(32, 64)
        self.stage2 = nn.Sequential(_Residual(_Attention(32, 8, 4, 4, plain)), _Residual(_MLP(32, 64)))
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = self.stage2(self.expand(self.subsample(self.stage1(x))))
        return self.head(x.mean(1))


class SegmentationLike(nn.Module):
    """torchvision's segmentation models in small: a backbone, a classifier head, and an auxiliary head, returned
    as `OrderedDict(out=..., aux=...)`."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.backbone = nn.Sequential(_conv_bn(3, 16, 3, 2), _conv_bn(16, 32, 3), _conv_bn(32, 32, 3))
        self.classifier = nn.Sequential(_conv_bn(32, 32, 3), nn.Conv2d(32, num_classes, 1))
        self.aux = nn.Sequential(_conv_bn(32, 16, 3), nn.Conv2d(16, num_classes, 1))

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = nn.functional.interpolate(self.classifier(features), size=size, mode="bilinear", align_corners=False)
        aux = nn.functional.interpolate(self.aux(features), size=size, mode="bilinear", align_corners=False)
        return OrderedDict(out=out, aux=aux)


class ArgsWrapper(nn.Module):
    """`forward(self, *args)`: the model's `"out"` entry, or the `last_hidden_state` of a Hugging Face output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> Tensor:
        out = self.model(*args)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out["out"]


class KwargsWrapper(ArgsWrapper):
    """`forward(self, *args, **kwargs)`."""

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        out = self.model(*args, **kwargs)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out["out"]


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = _conv_bn(3, 16, 3), _conv_bn(3, 16, 3)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"out": self.head(self.a(x) + self.b(y))}


class TwoInputArgsWrapper(nn.Module):
    """`forward(self, x, *rest)` around a two-input model: one named parameter, one input in `*rest`."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _TwoInputs()

    def forward(self, x: Tensor, *rest: Tensor) -> Tensor:
        return self.model(x, *rest)["out"]


class _TimmAttention(nn.Module):
    """timm.models.vision_transformer.Attention (fused path)."""

    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.causal = heads, dim // heads, causal
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0,
            is_causal=self.causal and q.shape[-2] > 1)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class _TimmBlock(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), _TimmAttention(dim, heads, causal)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmViTLike(nn.Module):
    """A small timm ViT: conv patch embedding, class token, position embedding, two blocks, head on the class
    token. 16x16 images, 4x4 patches, 4 heads of 8."""

    def __init__(self, causal: bool = False, num_classes: int = 10, dim: int = 32) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(*(_TimmBlock(dim, 4, causal) for _ in range(2)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class _Bottle2neck(nn.Module):
    """timm.models.res2net.Bottle2neck (cardinality 1, no attention layer)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 26, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.is_first = stride > 1 or downsample is not None
        self.num_scales = max(1, scale - 1)
        width = int(planes * base_width / 64.0)
        self.width = width
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride, 1, bias=False) for _ in range(self.num_scales))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(self.num_scales))
        self.pool = nn.AvgPool2d(3, stride, 1) if self.is_first else None
        self.conv3 = nn.Conv2d(width * scale, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        spo = []
        sp = spx[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = spx[i] if i == 0 or self.is_first else sp + spx[i]
            sp = self.relu(bn(conv(sp)))
            spo.append(sp)
        if self.scale > 1:
            spo.append(self.pool(spx[-1]) if self.pool is not None else spx[-1])
        out = self.bn3(self.conv3(torch.cat(spo, 1)))
        if self.downsample is not None:
            shortcut = self.downsample(x)
        return self.relu(out + shortcut)


class Res2NetLike(nn.Module):
    """A small Res2Net-50-style net: stem, two stages of two Bottle2necks (the first of each strided or
    projected, so it pools its last piece), pooled head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers: list[nn.Module] = []
        inplanes = 16
        for planes, stride in ((16, 1), (32, 2)):
            down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            layers += [_Bottle2neck(inplanes, planes, stride, down), _Bottle2neck(planes * 4, planes)]
            inplanes = planes * 4
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class Conv3DSimple(nn.Conv3d):
    """torchvision.models.video.resnet.Conv3DSimple."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride, padding=padding, bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv2Plus1D(nn.Sequential):
    """torchvision.models.video.resnet.Conv2Plus1D: a 1x3x3 spatial conv into midplanes, then a 3x1x1 temporal one."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1, padding: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, (1, 3, 3), (1, stride, stride), (0, padding, padding), bias=False),
            nn.BatchNorm3d(midplanes), nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, (3, 1, 1), (stride, 1, 1), (padding, 0, 0), bias=False))

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv3DSame(nn.Conv3d):
    """A conv with 'same' padding computed in forward (timm's Conv2dSame pattern, in 3-D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, 3, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.conv3d(nn.functional.pad(x, (1, 1, 1, 1, 1, 1)), self.weight, self.bias, self.stride)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


def _plain_conv3d(in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1,
                  padding: int = 1) -> nn.Module:
    """Conv3DSimple's conv as a plain nn.Conv3d (a leaf module to fx)."""
    return nn.Conv3d(in_planes, out_planes, 3, stride, padding, bias=False)


_plain_conv3d.get_downsample_stride = Conv3DSimple.get_downsample_stride  # type: ignore[attr-defined]


def _plain_2plus1d(in_planes: int, out_planes: int, midplanes: int, stride: int = 1, padding: int = 1) -> nn.Module:
    """Conv2Plus1D's layers in a plain nn.Sequential."""
    return nn.Sequential(*Conv2Plus1D(in_planes, out_planes, midplanes, stride, padding))


_plain_2plus1d.get_downsample_stride = Conv2Plus1D.get_downsample_stride  # type: ignore[attr-defined]


class _VideoBasicBlock(nn.Module):
    """torchvision.models.video.resnet.BasicBlock."""

    def __init__(self, inplanes: int, planes: int, builder: type, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
        self.conv1 = nn.Sequential(builder(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(builder(planes, planes, midplanes), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class VideoResNetLike(nn.Module):
    """A small torchvision VideoResNet: stem, two stages of two BasicBlocks built with `builder`, pooled head.

    builder: "r3d" (Conv3DSimple), "r2plus1d" (Conv2Plus1D), "same" (Conv3DSame); `plain=True` builds the same
    convs as plain `nn.Conv3d`s (a leaf module fx does not trace into) in a plain `nn.Sequential`."""

    def __init__(self, builder: str = "r3d", plain: bool = False, num_classes: int = 10) -> None:
        super().__init__()
        conv = ({"r3d": _plain_conv3d, "r2plus1d": _plain_2plus1d, "same": _plain_conv3d} if plain else
                {"r3d": Conv3DSimple, "r2plus1d": Conv2Plus1D, "same": Conv3DSame})[builder]
        self.stem = nn.Sequential(nn.Conv3d(3, 16, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False), nn.BatchNorm3d(16),
                                  nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        inplanes = 16
        for planes, stride in ((16, 1), (32, 2)):
            down = None
            if stride != 1 or inplanes != planes:
                ds = conv.get_downsample_stride(stride)
                down = nn.Sequential(nn.Conv3d(inplanes, planes, 1, ds, bias=False), nn.BatchNorm3d(planes))
            blocks += [_VideoBasicBlock(inplanes, planes, conv, stride, down), _VideoBasicBlock(planes, planes, conv)]
            inplanes = planes
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


class _HandWrittenMHA(nn.Module):
    """nn.MultiheadAttention(batch_first=True) written with a qkv Linear, a view into heads and SDPA."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.out_proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor, *_: Any, **__: Any) -> tuple[Tensor, None]:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1)
        return self.out_proj(y), None


class _EncoderBlock(nn.Module):
    """torchvision.models.vision_transformer.EncoderBlock."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, plain: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = _HandWrittenMHA(dim, heads) if plain else nn.MultiheadAttention(
            dim, heads, dropout=0.0, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp_dim, dim),
                                 nn.Dropout(0.0))

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x) + input
        return x + self.mlp(self.ln_2(x))


class TorchvisionViTLike(nn.Module):
    """A small torchvision ViT: 16x16 images, 4x4 patches, class token, two EncoderBlocks of 4 heads, head on the
    class token. `plain=True`: the same network and weights with the attention written by hand."""

    def __init__(self, plain: bool = False, num_classes: int = 10, dim: int = 32) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(3, dim, 4, 4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.layers = nn.Sequential(*(_EncoderBlock(dim, 4, 2 * dim, plain) for _ in range(2)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.ln(self.layers(x))[:, 0])

    def load_mha_weights(self, other: TorchvisionViTLike) -> TorchvisionViTLike:
        """Copy `other`'s weights (nn.MultiheadAttention's in_proj/out_proj into the hand-written qkv/out_proj)."""
        state = {k.replace("in_proj_weight", "qkv.weight").replace("in_proj_bias", "qkv.bias"): v
                 for k, v in other.state_dict().items()}
        self.load_state_dict(state)
        return self
